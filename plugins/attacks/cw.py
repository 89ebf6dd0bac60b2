"""Carlini-Wagner L-inf attack (ECG-ATK-GAN paper 2.3: CW with eps = 0.1), from plain torch or ART.

Back-end "torch" (default): projected gradient ascent on the Carlini-Wagner margin
max_{j != y} z_j - z_y (Carlini & Wagner 2017, eq. 6, kappa = 0), in the L-inf ball of radius eps
from a uniform random start, as Madry et al. 2018 (sec. 5) and Croce & Hein 2020 use it. It is a
bounded attack: the result never leaves the eps-ball or the value range.

Back-end "art": ART's `CarliniLInfMethod`, the C&W L-inf search the paper's code ran. It has no eps
budget (it shrinks tau, the largest allowed change, until it stops finding adversarials and returns
the smallest one found, or the clean beat), so `cw@art` is a minimisation attack (`bounded` is False
for it) and the harness counts its successes within eps.

Why this is the one hand-written attack: ART's version attacks one beat at a time, ~2,600 model calls
and ~1 s per beat on a CPU, and takes no budget, so a full run (thousands of beats per model) is out
of reach; foolbox has no C&W L-inf. The margin-loss PGD is batched and costs `max_iter` forward and
backward passes, like PGD (docs: attack-libraries.md).
"""
from __future__ import annotations

from typing import Any

import torch

from ecgbench.engine.adapters import art_classifier, n_classes_of, to_numpy
from ecgbench.contracts import Attack

__all__ = ["CW", "cw_margin"]


def cw_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y per beat: positive exactly where the beat is misclassified."""
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return other.amax(1) - true


class CW(Attack):
    """Carlini-Wagner L-inf, eps 0.1 (paper 2.3).

    torch: `max_iter` signed-gradient steps of `eps_step` on the margin loss from a uniform random
    start (seeded by `seed`), projected onto the eps-ball and the value range after each step; returns,
    per beat, the iterate with the largest margin. Our choice: 10 steps (the paper's CW ran 10
    iterations) of eps/4, so the iterate can cross the ball 2.5 times.
    art: `max_iter` is ART's Adam steps per (tau, c) pair (paper's code: 10); learning rate 0.01,
    c from 1e-5 doubling to 20, tau shrinking by 0.9 (ART 1.20 defaults); `eps_step` and `seed` unused.
    Shapes: x [batch, 1, window] in the value range, y [batch] class indices; returns x's shape.
    """

    name = "cw"
    backends = ("torch", "art")
    kind = "gradient"
    costly = False  # per instance: True for cw@art (one beat at a time, ~2,600 queries a beat)
    defaults = {"eps": 0.1, "eps_step": 0.025, "max_iter": 10, "seed": 0}  # eps: paper 2.3

    def __init__(self, backend: str | None = None, variant: str | None = None, **params: Any) -> None:
        super().__init__(backend, variant, **params)
        # ART's C&W L-inf takes no budget: a minimisation attack, judged within eps by the harness.
        self.bounded = self.backend != "art"
        self.costly = self.backend == "art"
        self.per_beat = self.backend == "torch"  # one budget per beat: the step scales with it

    def run_torch(self, model, x, y, value_range, eps=None):
        lo, hi = (float(v) for v in value_range)
        budget = eps
        eps, step = self.eps, float(self.params["eps_step"])
        if budget is not None:  # one budget per beat, the step in proportion
            eps, step = budget.to(x.dtype)[:, None, None], step / self.eps * budget.to(x.dtype)[:, None, None]
        model.eval()
        gen = torch.Generator(device=x.device).manual_seed(int(self.params["seed"]))
        low, high = (x - eps).clamp(min=lo), (x + eps).clamp(max=hi)
        adv = torch.min(torch.max(x + eps * (2 * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) - 1), low), high)
        best, best_margin = adv.clone(), torch.full((len(x),), float("-inf"), device=x.device)
        for i in range(int(self.params["max_iter"]) + 1):
            adv.requires_grad_(True)
            margin = cw_margin(model(adv), y)
            better = margin.detach() > best_margin
            best[better], best_margin[better] = adv.detach()[better], margin.detach()[better]
            if i == int(self.params["max_iter"]):
                break
            (grad,) = torch.autograd.grad(margin.sum(), adv)
            adv = torch.min(torch.max(adv.detach() + step * grad.sign(), low), high)
        return best.detach()

    def run_art(self, model, x, y, value_range):
        from art.attacks.evasion import CarliniLInfMethod

        clf = art_classifier(model, x, n_classes_of(model, x), value_range)
        attack = CarliniLInfMethod(clf, confidence=0.0, targeted=False, max_iter=int(self.params["max_iter"]),
                                   batch_size=1, verbose=False)
        adv = attack.generate(to_numpy(x), y=to_numpy(y).astype(int))
        return torch.as_tensor(adv, device=x.device, dtype=x.dtype)
