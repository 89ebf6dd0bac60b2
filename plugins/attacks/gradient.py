"""Gradient attacks under an L-inf budget: FGSM, BIM, PGD (ECG-ATK-GAN paper 2.3), from ART or foolbox.

eps = 0.01 on the [0, 1] beat scale (paper 2.3). ART's PGD/BIM defaults (eps_step 0.1 > eps,
100 iterations, no random start) are not PGD at eps 0.01; the step sizes below are ours, stated.
"""
from __future__ import annotations

from typing import Any

import torch

from ecgbench.engine.adapters import art_classifier, foolbox_model, n_classes_of, to_numpy
from ecgbench.contracts import Attack


def _art(attack_cls: type, model: Any, x: torch.Tensor, y: torch.Tensor, value_range: tuple[float, float], **kw: Any) -> torch.Tensor:
    clf = art_classifier(model, x, n_classes_of(model, x), value_range)
    if "verbose" in attack_cls.attack_params:  # FGSM takes no `verbose`; the iterative ones print bars without it
        kw["verbose"] = False
    adv = attack_cls(clf, batch_size=len(x), **kw).generate(to_numpy(x), y=to_numpy(y).astype(int))
    return torch.as_tensor(adv, device=x.device, dtype=x.dtype)


def _foolbox(attack: Any, model: Any, x: torch.Tensor, y: torch.Tensor, value_range: tuple[float, float], eps: float) -> torch.Tensor:
    _, clipped, _ = attack(foolbox_model(model, value_range), x, y, epsilons=eps)
    return clipped.detach()


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one signed-gradient step of size eps."""

    name = "fgsm"
    backends = ("art", "foolbox")
    kind = "gradient"
    costly = False
    defaults = {"eps": 0.01}  # paper 2.3

    def run_art(self, model, x, y, value_range):
        from art.attacks.evasion import FastGradientMethod

        return _art(FastGradientMethod, model, x, y, value_range, eps=self.eps, norm="inf")

    def run_foolbox(self, model, x, y, value_range):
        import foolbox.attacks as fa

        return _foolbox(fa.LinfFastGradientAttack(random_start=False), model, x, y, value_range, self.eps)


class BIM(Attack):
    """Basic Iterative Method (Kurakin et al. 2016): FGSM in small steps from the clean beat, projected.

    Our choice: 10 steps of eps/4, so the iterate can reach the corner of the ball and move along it.
    """

    name = "bim"
    backends = ("art", "foolbox")
    kind = "gradient"
    costly = False
    defaults = {"eps": 0.01, "eps_step": 0.0025, "max_iter": 10}

    def run_art(self, model, x, y, value_range):
        from art.attacks.evasion import BasicIterativeMethod

        return _art(BasicIterativeMethod, model, x, y, value_range,
                    eps=self.eps, eps_step=self.params["eps_step"], max_iter=self.params["max_iter"])

    def run_foolbox(self, model, x, y, value_range):
        import foolbox.attacks as fa

        attack = fa.LinfBasicIterativeAttack(abs_stepsize=self.params["eps_step"], steps=self.params["max_iter"], random_start=False)
        return _foolbox(attack, model, x, y, value_range, self.eps)


class PGD(Attack):
    """Projected Gradient Descent (Madry et al. 2018): BIM from a uniform random start in the ball.

    Our choice: 20 steps of eps/4 and one random start (the paper names PGD but ran ART's defaults,
    whose step of 0.1 is ten times the budget).
    """

    name = "pgd"
    backends = ("art", "foolbox")
    kind = "gradient"
    costly = False
    defaults = {"eps": 0.01, "eps_step": 0.0025, "max_iter": 20, "num_random_init": 1}

    def run_art(self, model, x, y, value_range):
        from art.attacks.evasion import ProjectedGradientDescent

        return _art(ProjectedGradientDescent, model, x, y, value_range, norm="inf", eps=self.eps,
                    eps_step=self.params["eps_step"], max_iter=self.params["max_iter"],
                    num_random_init=self.params["num_random_init"])

    def run_foolbox(self, model, x, y, value_range):
        import foolbox.attacks as fa

        attack = fa.LinfPGD(abs_stepsize=self.params["eps_step"], steps=self.params["max_iter"],
                            random_start=self.params["num_random_init"] > 0)
        return _foolbox(attack, model, x, y, value_range, self.eps)
