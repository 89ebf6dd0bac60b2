"""Gradient attacks under an L-inf budget: FGSM, BIM, PGD (ECG-ATK-GAN paper 2.3), from ART or foolbox.

eps = 0.01 on the [0, 1] beat scale (paper 2.3). ART's PGD/BIM defaults (eps_step 0.1 > eps,
100 iterations, no random start) are not PGD at eps 0.01; the step sizes below are ours, stated.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ecgbench.engine.adapters import art_classifier, foolbox_model, n_classes_of, to_numpy
from ecgbench.contracts import Attack


def _art(attack_cls: type, model: Any, x: torch.Tensor, y: torch.Tensor, value_range: tuple[float, float], **kw: Any) -> torch.Tensor:
    per_beat = isinstance(kw.get("eps"), np.ndarray)
    beats = x.flatten(1) if per_beat else x  # ART takes per-beat budgets ([n, 1]) on 2-D inputs only: see _Flat
    clf = art_classifier(_Flat(model, x.shape[1:]) if per_beat else model, beats, n_classes_of(model, x), value_range)
    if "verbose" in attack_cls.attack_params:  # FGSM takes no `verbose`; the iterative ones print bars without it
        kw["verbose"] = False
    adv = attack_cls(clf, batch_size=len(x), **kw).generate(to_numpy(beats), y=to_numpy(y).astype(int))
    return torch.as_tensor(adv, device=x.device, dtype=x.dtype).reshape(x.shape)


class _Flat(torch.nn.Module):
    """The model on beats flattened to [n, window]. ART 1.20 slices an eps array per batch only when it has
    x's rank, and its random start (`random_sphere`) broadcasts an [n, 1, 1] eps against [n, window] noise
    to [n, n, window]: per-beat budgets work on 2-D inputs, with eps [n, 1]."""

    def __init__(self, model: torch.nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.shape = model, tuple(shape)
        self.attack_loss = getattr(model, "attack_loss", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(len(x), *self.shape))


def _budget(attack: Attack, eps: torch.Tensor | None, **steps: float) -> dict[str, Any]:
    """ART's budget arguments: `eps` and the steps as given, or per beat (arrays [n, 1] for `_Flat` beats) with
    each step in proportion to its beat's budget."""
    if eps is None:
        return {"eps": attack.eps, **steps}
    per_beat = eps.detach().cpu().numpy().astype(np.float32)[:, None]
    return {"eps": per_beat, **{k: per_beat * (v / attack.eps) for k, v in steps.items()}}


class _PerBeatOnArt(Attack):
    """ART's gradient attacks take an eps array, one budget per beat; foolbox's take one budget for all."""

    @property
    def per_beat(self) -> bool:  # type: ignore[override]
        return self.backend == "art"


def _foolbox(attack: Any, model: Any, x: torch.Tensor, y: torch.Tensor, value_range: tuple[float, float], eps: float) -> torch.Tensor:
    _, clipped, _ = attack(foolbox_model(model, value_range), x, y, epsilons=eps)
    return clipped.detach()


class FGSM(_PerBeatOnArt):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one signed-gradient step of size eps."""

    name = "fgsm"
    backends = ("art", "foolbox")
    kind = "gradient"
    costly = False
    defaults = {"eps": 0.01}  # paper 2.3

    def run_art(self, model, x, y, value_range, eps=None):
        from art.attacks.evasion import FastGradientMethod

        # FGSM's step is its budget: ART's eps_step only matters for its minimal-perturbation search
        return _art(FastGradientMethod, model, x, y, value_range, norm="inf", **_budget(self, eps, eps_step=0.1))

    def run_foolbox(self, model, x, y, value_range):
        import foolbox.attacks as fa

        return _foolbox(fa.LinfFastGradientAttack(random_start=False), model, x, y, value_range, self.eps)


class BIM(_PerBeatOnArt):
    """Basic Iterative Method (Kurakin et al. 2016): FGSM in small steps from the clean beat, projected.

    Our choice: 10 steps of eps/4, so the iterate can reach the corner of the ball and move along it.
    """

    name = "bim"
    backends = ("art", "foolbox")
    kind = "gradient"
    costly = False
    defaults = {"eps": 0.01, "eps_step": 0.0025, "max_iter": 10}

    def run_art(self, model, x, y, value_range, eps=None):
        from art.attacks.evasion import BasicIterativeMethod

        return _art(BasicIterativeMethod, model, x, y, value_range, max_iter=self.params["max_iter"],
                    **_budget(self, eps, eps_step=self.params["eps_step"]))

    def run_foolbox(self, model, x, y, value_range):
        import foolbox.attacks as fa

        attack = fa.LinfBasicIterativeAttack(abs_stepsize=self.params["eps_step"], steps=self.params["max_iter"], random_start=False)
        return _foolbox(attack, model, x, y, value_range, self.eps)


class PGD(_PerBeatOnArt):
    """Projected Gradient Descent (Madry et al. 2018): BIM from a uniform random start in the ball.

    Our choice: 20 steps of eps/4 and one random start (the paper names PGD but ran ART's defaults,
    whose step of 0.1 is ten times the budget).
    """

    name = "pgd"
    backends = ("art", "foolbox")
    kind = "gradient"
    costly = False
    defaults = {"eps": 0.01, "eps_step": 0.0025, "max_iter": 20, "num_random_init": 1}

    def run_art(self, model, x, y, value_range, eps=None):
        from art.attacks.evasion import ProjectedGradientDescent

        return _art(ProjectedGradientDescent, model, x, y, value_range, norm="inf", max_iter=self.params["max_iter"],
                    num_random_init=self.params["num_random_init"], **_budget(self, eps, eps_step=self.params["eps_step"]))

    def run_foolbox(self, model, x, y, value_range):
        import foolbox.attacks as fa

        attack = fa.LinfPGD(abs_stepsize=self.params["eps_step"], steps=self.params["max_iter"],
                            random_start=self.params["num_random_init"] > 0)
        return _foolbox(attack, model, x, y, value_range, self.eps)
