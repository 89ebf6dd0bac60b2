"""Beat preparation shared by every dataset: windowing, normalisation, class caps, SMOTE, folds, the prepared split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgbench.contracts.base import Beats, Dataset
from ecgbench.contracts.splits import stratified_split

__all__ = [
    "cut_windows", "minmax", "microvolts_per_unit", "amplitude_uv", "cap_per_class", "smote", "folds", "Splits", "prepare",
]

MICROVOLTS = {"mv": 1e3, "uv": 1.0, "µv": 1.0, "v": 1e6}  # WFDB headers' physical units, lower case


def cut_windows(signal: np.ndarray, peaks: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of `window` samples centred on each peak (paper 3.1), by fancy indexing.

    Returns the windows and the mask of peaks kept: a window that would leave the record is dropped.
    """
    half = window // 2
    keep = (peaks - half >= 0) & (peaks + (window - half) <= len(signal))
    idx = peaks[keep, None] + np.arange(-half, window - half)
    return signal[idx], keep


def minmax(x: np.ndarray) -> np.ndarray:
    """Each beat scaled to [0, 1] (paper 3.1); a flat beat becomes all zeros rather than NaN.

    A row whose span overflows float64 is first divided by its largest magnitude, so extreme values
    from a third-party reader still land in [0, 1]; ordinary rows are untouched, bit for bit.
    """
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        span = hi - lo
    huge = ~np.isfinite(span)
    if huge.any():
        s = np.where(huge, np.maximum(np.abs(lo), np.abs(hi)), 1.0)
        x, lo, hi = x / s, lo / s, hi / s
        span = np.where(huge, hi - lo, span)
    return ((x - lo) / np.where(span > 0, span, 1.0)).astype(np.float32)


def microvolts_per_unit(units: str | None) -> float:
    """Microvolts in one of a WFDB header's physical units (`mV` -> 1000); NaN for a unit we do not know."""
    return MICROVOLTS.get((units or "").strip().lower(), float("nan"))


def amplitude_uv(windows: np.ndarray, units: str | None) -> np.ndarray:
    """Each window's amplitude range (max - min) in microvolts: what one unit of its min-max scaled beat is worth.

    An eps on the [0, 1] beat scale is eps times this many microvolts, another voltage on every beat
    (issue 23: eps 0.01 is a median 19 microvolts on MIT-BIH). A flat beat has range 0 (no budget holds it).
    """
    return (np.ptp(windows, axis=1) * microvolts_per_unit(units)).astype(np.float32)


def cap_per_class(beats: Beats, cap: int | None, seed: int) -> Beats:
    """At most `cap` beats of each class, drawn at random; a profile's way to make a run small."""
    if cap is None:
        return beats
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(beats.y == c))[:cap] for c in np.unique(beats.y)]
    return beats.take(np.sort(np.concatenate(keep)))


def smote(beats: Beats, target: int, seed: int) -> Beats:
    """Raise every class below `target` to `target` beats with imbalanced-learn's SMOTE (paper 3.1).

    Only ever called on training beats. Synthetic beats get the group `smote`. A class with fewer
    than two beats cannot be interpolated and is left as it is; k shrinks for classes smaller than 6.
    """
    from imblearn.over_sampling import SMOTE

    counts = np.bincount(beats.y)
    strategy = {c: target for c, n in enumerate(counts) if 2 <= n < target}
    if not strategy:
        return beats
    k = int(min(5, min(counts[c] for c in strategy) - 1))
    x, y = SMOTE(sampling_strategy=strategy, k_neighbors=k, random_state=seed).fit_resample(beats.x, beats.y)
    n_new = len(y) - len(beats)
    synthetic = Beats(x[len(beats):].astype(np.float32), y[len(beats):].astype(np.int64), np.full(n_new, "smote"))
    return Beats.concat([beats, synthetic])


def folds(y: np.ndarray, n_folds: int, val_fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs: stratified k-fold (paper 3.1: 5 folds), or one holdout when k = 1."""
    from sklearn.model_selection import StratifiedKFold

    if n_folds <= 1:
        return [stratified_split(y, val_fraction, seed)]
    return [(tr, va) for tr, va in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(y, y)]


@dataclass(frozen=True)
class Splits:
    """Real training beats (before any oversampling), validation folds carved from them, and the test set."""

    train: Beats
    test: Beats
    folds: list[tuple[np.ndarray, np.ndarray]]


def prepare(dataset: Dataset, beats: Beats, split: str, *, seed: int, train_cap: int | None,
            test_cap: int | None, n_folds: int, val_fraction: float) -> Splits:
    """Split, cap each class, and carve validation folds from the real training beats only."""
    train_idx, test_idx = dataset.split(beats, split, seed)
    train = cap_per_class(beats.take(train_idx), train_cap, seed)
    test = cap_per_class(beats.take(test_idx), test_cap, seed + 1)
    return Splits(train, test, folds(train.y, n_folds, val_fraction, seed))
