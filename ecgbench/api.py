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

import hashlib
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

__all__ = ["Split", "Trained", "Attacked", "Evaluation", "load_split", "train", "attack", "score", "evaluate", "load_model"]


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
                            batch=p.attack_batch_for(a), device=w.device, desc=f"{a.label} vs {trained.name}")
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


@dataclass(frozen=True)
class Evaluation:
    """An outside model's evaluation: its results folder, its leaderboard row, its cell records and failures."""

    out: Path
    row: dict
    cells: list[dict]
    failures: list[str]


def evaluate(model: str | type | torch.nn.Module, checkpoint: str | Path | None = None, *, name: str | None = None,
             dataset: str = "mitbih", split: str = "random", attacks: str = "all", profile: str = "quick",
             seed: int | None = None, eps: str | None = None, out: str | Path | None = None, transform: str = "none",
             expects: dict | None = None, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
             device: str = "auto", threads: int | None = None, progress: bool = False, command: str = "") -> Evaluation:
    """Evaluate a model trained elsewhere on the board's beats, attacks and budgets, without retraining it.

    `model`: a `torch.nn.Module` (its architecture is copied and its weights saved as the checkpoint), a class,
    or `path/to/file.py:Class` / `package.module:Class` with `checkpoint` (a state_dict file). Writes the same
    cell files and report as `ecgbench run` into `out`, so `ecgbench merge` puts the row on any board of the same
    profile and split. `transform` adapts the dataset's beats to the model (`zscore`); `expects` (window, rate,
    value_range) is checked against the dataset's.
    """
    from ecgbench.config.run import run_config as resolve
    from ecgbench.contracts.outside import check_expects, load_into, network, outside
    from ecgbench.execute.runner import Runner
    from ecgbench.report.tables import leaderboard, load_cells
    from ecgbench.report.write import write_report

    options = {"datasets": dataset, "models": "all", "attacks": attacks, "modes": "adaptive", "split": split,
               "profile": profile, "seeds": None if seed is None else str(seed), "eps": eps,
               "data_dir": None if data_dir is None else str(data_dir),
               "cache_dir": None if cache_dir is None else str(cache_dir), "device": device, "threads": threads}
    if isinstance(model, torch.nn.Module) and checkpoint is None:
        checkpoint = _save_given(model, run_config(options, progress=False).cache)
    if checkpoint is None:
        raise ValueError("evaluate: give the checkpoint of the model class (a state_dict file)")
    spec = outside(model, checkpoint, name=name, transform=transform, expects=expects)
    ds = registry.get("datasets", dataset)
    check_expects(spec, ds)  # before any work: beats it was not trained for, or a checkpoint that does not fit
    load_into(spec, network(spec, len(ds.classes), ds.window))
    options["out"] = str(out) if out is not None else f"runs/evaluate-{spec.name}-{dataset}-{profile}"
    if hasattr(spec.load(), "detect"):  # a model with an attack detector: also attacked as one system
        options["modes"] = "adaptive,adaptive-detect"
    cfg = resolve(options, command=command or f"ecgbench.evaluate({spec.target!r})", progress=progress, outside=(spec,))
    manifest = Runner(cfg).run()
    write_report(cfg.out)
    cells = load_cells(cfg.out)
    board = leaderboard(cells)
    mine = board[board["model"] == spec.name] if not board.empty else board
    row = mine.iloc[0].to_dict() if len(mine) else {}
    return Evaluation(cfg.out, row, [c for c in cells if c["cell"]["model"] == spec.name], manifest["failures"])


def _save_given(model: torch.nn.Module, cache: Path) -> Path:
    """A module given in Python: its state_dict saved once in the cache, named by its content, as its checkpoint."""
    import io

    from ecgbench.store.io import atomic_write

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    data = buf.getvalue()
    path = cache / "outside" / f"{type(model).__name__.lower()}-{hashlib.sha256(data).hexdigest()[:16]}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(data))
    return path


def load_model(model: str, *, dataset: str = "mitbih", split: str = "random", seed: int = 0, profile: str | None = None,
               zoo_dir: str | Path | None = None) -> torch.nn.Module:
    """A trained model of the zoo (`ecgbench zoo` lists them), in eval mode on the CPU, its file verified first.

    `model` is a registered model name (`kachuee`) or a zoo entry's full name (`kachuee-mitbih-random-quick-seed0`);
    `profile` None takes the longest-trained one there is."""
    from ecgbench.store import zoo

    named = [e for e in zoo.entries(zoo_dir) if e["name"] == model]
    entry = named[0] if named else zoo.find(model, dataset=dataset, split=split, seed=seed, profile=profile, folder=zoo_dir)
    net = registry.get("models", entry["model"])(len(entry["classes"]), entry["window"])
    net.load_state_dict(zoo.read_state(entry, zoo_dir))
    return net.eval()
