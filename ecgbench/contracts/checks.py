"""Checks at the plugin boundary: what a dataset, model or attack hands back is what the harness expects.

Each check raises `PluginError` with a message for the plugin's author: what came back, what was
expected. The harness runs them on every call; `ecgbench check NAME` runs them on one plugin.
"""
from __future__ import annotations

import numpy as np
import torch

from ecgbench.contracts.base import Beats, PluginError

__all__ = ["check_beats", "check_logits", "check_adversarial", "TOL"]

TOL = 1e-5  # float32 rounding at the edge of the eps-ball and the value range


def check_beats(beats: Beats, name: str, window: int, n_classes: int, value_range: tuple[float, float]) -> None:
    x, y = beats.x, beats.y
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != window:
        raise PluginError(f"dataset {name!r} returned beats of shape {getattr(x, 'shape', type(x))}, expected (n, {window})")
    if x.dtype != np.float32:
        raise PluginError(f"dataset {name!r} returned beats of dtype {x.dtype}, expected float32")
    if len(y) != len(x) or len(beats.groups) != len(x):
        raise PluginError(f"dataset {name!r} returned {len(x)} beats but {len(y)} labels and {len(beats.groups)} groups")
    if len(x) == 0:
        raise PluginError(f"dataset {name!r} returned no beats")
    if not np.isfinite(x).all() or x.min() < value_range[0] - TOL or x.max() > value_range[1] + TOL:
        raise PluginError(f"dataset {name!r} returned values in [{x.min():.4g}, {x.max():.4g}], expected finite values in {list(value_range)}")
    bad = sorted(set(np.unique(y).tolist()) - set(range(n_classes)))
    if bad:
        raise PluginError(f"dataset {name!r} returned labels {bad}, expected 0..{n_classes - 1} (one per class name)")
    scale = beats.scale
    if scale is not None and (not isinstance(scale, np.ndarray) or scale.shape != (len(x),) or (scale[np.isfinite(scale)] < 0).any()
                              or np.isinf(scale).any()):
        raise PluginError(f"dataset {name!r} returned a scale of shape {getattr(scale, 'shape', type(scale))}, expected "
                          f"({len(x)},) microvolts per unit, non-negative (NaN where unknown)")


def check_logits(logits: torch.Tensor | np.ndarray, name: str, n: int, n_classes: int) -> None:
    shape = tuple(logits.shape)
    if shape != (n, n_classes):
        raise PluginError(f"model {name!r} returned logits of shape {shape} for {n} beats, expected ({n}, {n_classes})")
    finite = torch.isfinite(logits).all() if isinstance(logits, torch.Tensor) else np.isfinite(logits).all()
    if not finite:
        raise PluginError(f"model {name!r} returned non-finite logits")


def check_adversarial(x_adv: torch.Tensor, x: torch.Tensor, name: str, eps: float | torch.Tensor, bounded: bool,
                      value_range: tuple[float, float]) -> torch.Tensor:
    """Validate an attack's output; returns the per-beat L-inf distance.

    A bounded attack outside its eps-ball is a bug in the attack, never a success. `eps` may be one
    budget per beat (a tensor [batch]: a budget in microvolts).
    """
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        raise PluginError(f"attack {name!r} returned {type(x_adv).__name__} of shape {tuple(getattr(x_adv, 'shape', ()))}, expected a tensor of shape {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise PluginError(f"attack {name!r} returned non-finite beats")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < value_range[0] - TOL or hi > value_range[1] + TOL:
        raise PluginError(f"attack {name!r} left the value range: [{lo:.4g}, {hi:.4g}] outside {list(value_range)}")
    linf = (x_adv - x).flatten(1).abs().amax(1)
    over = linf - (eps.to(linf) if isinstance(eps, torch.Tensor) else eps)
    if bounded and float(over.max()) > TOL:
        i = int(over.argmax())
        budget = float(eps[i]) if isinstance(eps, torch.Tensor) else eps
        raise PluginError(f"attack {name!r} perturbed a beat by L-inf {float(linf[i]):.5g} > eps {budget:.5g}")
    return linf
