"""The plan: a run's configuration -> a graph of keyed tasks (train, make a static set, score a cell).

Each task is a pure function of its inputs (`ecgbench.tasks`), named by its content key
(`ecgbench.keys`), so equal keys are one task however many cells need it. Executors
(`ecgbench.executors`) run the graph; the store on disk is the only truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ecgbench.api import Attack
from ecgbench.profiles import Profile
from ecgbench.registry import Registry, RegistryError

__all__ = ["MODES", "Cell", "RunConfig", "Task", "Graph", "parse_attack", "build_attack", "plan", "cells_of", "seed_profile",
           "trains_on_static"]

MODES = ("static", "adaptive", "adaptive-detect")
DEFAULT_SOURCE = "ecg-atk-gan"  # paper 2.3: attacks are made against ECG-ATK-GAN's discriminator


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    attack: str | None  # attack spec (`pgd`, `pgd@foolbox`); None for the clean cell
    mode: str  # clean | static | adaptive | adaptive-detect
    seed: int = 0
    eps: float | None = None  # None: the attack's own budget

    @property
    def label(self) -> str:
        extra = (f"/eps={self.eps:g}" if self.eps is not None else "") + (f"/seed={self.seed}" if self.seed else "")
        return f"{self.dataset}/{self.model}/{self.attack or 'none'}/{self.mode}{extra}"

    def path(self, out: Path) -> Path:
        """`cells/<dataset>/<model>/<attack>.<mode>[.eps<e>][.seed<n>].json`; seed 0 at the default eps keeps the old name."""
        attack = (self.attack or "none").replace(":", "+")
        extra = (f".eps{self.eps:g}" if self.eps is not None else "") + (f".seed{self.seed}" if self.seed else "")
        return out / "cells" / self.dataset / self.model / f"{attack}.{self.mode}{extra}.json"


@dataclass
class RunConfig:
    datasets: list[str]
    models: list[str]
    attacks: list[str]
    profile: Profile
    out: Path
    data_dir: Path
    cache: Path
    split: str = "random"
    modes: tuple[str, ...] = MODES
    source: str | None = None  # model the static attacks target; default ecg-atk-gan (paper 2.3)
    device: str = "auto"
    force: bool = False
    retry_failed: bool = False
    progress: bool = True
    command: str = ""
    seeds: tuple[int, ...] = ()  # () -> the profile's seed
    eps: tuple[float, ...] = ()  # () -> each attack's own budget
    executor: str = "serial"  # serial | jobs | ray
    jobs: int = 1
    threads: int = 0  # torch threads per task; 0: torch's choice (serial), cores / jobs (jobs, ray)
    ray_address: str | None = None
    tasks_per_gpu: int = 1
    verbose: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # the resolved configuration file, for run.json

    @property
    def source_model(self) -> str:
        return self.source or DEFAULT_SOURCE

    def seed_list(self) -> tuple[int, ...]:
        return self.seeds or (self.profile.seed,)


def seed_profile(profile: Profile, seed: int) -> Profile:
    """The profile with `seed`: every key hashes the profile, so each seed has its own cache entries."""
    return profile if profile.seed == seed else replace(profile, seed=seed)


def parse_attack(spec: str) -> tuple[str, str | None, str | None]:
    """`pgd@foolbox:variant` -> (`pgd`, `foolbox`, `variant`)."""
    head, _, variant = spec.partition(":")
    name, _, backend = head.partition("@")
    return name, backend or None, variant or None


def build_attack(spec: str, profile: Profile, reg: Registry, eps: float | None = None) -> Attack:
    """The attack for a spec, with the profile's overrides for parameters the variant does not fix, at `eps` if given."""
    name, backend, variant = parse_attack(spec)
    cls = reg.get("attacks", name)
    fixed = cls.variants.get(variant, {}) if variant else {}
    wanted = dict(profile.attack_params.get(name, {}))
    unknown = sorted(set(wanted) - set(cls.defaults))
    if unknown:
        raise ValueError(f"profile {profile.name!r} sets {', '.join(unknown)} for attack {name!r}, which takes {', '.join(cls.defaults)}")
    if eps is not None:
        wanted["eps"] = eps
    overrides = {k: v for k, v in wanted.items() if k not in fixed}
    return cls(backend=backend, variant=variant, **overrides)


@dataclass(frozen=True)
class Task:
    """One unit of work: `kind` train | static | cell, its content `key`, the keys it needs, its inputs."""

    kind: str
    key: str
    deps: tuple[str, ...]
    spec: dict[str, Any]
    error: str | None = None  # known before running (a plugin that does not load): the task fails at once

    @property
    def label(self) -> str:
        s = self.spec
        if self.kind == "cell":
            return Cell(**s["cell"]).label
        if self.kind == "train":
            return f"train {s['dataset']}/{s['model']}" + (f" on {s['attack']} static set" if s.get("attack") else "") + f" seed {s['seed']}"
        return f"static set {s['dataset']}/{s['attack']} vs {s['source']} seed {s['seed']}"


@dataclass
class Graph:
    """Tasks by key in dependency order (every task after the tasks it needs)."""

    tasks: dict[str, Task] = field(default_factory=dict)

    def add(self, task: Task) -> str:
        self.tasks.setdefault(task.key, task)
        return task.key

    def of_kind(self, kind: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.kind == kind]

    def __len__(self) -> int:
        return len(self.tasks)


def cells_of(cfg: RunConfig, reg: Registry) -> list[Cell]:
    """Per seed and dataset: clean cells first, then attack x eps x mode x model.

    `adaptive-detect` only for models with a detector. Bounded attacks run at each `--eps`
    (adaptive modes; the static protocol retrains per set, so it keeps each attack's own budget);
    minimisation attacks run once and are judged at each eps from the L-inf they needed.
    """
    cells = []
    for seed in cfg.seed_list():
        for d in cfg.datasets:
            cells += [Cell(d, m, None, "clean", seed) for m in cfg.models]
            for a in cfg.attacks:
                for mode in cfg.modes:
                    for eps in _eps_list(cfg, reg, a, mode):
                        cells += [Cell(d, m, a, mode, seed, eps) for m in cfg.models
                                  if mode != "adaptive-detect" or _has_detector(reg, m)]
    return cells


def _eps_list(cfg: RunConfig, reg: Registry, spec: str, mode: str) -> list[float | None]:
    if not cfg.eps or mode == "static":
        return [None]
    try:
        attack = build_attack(spec, cfg.profile, reg)
    except Exception:  # noqa: BLE001 - an attack that does not build fails its cells later, once
        return [None]
    if not getattr(attack, "bounded", True):
        return [None]
    return [None if abs(e - attack.eps) < 1e-12 else float(e) for e in cfg.eps]


def _has_detector(reg: Registry, model: str) -> bool:
    try:
        return hasattr(reg.get("models", model), "detect")
    except RegistryError:
        return False


def plan(cfg: RunConfig, keys: Any) -> Graph:
    """The task graph of a run; `keys` (a `tasks.Keys`) names each task by its content key.

    With `static` among the modes, every attacked cell scores the model trained on clean beats plus
    that attack's static set (paper 3.1), made against the source model: static and adaptive cells
    share that checkpoint, so adaptive asks whether the paper's defence holds white-box. Without
    `static`, adaptive cells attack the model trained on clean beats, and no static set is made.
    """
    graph = Graph()
    for cell in cells_of(cfg, keys.reg):
        err = keys.problem(cell)
        deps: list[str] = []
        if err is None:
            static_key = None
            if trains_on_static(cfg, cell):
                src = keys.train_spec(cell.dataset, cfg.source_model, None, cell.seed)
                graph.add(Task("train", src["key"], (), src))
                st = keys.static_spec(cell.dataset, cell.attack, cell.seed, src["key"])
                static_key = graph.add(Task("static", st["key"], (src["key"],), st))
                deps.append(static_key)
            tr = keys.train_spec(cell.dataset, cell.model, static_key, cell.seed, attack=cell.attack)
            deps.append(graph.add(Task("train", tr["key"], (static_key,) if static_key else (), tr)))
        spec = {"cell": _cell_dict(cell), "path": str(cell.path(cfg.out)), "cell_key": keys.cell_key(cell)}
        graph.add(Task("cell", f"cell:{cell.label}", tuple(deps), spec, err))
    return graph


def trains_on_static(cfg: RunConfig, cell: Cell) -> bool:
    """Whether the cell's model is trained on clean plus static attacked beats (the paper's defence)."""
    return cell.mode != "clean" and "static" in cfg.modes


def _cell_dict(cell: Cell) -> dict:
    return {"dataset": cell.dataset, "model": cell.model, "attack": cell.attack, "mode": cell.mode,
            "seed": cell.seed, "eps": cell.eps}
