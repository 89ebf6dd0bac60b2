"""Attacking beats in batches, with the harness's checks on every batch (`contracts.checks.check_adversarial`)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ecgbench import log
from ecgbench.contracts.base import Attack
from ecgbench.contracts.checks import TOL, check_adversarial
from ecgbench.engine.train import predict

__all__ = ["generate", "bounded", "batched"]


def bounded(attack: Attack) -> bool:
    """Whether the attack stays in its eps-ball by construction (minimisation attacks do not)."""
    return bool(getattr(attack, "bounded", True))


def generate(model: torch.nn.Module, attack: Attack, x: torch.Tensor, y: np.ndarray, value_range: tuple[float, float], *,
             seed: int, batch: int, device: torch.device, desc: str = "attack") -> tuple[np.ndarray, dict]:
    """Adversarial beats [n, window] for beats `x` [n, 1, window]; a minimisation attack's results beyond eps are replaced by the clean beat.

    The stats hold, for a minimisation attack, each beat's L-inf when its raw result fools the
    model (None where it does not), so a report can judge it at any eps from this one run.
    """
    model.eval()
    np.random.seed(seed)  # ART draws random starts from numpy's global generator
    torch.manual_seed(seed)
    outs, linfs = [], []
    for i in log.bar(range(0, len(x), batch), desc=desc):
        xb = x[i:i + batch].to(device)
        yb = torch.as_tensor(y[i:i + batch], device=device)
        adv = attack(model, xb, yb, value_range)
        linf = check_adversarial(adv, xb, attack.label, attack.eps, bounded(attack), value_range)
        outs.append(adv.detach().float().cpu())
        linfs.append(linf.cpu())
    x_adv, linf = torch.cat(outs), torch.cat(linfs)
    within = linf <= attack.eps + TOL
    stats: dict[str, Any] = {"within_budget": float(within.float().mean()), "linf_median_found": float(linf.median())}
    if not bounded(attack):
        fooled = predict(model, x_adv, device).argmax(1) != y
        stats["linf_found"] = [round(float(v), 6) if f else None for v, f in zip(linf.tolist(), fooled)]
        x_adv = torch.where(within[:, None, None], x_adv, x.cpu())
    return x_adv[:, 0].numpy(), stats


@torch.no_grad()
def batched(fn: Any, x: np.ndarray, device: torch.device, batch: int = 2048) -> np.ndarray:
    """`fn` (a model head such as `detect`) over beats [n, window] in batches, as a numpy array."""
    t = torch.as_tensor(x, dtype=torch.float32)[:, None]
    return torch.cat([fn(t[i:i + batch].to(device)).float().cpu() for i in range(0, len(t), batch)]).numpy()
