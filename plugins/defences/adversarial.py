"""Adversarial training, the standard defence every robustness paper compares against, for any registered model.

- `pgd-at`: Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks" (ICLR):
  each step trains on PGD adversarial beats only (random start in the ball, signed steps, projection).
- `trades`: Zhang et al. 2019, "Theoretically principled trade-off between robustness and accuracy" (ICML):
  cross-entropy on clean beats plus beta x KL(f(x_adv) || f(x)), x_adv maximising that KL from x + 0.001 N(0, 1).

Our choices, stated: eps 0.01 on the [0, 1] beat scale (the board's budget, ECG-ATK-GAN paper 2.3), step
eps / 4 (Madry's CIFAR ratio, 2/255 at 8/255), 7 steps for PGD-AT (Madry's CIFAR setting) and 10 for TRADES
(its official code), beta 6 (TRADES' CIFAR setting). The adversarial beats are made with the model in eval
mode (TRADES' official code does so), then the model trains in train mode; beats are clipped to [0, 1]
(every registered dataset's value range). Random starts draw from torch's generator, which the harness
seeds per fold and saves in a resumable training's state. Checked against ART's trainers in
tests/test_defences.py.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ecgbench.contracts import Defence

__all__ = ["PGDAT", "TRADES", "project"]

LOW, HIGH = 0.0, 1.0  # the beats' value range


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the L-inf ball of radius eps around x, and into the value range."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(LOW, HIGH)


class PGDAT(Defence):
    """Madry et al. 2018: minimise the cross-entropy on PGD adversarial beats."""

    name = "pgd-at"
    defaults = {"eps": 0.01, "eps_step": 0.0025, "steps": 7}

    def adversarial(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps, step = float(self.params["eps"]), float(self.params["eps_step"])
        x_adv = project(x + (torch.rand_like(x) * 2 - 1) * eps, x, eps)
        with torch.enable_grad():
            for _ in range(int(self.params["steps"])):
                x_adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
                x_adv = project(x_adv.detach() + step * grad.sign(), x, eps)
        return x_adv.detach()

    def step(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizers: list) -> Any:
        model.eval()
        x_adv = self.adversarial(model, x, y)
        model.train()
        opt = optimizers[0]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        opt.step()
        return loss.detach()


class TRADES(Defence):
    """Zhang et al. 2019: cross-entropy on clean beats plus beta x KL between adversarial and clean outputs."""

    name = "trades"
    defaults = {"eps": 0.01, "eps_step": 0.0025, "steps": 10, "beta": 6.0}

    def adversarial(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        eps, step = float(self.params["eps"]), float(self.params["eps_step"])
        with torch.no_grad():
            clean = F.softmax(model(x), 1)
        x_adv = project(x + 0.001 * torch.randn_like(x), x, eps)
        with torch.enable_grad():
            for _ in range(int(self.params["steps"])):
                x_adv.requires_grad_(True)
                kl = F.kl_div(F.log_softmax(model(x_adv), 1), clean, reduction="sum")
                (grad,) = torch.autograd.grad(kl, x_adv)
                x_adv = project(x_adv.detach() + step * grad.sign(), x, eps)
        return x_adv.detach()

    def step(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizers: list) -> Any:
        model.eval()
        x_adv = self.adversarial(model, x)
        model.train()
        opt = optimizers[0]
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        robust = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
        loss = F.cross_entropy(logits, y) + float(self.params["beta"]) * robust
        loss.backward()
        opt.step()
        return loss.detach()
