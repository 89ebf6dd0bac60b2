"""The Python API: load a dataset's split, train a registered model (or take it from the cache), attack it,
score it. The same task functions the CLI runs, so a notebook's numbers are a run's numbers:

    import ecgbench

    data = ecgbench.load_split("mitbih", profile="smoke")
    kachuee = ecgbench.train("kachuee", data)
    pgd = ecgbench.score(kachuee, attack="pgd")   # the record a cell file holds
    print(pgd["clean_accuracy"], pgd["metrics"]["accuracy"])

Models are trained on clean beats (the `adaptive` protocol); `score` returns a cell record without
writing a results folder. Checkpoints go to the cache (`cache_dir`, else ECGBENCH_CACHE, else
~/.cache/ecgbench), so a second `train` with the same settings is a load.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecgbench.config.attacks import build_attack
from ecgbench.config.run import run_config
from ecgbench.contracts.base import Beats
from ecgbench.contracts.registry import registry
from ecgbench.data.catalog import eval_index
from ecgbench.engine.attack import generate
from ecgbench.execute import cells
from ecgbench.execute.worker import Worker
from ecgbench.plan.cells import Cell
from ecgbench.plan.graph import Planner
from ecgbench.plan.tasks import TrainTask

__all__ = ["Split", "Trained", "Attacked", "load_split", "train", "attack", "score"]


@dataclass(frozen=True)
class Split:
    """One dataset's prepared split at one seed: real training beats (before oversampling) and test beats."""

    dataset: str
    seed: int
    train: Beats
    test: Beats
    classes: tuple[str, ...]
    worker: Worker  # the catalog, cache and device the split was made with

    def __repr__(self) -> str:
        return f"Split({self.dataset!r}, seed={self.seed}, train={len(self.train)} beats, test={len(self.test)} beats)"


@dataclass(frozen=True)
class Trained:
    """A trained model, its training record, its weights' digest, and the training task (its key names the checkpoint)."""

    name: str
    model: torch.nn.Module
    info: dict
    weights: str
    task: TrainTask
    data: Split

    @property
    def key(self) -> str:
        return self.task.key


@dataclass(frozen=True)
class Attacked:
    """Adversarial test beats (`x`, [n, window]) with their labels, the test indices they come from, and the attack's budget stats."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    stats: dict


def load_split(dataset: str = "mitbih", *, split: str = "random", profile: str = "quick", seed: int | None = None,
               data_dir: str | Path | None = None, cache_dir: str | Path | None = None, device: str = "auto") -> Split:
    """Read (or load from the cache) and check a registered dataset, then split, cap and fold it as `profile` says.

    `data_dir` defaults to ECGBENCH_DATA; `profile` is a built-in name (smoke, quick, standard, paper) or a
    .toml path; `seed` defaults to the profile's.
    """
    cfg = run_config({"datasets": dataset, "models": "all", "attacks": "", "modes": "adaptive", "split": split,
                      "profile": profile, "seeds": None if seed is None else str(seed),
                      "data_dir": None if data_dir is None else str(data_dir),
                      "cache_dir": None if cache_dir is None else str(cache_dir), "device": device}, progress=False)
    worker = Worker(cfg)
    seed = cfg.seed_list()[0]
    ctx = worker.catalog.data(cfg.datasets[0], seed)
    return Split(cfg.datasets[0], seed, ctx.splits.train, ctx.splits.test, tuple(ctx.dataset.classes), worker)


def train(model: str, data: Split) -> Trained:
    """The registered `model` trained on `data`'s clean training beats: from the cache if trained before, else now."""
    task = _planner(data).train(data.dataset, model, data.seed)
    net, info, weights = data.worker.model(task)
    return Trained(model, net, info, weights, task, data)


def attack(trained: Trained, spec: str, *, eps: float | None = None) -> Attacked:
    """Attack `trained` white-box on its test beats with the attack `spec` (`pgd`, `square@art`, ...) at `eps`
    (default: the attack's own budget). Costly attacks run on the profile's fixed stratified subset."""
    w, data = trained.data.worker, trained.data
    p = w.cfg.profile.with_seed(data.seed)
    a = build_attack(spec, p, w.reg, eps)
    sub = eval_index(data.test.y, a, p)
    idx = np.arange(len(data.test)) if sub is None else sub
    x, y = data.test.x[idx], data.test.y[idx]
    ctx = w.catalog.data(data.dataset, data.seed)
    x_adv, stats = generate(trained.model, a, torch.as_tensor(x)[:, None], y, ctx.dataset.value_range, seed=p.seed,
                            batch=p.attack_batch, device=w.device, desc=f"{a.label} vs {trained.name}")
    return Attacked(x_adv, y, idx, stats)


def score(trained: Trained, attack: str | None = None, *, eps: float | None = None, detector: bool = False) -> dict:
    """The record a cell file holds for `trained`: clean (no `attack`) or under an adaptive `attack`.

    With `detector`, the model and its attack detector are attacked as one (`adaptive-detect`). A failure
    is a record with `status` "failed" and a one-line `error`, as in a run.
    """
    data = trained.data
    mode = "clean" if attack is None else "adaptive-detect" if detector else "adaptive"
    task = _planner(data).cell(Cell(data.dataset, trained.name, attack, mode, data.seed, eps))
    return cells.record(data.worker, task)


def _planner(data: Split) -> Planner:
    w = data.worker
    return Planner(w.cfg, registry, w.catalog)
