"""ECG threat models (plugins/attacks/ecg.py) on constructed models whose answers are known.

Each attack must keep its shape (slow, in band, at the mains frequency), stay within eps, and, being
optimised, find what a random draw of the same interference at the same amplitude does not.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from ecgbench.contracts.registry import registry

RATE, WINDOW, EPS = 360, 280, 0.01


class Linear(nn.Module):
    """Two classes, logit difference w . (x - 0.5): the gradient is w everywhere."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, x):
        s = ((x[:, 0] - 0.5) * self.w).sum(1)
        return torch.stack([-s, s], 1)


def attack(name: str, variant: str | None = None, **params):
    return registry.get("attacks", name)(variant=variant, **params)


def beats(n: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.5 + 0.2 * torch.rand(n, 1, WINDOW, generator=g)).clamp(0, 1)


def _fit_residual(d: torch.Tensor, freqs: list[float]) -> float:
    """Relative residual of a least-squares fit of `d` [window] by sines and cosines at `freqs` (Hz)."""
    t = np.arange(WINDOW) / RATE
    basis = np.stack([f(2 * np.pi * fr * t) for fr in freqs for f in (np.sin, np.cos)], 1)
    coef, *_ = np.linalg.lstsq(basis, d.numpy(), rcond=None)
    return float(np.linalg.norm(basis @ coef - d.numpy()) / (np.linalg.norm(d.numpy()) + 1e-12))


@pytest.mark.parametrize("variant", [None, "random"])
def test_powerline_is_mains_and_harmonics_only(variant):
    w = torch.randn(WINDOW, generator=torch.Generator().manual_seed(1))
    model, x = Linear(w), beats(8)
    d = attack("powerline", variant)(model, x, torch.zeros(8, dtype=torch.long), (0.0, 1.0)) - x
    assert d.abs().max() <= EPS + 1e-6
    for beat in d[:, 0]:
        assert _fit_residual(beat, [60.0, 120.0, 180.0]) < 1e-3
        assert _fit_residual(beat, [50.0, 100.0, 150.0]) > 0.05  # not some other mains


def test_emg_holds_no_energy_outside_its_band():
    model, x = Linear(torch.randn(WINDOW, generator=torch.Generator().manual_seed(2))), beats(8)
    d = attack("emg")(model, x, torch.zeros(8, dtype=torch.long), (0.0, 1.0)) - x
    spectrum = torch.fft.rfft(d[:, 0].double()).abs()
    freqs = torch.fft.rfftfreq(WINDOW, d=1 / RATE)
    outside = (freqs < 20) | (freqs > 150)
    # float32 rounding of x + d - x leaves ~1e-6 of the peak everywhere; a leak would be orders of magnitude more
    assert spectrum[:, outside].max() < 1e-4 * spectrum.max() and d.abs().max() <= EPS + 1e-6


def test_baseline_wander_is_slow():
    """0.05-0.5 Hz over a 0.78 s beat: almost a straight line; its second differences are tiny."""
    model, x = Linear(torch.randn(WINDOW, generator=torch.Generator().manual_seed(3))), beats(8)
    d = attack("baseline-wander")(model, x, torch.zeros(8, dtype=torch.long), (0.0, 1.0)) - x
    second = (d[..., 2:] - 2 * d[..., 1:-1] + d[..., :-2]).abs().max()
    assert second < 1e-3 * EPS and d.abs().max() <= EPS + 1e-6


@pytest.mark.parametrize("name", ["baseline-wander", "powerline", "emg"])
def test_optimised_interference_fools_where_a_random_draw_at_the_same_amplitude_does_not(name):
    """Beats a little inside the decision boundary of a model that reads the interference's own shape: the
    optimised interference flips them all; random draws of the same amplitude flip fewer."""
    t = torch.arange(WINDOW) / RATE
    probe = {"baseline-wander": torch.sin(2 * math.pi * 0.3 * t + 1.0),
             "powerline": torch.sin(2 * math.pi * 60 * t + 0.5),
             "emg": torch.sin(2 * math.pi * 80 * t + 0.2)}[name]
    model = Linear(probe / probe.norm())
    x = torch.full((64, 1, WINDOW), 0.5) + 0.3 * EPS * (probe / probe.abs().max())  # margin 0.3 eps along the probe
    y = torch.ones(64, dtype=torch.long)  # class 1: s > 0
    worst = model(attack(name)(model, x, y, (0.0, 1.0))).argmax(1)
    rand = model(attack(name, "random")(model, x, y, (0.0, 1.0))).argmax(1)
    assert (worst != y).float().mean() == 1.0
    assert (rand != y).float().mean() < 1.0
    assert attack(name).kind == "gradient" and attack(name, "random").kind == "corruption"


@pytest.mark.parametrize("name", ["baseline-wander", "powerline", "emg"])
def test_each_threat_model_is_a_function_of_its_seed(name):
    model, x = Linear(torch.randn(WINDOW, generator=torch.Generator().manual_seed(4))), beats(4)
    y = torch.zeros(4, dtype=torch.long)
    a, b = attack(name)(model, x, y, (0.0, 1.0)), attack(name)(model, x, y, (0.0, 1.0))
    assert torch.equal(a, b)
