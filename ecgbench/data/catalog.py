"""The data catalog: each dataset's beats read once (or served from the verified cache) and checked, then
split, capped and folded per seed. What the tasks train and test on, and what the keys hash.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecgbench import log
from ecgbench.config.profiles import Profile
from ecgbench.contracts.base import Attack, Beats, Dataset, PluginError
from ecgbench.contracts.checks import check_beats
from ecgbench.contracts.registry import Registry
from ecgbench.data.beats import Splits, prepare
from ecgbench.store.io import cache_key, load_arrays, save_arrays, verified
from ecgbench.store.layout import beats_path
from ecgbench.store.locks import entry_lock

__all__ = ["Catalog", "DataContext", "fingerprint", "load_beats", "beats_digest", "eval_index", "stratified_subset"]


BEATS_FORMAT = 2  # 2: with each beat's scale in microvolts (issue 23); in the beats cache's key only, not the training keys
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
    path = beats_path(cache, dataset.name, cache_key(dataset.settings(), fingerprint(dataset.files()), BEATS_FORMAT))
    with entry_lock(path):
        a = verified(load_arrays, path)
        if a is not None:
            return Beats(a["x"], a["y"], a["groups"], scale=a["scale"] if "scale" in a else None), time.perf_counter() - start, True
        beats = dataset.load()
        scale = {} if beats.scale is None else {"scale": beats.scale}
        save_arrays(path, x=beats.x, y=beats.y, groups=beats.groups.astype(str), **scale)
    return beats, time.perf_counter() - start, False


def beats_digest(beats: Beats) -> str:
    """Content hash of the beats: what the checkpoints and cells were computed from, on any machine."""
    h = hashlib.sha256()
    for a in (beats.x, beats.y, beats.groups.astype(str)):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def eval_index(y: np.ndarray, attack: Attack | None, p: Profile) -> np.ndarray | None:
    """The fixed stratified subset of test beats a costly attack runs on (`costly_test_cap`), or None for all."""
    cap = p.costly_test_cap
    if attack is None or not cap or not getattr(attack, "costly", False) or len(y) <= cap:
        return None
    return stratified_subset(y, cap, p.seed)


def stratified_subset(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """The sorted indices of a fixed stratified subset of `size` beats (all of them if there are no more)."""
    if size >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=size, random_state=seed, stratify=y)
    return np.sort(idx)


@dataclass
class DataContext:
    """One dataset at one seed: the dataset plugin, its prepared split, and the settings its keys hash."""

    dataset: Dataset
    splits: Splits
    settings: dict  # the dataset's settings, the beats' digest, the split and the data-shaping profile fields
    notes: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.dataset.classes)


def _data_profile(p: Profile) -> dict:
    return {k: getattr(p, k) for k in ("subset", "train_cap", "test_cap", "folds", "val_fraction", "seed")}


class Catalog:
    """Loads and checks each dataset once, then prepares its split per seed; a fault stops the run at the first load."""

    def __init__(self, reg: Registry, data_dir: Path, cache: Path, profile: Profile, split: str) -> None:
        self.reg, self.data_dir, self.cache, self.profile, self.split = reg, Path(data_dir), Path(cache), profile, split
        self._beats: dict[str, tuple[Dataset, Beats, str]] = {}
        self._data: dict[tuple[str, int], DataContext] = {}

    def beats(self, name: str) -> tuple[Dataset, Beats, str]:
        """The dataset's beats, read (or served from a verified cache) and checked, with their content digest."""
        if name not in self._beats:
            cls = self.reg.get("datasets", name)
            records = getattr(cls, "smoke_records", None) if self.profile.subset else None
            dataset = cls(self.data_dir, records=records)
            beats, seconds, hit = load_beats(dataset, self.cache)
            check_beats(beats, name, dataset.window, len(dataset.classes), dataset.value_range)
            log.info(f"{name}: {len(beats)} beats loaded in {seconds:.2f} s ({'cache' if hit else 'raw records'})")
            self._beats[name] = (dataset, beats, beats_digest(beats))
        return self._beats[name]

    def data(self, name: str, seed: int) -> DataContext:
        """Split, caps and folds for one seed (the split and the caps are drawn with it)."""
        if (name, seed) not in self._data:
            dataset, beats, digest = self.beats(name)
            p = self.profile.with_seed(seed)
            splits = prepare(dataset, beats, self.split, seed=p.seed, train_cap=p.train_cap, test_cap=p.test_cap,
                             n_folds=p.folds, val_fraction=p.val_fraction)
            settings = {"dataset": dataset.settings(), "beats": digest, "split": self.split, "profile": _data_profile(p)}
            ctx = DataContext(dataset, splits, settings)
            counts = splits.train.counts(len(dataset.classes))
            want = min(p.train_cap, p.smote_target) if p.train_cap else 0  # a cap the class cannot fill
            ctx.notes = [f"{name}: {n} real {c} training beats, fewer than the cap of {want}; using what there is"
                         for c, n in zip(dataset.classes, counts) if n < want]
            self._data[(name, seed)] = ctx
        return self._data[(name, seed)]
