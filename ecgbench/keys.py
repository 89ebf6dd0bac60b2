"""Content keys: every task is named by a hash of what changes its answer.

`Keys` loads and checks each dataset once (the beats and their content digest, then the split of
each seed), and names trainings, static sets and cells by what they depend on: the data, the
profile, the plugin's code and version, the attack's parameters. Equal keys are one task, and a
cached output with another key is never served.
"""
from __future__ import annotations

import hashlib
import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgbench import log
from ecgbench.api import Attack, Beats
from ecgbench.contracts import check_beats
from ecgbench.data import Splits, load_beats, prepare
from ecgbench.errors import one_line
from ecgbench.plan import Cell, RunConfig, build_attack, parse_attack, seed_profile, trains_on_static
from ecgbench.profiles import Profile
from ecgbench.registry import Registry, RegistryError, registry as default_registry
from ecgbench.store import cache_key

__all__ = ["DataContext", "Keys", "code_hash", "resolve_device", "beats_digest", "eval_index"]


def code_hash(obj: Any) -> str:
    """Hash of the source file that defines a plugin, so editing a plugin invalidates its cached results."""
    try:
        return cache_key(Path(inspect.getsourcefile(obj) or "").read_text())
    except (OSError, TypeError):
        return "unknown"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine")
    return torch.device(name)


def beats_digest(beats: Beats) -> str:
    """Content hash of the beats: what the checkpoints and cells were computed from, on any machine."""
    h = hashlib.sha256()
    for a in (beats.x, beats.y, beats.groups.astype(str)):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@dataclass
class DataContext:
    dataset: Any
    splits: Splits
    x_test: torch.Tensor
    settings: dict
    notes: list[str] = field(default_factory=list)


def _data_profile(p: Profile) -> dict:
    return {k: getattr(p, k) for k in ("subset", "train_cap", "test_cap", "folds", "val_fraction", "seed")}


def _train_profile(p: Profile) -> list:
    extra = [p.patience] if p.patience is not None else []
    return [p.epochs, p.batch_size, p.smote_target, *extra]


class Keys:
    """Loads and checks each dataset once, then names every task by its content key."""

    def __init__(self, cfg: RunConfig, reg: Registry | None = None) -> None:
        self.cfg, self.reg = cfg, reg or default_registry
        self._beats: dict[str, tuple[Any, Beats, str]] = {}
        self._data: dict[tuple[str, int], DataContext] = {}

    def profile(self, seed: int) -> Profile:
        return seed_profile(self.cfg.profile, seed)

    def beats(self, name: str) -> tuple[Any, Beats, str]:
        """The dataset's beats, read (or served from a verified cache) and checked: a fault stops the run here."""
        if name not in self._beats:
            p = self.cfg.profile
            cls = self.reg.get("datasets", name)
            records = getattr(cls, "smoke_records", None) if p.subset else None
            dataset = cls(self.cfg.data_dir, records=records)
            beats, seconds, hit = load_beats(dataset, self.cfg.cache)
            check_beats(beats, name, dataset.window, len(dataset.classes), dataset.value_range)
            log.info(f"{name}: {len(beats)} beats loaded in {seconds:.2f} s ({'cache' if hit else 'raw records'})")
            self._beats[name] = (dataset, beats, beats_digest(beats))
        return self._beats[name]

    def data(self, name: str, seed: int) -> DataContext:
        """Split, caps and folds for one seed (the split and the caps are drawn with it)."""
        if (name, seed) not in self._data:
            dataset, beats, digest = self.beats(name)
            p = self.profile(seed)
            splits = prepare(dataset, beats, self.cfg.split, seed=p.seed, train_cap=p.train_cap, test_cap=p.test_cap,
                             n_folds=p.folds, val_fraction=p.val_fraction)
            settings = {"dataset": dataset.settings(), "beats": digest, "split": self.cfg.split, "profile": _data_profile(p)}
            ctx = DataContext(dataset, splits, torch.as_tensor(splits.test.x)[:, None], settings)
            counts = splits.train.counts(len(dataset.classes))
            want = min(p.train_cap, p.smote_target) if p.train_cap else 0  # a cap the class cannot fill
            ctx.notes = [f"{name}: {n} real {c} training beats, fewer than the cap of {want}; using what there is"
                         for c, n in zip(dataset.classes, counts) if n < want]
            self._data[(name, seed)] = ctx
        return self._data[(name, seed)]

    def problem(self, cell: Cell) -> str | None:
        """Why a cell cannot run at all (a plugin that does not load or an attack that does not build), else None."""
        try:
            self.reg.get("models", cell.model)
            if cell.mode != "clean":
                self.reg.get("models", self.cfg.source_model)
            if cell.attack:
                build_attack(cell.attack, self.profile(cell.seed), self.reg, cell.eps)
        except Exception as exc:  # noqa: BLE001 - reported in the cell, the run goes on
            return one_line(exc, cell, self.reg)
        return None

    def train_spec(self, dataset: str, model: str, static_key: str | None, seed: int, attack: str | None = None) -> dict:
        ctx, p = self.data(dataset, seed), self.profile(seed)
        entry = self.reg.entry("models", model)
        key = cache_key("model", ctx.settings, model, entry.value, entry.version, code_hash(self.reg.get("models", model)),
                        static_key, *_train_profile(p))
        return {"key": key, "dataset": dataset, "model": model, "seed": seed, "static_key": static_key,
                "attack": attack if static_key else None}

    def static_spec(self, dataset: str, attack: str, seed: int, source_key: str) -> dict:
        ctx, p = self.data(dataset, seed), self.profile(seed)
        a = build_attack(attack, p, self.reg)
        key = cache_key("static", ctx.settings, source_key, a.config(), code_hash(type(a)), p.static_train_cap,
                        *_subset_key(a, p))
        return {"key": key, "dataset": dataset, "attack": attack, "attack_name": a.name, "seed": seed,
                "source": self.cfg.source_model, "source_key": source_key}

    def cell_key(self, cell: Cell) -> str:
        """Everything that changes a cell's answer; a cell file with another key is stale and recomputed."""
        plugins = [(k, n) for k, n in (("datasets", cell.dataset), ("models", cell.model), ("models", self.cfg.source_model),
                                       ("attacks", parse_attack(cell.attack)[0] if cell.attack else None)) if n]
        versions = []
        for kind, name in plugins:
            try:
                versions.append((name, self.reg.entry(kind, name).version, code_hash(self.reg.get(kind, name))))
            except RegistryError:
                versions.append((name, "unloadable"))
        try:
            digest = self.data(cell.dataset, cell.seed).settings["beats"]
        except Exception:  # noqa: BLE001 - a dataset that fails to load fails the run before any cell
            digest = None
        defended = [] if trains_on_static(self.cfg, cell) or cell.mode == "clean" else ["trained on clean beats"]
        return cache_key("cell", asdict(cell), self.cfg.split, self.profile(cell.seed).as_dict(), versions, digest, *defended)


def _subset_key(attack: Attack, p: Profile) -> list:
    return [p.costly_test_cap] if p.costly_test_cap and getattr(attack, "costly", False) else []


def eval_index(y: np.ndarray, attack: Attack | None, p: Profile) -> np.ndarray | None:
    """The fixed stratified subset of test beats a costly attack runs on (`costly_test_cap`), or None for all."""
    cap = p.costly_test_cap
    if attack is None or not cap or not getattr(attack, "costly", False) or len(y) <= cap:
        return None
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=cap, random_state=p.seed, stratify=y)
    return np.sort(idx)
