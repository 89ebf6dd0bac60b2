"""Sanity checks of a model, after AutoAttack's flags (Croce & Hein 2020, `fra31/auto-attack`, `flags_doc.md`).

A flagged model keeps its numbers; the flag says why they may overstate its robustness:
- `zero-gradients`: beats whose input gradient is zero or not finite (gradient masking: a rounding
  step, a saturated non-linearity). We differentiate the logit margin (true class minus the best
  other), not the cross-entropy, whose gradient underflows to an exact zero on confidently right
  beats of any healthy network; AutoAttack flags any such beat, and so do we.
- `randomised`: two passes over the same beats give other outputs (dropout left on, noise inside):
  the worst case then needs expectation over the randomness (EoT), which these attacks do not do.
  AutoAttack's test: outputs scaled to unit L2 norm differing by more than 1e-4.
- `probabilities`: outputs that are a probability distribution (softmax) rather than logits: losses
  computed on them saturate, and gradient attacks understate what an attacker can do.
  AutoAttack's test: every output in [0, 1] and rows summing to 1 within 1e-5.
The fourth flag, a black-box attack stronger than every white-box one, needs the attacked cells and
is computed by the report (`ecgbench.report.flags`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["check_model", "MEANINGS", "SAMPLE"]

SAMPLE = 256  # beats checked: the first of the test set (deterministic), enough to see any of the three
MEANINGS = {
    "zero-gradients": "input gradients zero or not finite on some clean beats: gradient masking; white-box attacks "
                      "may fail for that reason alone, so its robust accuracy may be overstated",
    "randomised": "two passes over the same beats gave other outputs: a randomised model needs attacks with "
                  "expectation over its randomness (EoT); its robust accuracy may be overstated",
    "probabilities": "outputs look like probabilities (softmax), not logits: losses on them saturate and gradient "
                     "attacks understate the threat",
    "black-box-stronger": "a black-box attack beat every white-box one on the same beats: a sign the gradients mislead "
                          "(gradient masking); the white-box numbers may be overstated",
}


def check_model(net: torch.nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device) -> dict[str, Any]:
    """The three model-level flags on the first `SAMPLE` clean beats, with the counts they rest on."""
    xs = torch.as_tensor(x[:SAMPLE], dtype=torch.float32, device=device)[:, None]
    ys = torch.as_tensor(y[:SAMPLE], dtype=torch.int64, device=device)
    net.eval()
    with torch.no_grad():
        first, second = net(xs).float(), net(xs).float()
    unit = lambda o: o / (o.norm(dim=1, keepdim=True) + 1e-10)  # noqa: E731 - AutoAttack's normalisation
    drift = float((unit(first) - unit(second)).norm(dim=1).max()) if len(xs) else 0.0
    probabilities = bool(len(xs)) and bool(first.max() < 1 + 1e-5 and first.min() > -1e-5
                                          and ((first.sum(1) - 1).abs() < 1e-5).all())
    grad = _margin_gradient(net, xs, ys)
    flat = grad.flatten(1)
    not_finite = int((~torch.isfinite(flat)).any(1).sum())
    zero = int((flat.abs().sum(1) == 0).sum())
    flags = [name for name, raised in (("zero-gradients", zero + not_finite > 0), ("randomised", drift > 1e-4),
                                       ("probabilities", probabilities)) if raised]
    return {"flags": flags, "beats": len(xs), "zero_gradient_beats": zero, "non_finite_gradient_beats": not_finite,
            "output_drift": drift}


def _margin_gradient(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d(true logit - best other logit)/dx per beat (one backward pass for the batch: beats are independent)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        out = net(x).float()
        true = out.gather(1, y[:, None])[:, 0]
        other = out.masked_fill(torch.nn.functional.one_hot(y, out.shape[1]).bool(), float("-inf")).amax(1)
        (grad,) = torch.autograd.grad((true - other).sum(), x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad
