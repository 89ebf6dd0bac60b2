"""Packed training (issue 19): K trainings of one architecture as one model, so each kernel gets K times the work.

One small CNN fills a sliver of a GPU (Kachuee 1.14 ms a step on an H200) and trainings side by side in
processes add nothing; K members of one class (folds, seeds, static sets: same class and settings, other
data) stacked into one set of [K, ...] parameters and run through one `vmap`ed forward do. Generic over
plugins (`torch.func.stack_module_state` + `functional_call` + `vmap`): a third-party model packs without
code. BatchNorm keeps per-member running statistics (stacked buffers, updated in place under vmap);
dropout draws per member (`randomness="different"`).

What a member is owed, as if it trained alone: its own beats and order (the caller's batches, one per
member), its own Adam state (Adam is elementwise, so one Adam over the stacked parameters is K Adams), and
when it stops early, no change at all: `step` masks the update, not only the gradient (Adam's momentum
would move a parameter whose gradient is zero), and puts back its optimiser state and BatchNorm
statistics. `member_state(i)` is a plain state_dict, loadable by the plain model, as a separate training's.

This module is the step; the plan does not pack trainings yet (the engine's issue 19 work continues).
A model class packs unless it brings its own step or optimisers, or sets `packable = False`;
`why_not_packed` says why in one line.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

__all__ = ["Pack", "why_not_packed"]


def why_not_packed(model_cls: type) -> str | None:
    """Why a model class trains alone (one line), or None if its members can be packed."""
    if getattr(model_cls, "packable", True) is False:
        return f"{model_cls.__name__} opts out (packable = False)"
    for hook in ("training_step", "configure_optimizers"):
        if hasattr(model_cls, hook):
            return f"{model_cls.__name__} brings its own {hook}, which the packed step cannot vmap"
    return None


class Pack:
    """K members' parameters and buffers stacked along a first axis of K; `pack(x)` is every member's forward.

    `x` is [K, batch, 1, window] (member k's batch at x[k]); the result [K, batch, classes]. Members must be
    of one class built alike (same shapes); their weights may differ.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        if not members:
            raise ValueError("a pack needs at least one member")
        self.k = len(members)
        self.base = copy.deepcopy(members[0]).to("meta")  # the architecture only: weights live in the stacks
        params, self.buffers = stack_module_state(members)
        self.params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
        self.lr = getattr(members[0], "lr", 1e-3)
        self.betas = getattr(members[0], "betas", (0.9, 0.999))

    def train(self, mode: bool = True) -> "Pack":
        self.base.train(mode)
        return self

    def eval(self) -> "Pack":
        return self.train(False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        def one(p: dict, b: dict, xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xb,))
        return vmap(one, randomness="different")(self.params, self.buffers, x)

    def optimizer(self) -> torch.optim.Optimizer:
        """Adam with the members' own settings (the model's `lr` and `betas`, as a separate training's)."""
        return torch.optim.Adam(self.params.values(), lr=self.lr, betas=self.betas)

    def step(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
             active: torch.Tensor | None = None) -> torch.Tensor:
        """One cross-entropy step of every member on its own batch; returns the K batch losses, detached.

        The summed loss gives each member the gradient of its own mean loss. A member with `active` False
        (stopped early) leaves the step exactly as it entered it: parameters, Adam state, BatchNorm statistics.
        """
        frozen = None if active is None or bool(active.all()) else ~active.to(torch.bool)
        kept = self._snapshot(frozen, optimizer) if frozen is not None else None
        logits = self(x)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(self.k, -1).mean(1)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        if kept is not None:
            self._restore(frozen, optimizer, kept)
        return losses.detach()

    def _snapshot(self, frozen: torch.Tensor, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        state = {name: {k: v[frozen].clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v) and v.ndim}
                 for name, p in self.params.items() if p in optimizer.state}
        return {"params": {n: p.detach()[frozen].clone() for n, p in self.params.items()},
                "buffers": {n: b[frozen].clone() for n, b in self.buffers.items()}, "adam": state}

    @torch.no_grad()
    def _restore(self, frozen: torch.Tensor, optimizer: torch.optim.Optimizer, kept: dict[str, Any]) -> None:
        for n, p in self.params.items():
            p[frozen] = kept["params"][n]
            for k, v in kept["adam"].get(n, {}).items():
                optimizer.state[p][k][frozen] = v
        for n, b in self.buffers.items():
            b[frozen] = kept["buffers"][n]

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's state_dict, as the plain model's `state_dict()` names it (loadable with `load_state_dict`)."""
        state = {n: p.detach()[i].clone() for n, p in self.params.items()}
        state.update({n: b[i].clone() for n, b in self.buffers.items()})
        return state
