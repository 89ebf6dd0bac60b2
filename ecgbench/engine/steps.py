"""What one training step is, for every model: its optimisers, its step, its batch.

A model brings its own optimisers (`configure_optimizers`) or trains with Adam at its paper's `lr` and `betas`;
its step is its own whole `training_step`, or `phased_step` over its `phase_loss` (the losses of a custom step,
which `engine.pack` can also run packed), or the standard cross-entropy `classifier_step`; its batch is its
paper's (`batch_size`) or the run's. `train.fit` and `pack_train.fit_packed` both read them here.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["default_optimizers", "classifier_step", "phased_step", "training_hooks", "batch_of"]


def default_optimizers(model: nn.Module) -> list[torch.optim.Optimizer]:
    """Adam with the model's own paper's settings (class attributes `lr`, `betas`)."""
    return [torch.optim.Adam(model.parameters(), lr=getattr(model, "lr", 1e-3), betas=getattr(model, "betas", (0.9, 0.999)))]


def classifier_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacked: torch.Tensor,
                    optimizers: list[torch.optim.Optimizer]) -> torch.Tensor:
    """The standard step for a CNN: cross-entropy on clean and attacked beats alike; the loss, detached, on the device."""
    opt = optimizers[0]
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.detach()


def phased_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacked: torch.Tensor,
                optimizers: list[torch.optim.Optimizer]) -> torch.Tensor:
    """The step of a model that states its losses (`phase_loss`): optimiser i steps on the loss of phase i, in order,
    each phase computed from the weights the phases before it left (a GAN's D step, then G's on the new D). Each
    phase's gradient reaches only its own optimiser's parameters. Returns the summed phase losses, detached."""
    carry: dict[str, Any] = {}
    total = None
    for phase, opt in enumerate(optimizers):
        loss, carry = model.phase_loss(phase, x, y, attacked, carry)
        params = [p for g in opt.param_groups for p in g["params"]]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None, "a model with phase_loss needs at least one optimiser"
    return total


def training_hooks(model: nn.Module) -> tuple[list[torch.optim.Optimizer], Callable[..., torch.Tensor | float]]:
    """The model's optimisers and step: its own `configure_optimizers`, else Adam; its own `training_step`, else
    `phased_step` over its `phase_loss`, else `classifier_step`.

    A step is called as `step(x, y, attacked, optimizers)` and returns the batch loss, a tensor
    (read once per epoch) or a float (which costs a host sync per step on a GPU).
    """
    optimizers = model.configure_optimizers() if hasattr(model, "configure_optimizers") else default_optimizers(model)
    if hasattr(model, "training_step"):
        return optimizers, model.training_step
    return optimizers, partial(phased_step if hasattr(model, "phase_loss") else classifier_step, model)


def batch_of(model_cls: type, batch_size: int) -> int:
    """The batch a model trains on: its own paper's (class attribute `batch_size`, e.g. Acharya's 10), else the run's."""
    return int(getattr(model_cls, "batch_size", None) or batch_size)
