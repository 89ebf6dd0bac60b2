"""Certified robustness by randomized smoothing (Cohen, Rosenfeld & Kolter 2019, "Certified adversarial
robustness via randomized smoothing", ICML): CERTIFY, their Algorithm 1.

The smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c). From `n0` noisy copies of a beat, the
top class is guessed; from `n` more, a one-sided Clopper-Pearson lower bound pA on its probability (level
`alpha`). If pA > 1/2, g is certified constant within the L2 ball of radius sigma * Phi^-1(pA) around the beat,
with probability at least 1 - alpha over the sampling; else it abstains. The noise is not clipped to the value
range (Cohen et al. do not clip). Checked against ART's `PyTorchRandomizedSmoothing.certify` and against
a linear model whose exact radius is known (tests/test_certify.py).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import beta, norm

__all__ = ["certify", "ABSTAIN"]

ABSTAIN = -1


def _counts(net: torch.nn.Module, x: torch.Tensor, n: int, sigma: float, n_classes: int, batch: int,
            gen: torch.Generator) -> np.ndarray:
    """Class counts [len(x), n_classes] of `net` over `n` Gaussian copies of each beat."""
    counts = torch.zeros(len(x), n_classes, dtype=torch.long)
    with torch.no_grad():
        for i, beat in enumerate(x):
            left = n
            while left:
                k = min(batch, left)
                noise = torch.randn((k, *beat.shape), generator=gen) * sigma
                pred = net((beat.cpu() + noise).to(beat.device)).argmax(1).cpu()
                counts[i] += torch.bincount(pred, minlength=n_classes)
                left -= k
    return counts.numpy()


def certify(net: torch.nn.Module, x: torch.Tensor, n_classes: int, *, sigma: float, n0: int = 100, n: int = 1000,
            alpha: float = 0.001, batch: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per beat of `x` [m, 1, window]: the smoothed prediction (ABSTAIN where it cannot certify) and the
    certified L2 radius (0 where it abstains)."""
    net.eval()
    gen = torch.Generator().manual_seed(seed)
    guess = _counts(net, x, n0, sigma, n_classes, batch, gen).argmax(1)
    counts = _counts(net, x, n, sigma, n_classes, batch, gen)
    n_a = counts[np.arange(len(x)), guess]
    p_a = np.where(n_a > 0, beta.ppf(alpha, n_a, n - n_a + 1), 0.0)  # one-sided Clopper-Pearson lower bound
    certified = p_a > 0.5
    radius = np.where(certified, sigma * norm.ppf(np.clip(p_a, 0.5, 1 - 1e-16)), 0.0)
    return np.where(certified, guess, ABSTAIN), radius
