"""Beat preparation shared by every dataset: windowing, normalisation, splits, class caps, SMOTE, caching."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgbench.api import Beats, Dataset, PluginError
from ecgbench.store import cache_key, entry_lock, load_arrays, save_arrays, verified

__all__ = [
    "cut_windows", "minmax", "stratified_split", "patient_split", "cap_per_class", "smote",
    "folds", "fingerprint", "load_beats", "Splits", "prepare",
]


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


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y)
    return np.sort(train), np.sort(test)


def patient_split(groups: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole patients to one side, so no patient's beats leak across the split."""
    from sklearn.model_selection import GroupShuffleSplit

    train, test = next(GroupShuffleSplit(1, test_size=test_fraction, random_state=seed).split(groups, groups=groups))
    return np.sort(train), np.sort(test)


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


SMALL_FILE = 64 << 10  # files up to 64 KiB (headers, annotations, RECORDS; not PTB-XL signals) are hashed by content


def fingerprint(files: list[Path]) -> list[tuple[str, int, int, str]]:
    """Name, size, modification time of each raw file, and the content hash of the small ones.

    Changed, moved, truncated or replaced data changes the fingerprint, so the beats cache is never
    served for data other than what it was cut from. Large signal files are not read (too slow for
    every run); their size and time change when they are rewritten.
    """
    out = []
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError as exc:
            raise PluginError(f"{f}: file is missing") from exc
        digest = hashlib.sha256(f.read_bytes()).hexdigest()[:16] if st.st_size <= SMALL_FILE else ""
        out.append((f.name if f.parent.name == "" else f"{f.parent.name}/{f.name}", st.st_size, st.st_mtime_ns, digest))
    return out


def load_beats(dataset: Dataset, cache: Path) -> tuple[Beats, float, bool]:
    """All beats of a dataset, from the on-disk cache when its settings and raw files were seen before.

    Returns the beats, the seconds it took, and whether the cache served them. A damaged cache entry
    is reported, deleted and cut again from the records.
    """
    start = time.perf_counter()
    key = cache_key(dataset.settings(), fingerprint(dataset.files()))
    path = cache / "beats" / f"{dataset.name}-{key}.npz"
    with entry_lock(path):
        a = verified(load_arrays, path)
        if a is not None:
            return Beats(a["x"], a["y"], a["groups"]), time.perf_counter() - start, True
        beats = dataset.load()
        save_arrays(path, x=beats.x, y=beats.y, groups=beats.groups.astype(str))
    return beats, time.perf_counter() - start, False


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
