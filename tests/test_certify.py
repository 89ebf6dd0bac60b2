"""Randomized smoothing (ecgbench/engine/smoothing.py) on a linear model whose certified radius is known exactly,
against ART's implementation of the same algorithm, and `ecgbench certify` on a real run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import norm

from ecgbench.engine.smoothing import ABSTAIN, certify

WINDOW, SIGMA = 280, 0.01


class Halfspace(nn.Module):
    """Class 1 where u . x > 0.5 * sum(u) (u a unit vector): every beat's distance to the boundary is known."""

    def __init__(self, u: torch.Tensor) -> None:
        super().__init__()
        self.u = u

    def forward(self, x):
        s = (x[:, 0] * self.u).sum(1) - 0.5 * self.u.sum()
        return torch.stack([-s, s], 1)


def setup():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(WINDOW, generator=g)
    u /= u.norm()
    d = torch.tensor([0.25, 0.5, 1.0, 1.5, 2.0, 3.0]) * SIGMA  # distance of each beat to the boundary (L2)
    x = (0.5 + d[:, None] * u[None])[:, None]  # all class 1
    return Halfspace(u.double()).double(), x.double(), d.numpy()


def test_the_certified_radius_is_sound_and_tight_on_a_halfspace():
    """The smoothed halfspace is the halfspace, its pA is Phi(d / sigma) and the true radius d; CERTIFY's radius is a
    lower bound on d (with probability 1 - alpha) and, with 20,000 samples, within 0.35 sigma of it where pA < 1."""
    net, x, d = setup()
    pred, radius = certify(net, x, 2, sigma=SIGMA, n0=100, n=20000, alpha=0.001, batch=5000)
    assert (pred == 1).all()
    assert (radius <= d + 1e-9).all()
    assert (radius[:4] >= d[:4] - 0.35 * SIGMA).all(), (radius, d)


def test_a_beat_on_the_boundary_abstains():
    net, x, _ = setup()
    on = torch.full((1, 1, WINDOW), 0.5, dtype=torch.float64)
    pred, radius = certify(net, on, 2, sigma=SIGMA, n=2000)
    assert pred[0] == ABSTAIN and radius[0] == 0


def test_the_radius_agrees_with_arts_randomized_smoothing_on_the_same_case():
    """ART's `PyTorchRandomizedSmoothing.certify` runs the same algorithm with its own noise (numpy's generator):
    with 5,000 samples both radii lie within 0.25 sigma of each other and of sigma * Phi^-1 of the lower bound
    on Phi(d / sigma)."""
    pytest.importorskip("statsmodels", reason="ART's certify needs statsmodels (the test extra)")
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    net, x, d = setup()
    ours = certify(net.float(), x.float(), 2, sigma=SIGMA, n=5000)[1]
    art = PyTorchRandomizedSmoothing(net.float(), loss=nn.CrossEntropyLoss(), input_shape=(1, WINDOW), nb_classes=2,
                                     device_type="cpu", sample_size=100, scale=SIGMA, alpha=0.001)
    np.random.seed(0)
    _, theirs = art.certify(x.float().numpy(), n=5000, batch_size=1000)
    assert np.abs(ours[:4] - theirs[:4]).max() < 0.25 * SIGMA, (ours, theirs)
    exact = SIGMA * norm.ppf(norm.cdf(d / SIGMA))
    assert np.abs(ours[:4] - exact[:4]).max() < 0.25 * SIGMA


def test_certify_writes_a_table_for_every_row_of_a_run(data_dir, tmp_path):
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    run = [sys.executable, "-m", "ecgbench", "run", "--models", "kachuee,acharya", "--attacks", "", "--modes", "adaptive",
           "--profile", "smoke", "--no-progress", "--out", str(out)]
    assert subprocess.run(run, capture_output=True, text=True, env=env).returncode == 0
    res = subprocess.run([sys.executable, "-m", "ecgbench", "certify", str(out), "--samples", "100", "--beats", "40",
                          "--radii", "0.002,0.01"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    table = json.loads((out / "certified.json").read_text())
    assert table["settings"]["n"] == 100 and {r["model"] for r in table["rows"]} == {"kachuee", "acharya"}
    for row in table["rows"]:
        assert row["beats"] == 40
        assert row["smoothed accuracy"] >= row["certified r=0.002"] >= row["certified r=0.01"]
    assert "sigma 0.01, n0 100, n 100" in (out / "certified.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "ecgbench", "certify", str(out), "--radii", "x"], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("ecgbench: error: --radii 'x'")
