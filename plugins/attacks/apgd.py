"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML) under an L-inf budget, from ART's `AutoProjectedGradientDescent`.

Not in ECG-ATK-GAN's six attacks; it is the step-size-free PGD that AutoAttack builds on, so a
benchmark reports how much of a model's PGD robustness is only a badly tuned step. foolbox has no APGD.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ecgbench.adapters import art_classifier, n_classes_of, to_numpy
from ecgbench.api import Attack, PluginError

from .seeding import seeded

__all__ = ["APGD", "BestIterate"]

LOSSES = {"ce": "cross_entropy", "dlr": "difference_logits_ratio"}


class BestIterate(nn.Module):
    """The model, remembering per beat the first point it was shown that lies in the beat's eps-ball and
    value range and that it does not label `y` (`found`, `best`).

    ART's APGD keeps a beat's last iterate only (or its random start where the last iterate is still
    classified correctly), though it evaluates every iterate. ART calls the model on batches of the
    beats it still attacks, in chunks of its own choosing; each row is matched to the clean beat
    nearest to it in a few fixed random projections, and the match is verified (inside that beat's
    ball and the value range), so a record is always a valid adversarial beat.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, value_range: tuple[float, float]) -> None:
        super().__init__()
        self.model, self.x, self.y, self.eps = model, x, y, eps
        self.lo, self.hi = (float(v) for v in value_range)
        self.best, self.found = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        gen = torch.Generator().manual_seed(0)
        self.proj = torch.randn(x[0].numel(), 16, generator=gen).to(device=x.device, dtype=x.dtype)
        self.keys = x.flatten(1) @ self.proj

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self.model(batch)
        with torch.no_grad():
            b = batch.detach().to(self.x.dtype).flatten(1)
            rows = torch.cdist(b @ self.proj, self.keys).argmin(1)
            ok = ((b - self.x.flatten(1)[rows]).abs().amax(1) <= self.eps + 1e-6) & (b.amin(1) >= self.lo - 1e-6) \
                & (b.amax(1) <= self.hi + 1e-6) & (logits.argmax(1) != self.y[rows]) & ~self.found[rows]
            self.best[rows[ok]] = b[ok].view(-1, *self.x.shape[1:])
            self.found[rows[ok]] = True
        return logits


class APGD(Attack):
    """APGD with the cross-entropy loss (default) or, as variant `dlr`, the Difference of Logits Ratio.

    eps 0.01 on the [0, 1] beat scale (paper 2.3, as for PGD). Our choices, after Croce & Hein 2020
    (sec. 3.2 and AutoAttack's `standard` version): 100 iterations, initial step 2 * eps (halved by
    the algorithm where progress stalls), one random start (`nb_random_init`; ART restarts only the
    beats still classified correctly). The DLR loss needs the third largest logit, so it needs at least
    three classes. The run is seeded by `seed` (ART draws the random start from numpy's generator).
    ART returns each beat's last iterate (or its random start); with `keep_best` (default) a beat whose
    result is classified correctly gets the first misclassified iterate ART evaluated instead
    (`BestIterate`), as Croce & Hein's own APGD returns the best point it saw.
    """

    name = "apgd"
    backends = ("art",)
    kind = "gradient"
    costly = True  # 100 iterations: run on the stratified subset
    defaults = {"eps": 0.01, "eps_step": 0.02, "max_iter": 100, "nb_random_init": 1, "loss": "ce", "seed": 0,
                "keep_best": True}
    variants = {"dlr": {"loss": "dlr"}}

    def __init__(self, backend: str | None = None, variant: str | None = None, **params: Any) -> None:
        super().__init__(backend, variant, **params)
        if self.params["loss"] not in LOSSES:
            raise PluginError(f"attack 'apgd' has no loss {self.params['loss']!r}; choose one of {', '.join(LOSSES)}")

    def run_art(self, model, x, y, value_range):
        from art.attacks.evasion import AutoProjectedGradientDescent

        n_classes = n_classes_of(model, x)
        if self.params["loss"] == "dlr" and n_classes < 3:
            raise PluginError(f"attack {self.label!r}: the DLR loss needs at least 3 classes (it divides by "
                              f"z_1 - z_3), this model has {n_classes}; use the cross-entropy loss (apgd without :dlr)")
        recorder = BestIterate(model, x, y, self.eps, value_range)
        clf = art_classifier(recorder if self.params["keep_best"] else model, x, n_classes, value_range)
        with seeded(int(self.params["seed"]), x.device):
            attack = AutoProjectedGradientDescent(
                clf, norm=np.inf, eps=self.eps, eps_step=float(self.params["eps_step"]),
                max_iter=int(self.params["max_iter"]), targeted=False, nb_random_init=int(self.params["nb_random_init"]),
                batch_size=len(x), loss_type=LOSSES[self.params["loss"]], verbose=False)
            adv = torch.as_tensor(attack.generate(to_numpy(x), y=to_numpy(y).astype(int)), device=x.device, dtype=x.dtype)
        if self.params["keep_best"]:
            with torch.no_grad():
                lost = recorder.found & (model(adv).argmax(1) == y)
            adv[lost] = recorder.best[lost]
        return adv
