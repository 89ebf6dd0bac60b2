"""The plan: a run's configuration -> a graph of typed, keyed tasks (train, make a static set, score a cell).

Each task is named by its content key (`ecgbench.plan.keys`), so equal keys are one task however
many cells need it. Executors (`ecgbench.execute`) run the graph; the store on disk is the only truth.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ecgbench.config.attacks import build_attack
from ecgbench.config.run import RunConfig
from ecgbench.contracts.errors import one_line
from ecgbench.contracts.registry import Registry, attack_name
from ecgbench.data.catalog import Catalog
from ecgbench.plan import keys
from ecgbench.plan.cells import Cell, cells_of
from ecgbench.plan.packs import pack_trainings, packing
from ecgbench.plan.tasks import CellTask, StaticTask, Task, TrainTask

__all__ = ["Graph", "plan", "Planner"]


@dataclass
class Graph:
    """Tasks by key in dependency order (every task after the tasks it needs)."""

    tasks: dict[str, Task] = field(default_factory=dict)

    def add(self, task: Task) -> Task:
        return self.tasks.setdefault(task.key, task)

    def of_kind(self, kind: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.kind == kind]

    def __len__(self) -> int:
        return len(self.tasks)


class Planner:
    """Builds the typed tasks of a run, keyed by content; shared by the plan, the dry run and the Python API."""

    def __init__(self, cfg: RunConfig, reg: Registry, catalog: Catalog) -> None:
        self.cfg, self.reg, self.catalog = cfg, reg.with_defence_params(cfg.profile.defence_params), catalog  # keys see them
        self._identities: dict[tuple[str, str], list] = {}  # a plugin's source is hashed once per plan
        self._defences: dict[tuple[str, int], tuple[StaticTask, ...]] = {}

    def identity(self, kind: str, name: str) -> list:
        """`keys.identity`, memoised: a plan asks for each plugin's once per task, and it reads and hashes its source."""
        if (kind, name) not in self._identities:
            self._identities[(kind, name)] = keys.identity(self.reg, kind, name)
        return self._identities[(kind, name)]

    def train(self, dataset: str, model: str, seed: int, statics: tuple[StaticTask, ...] = ()) -> TrainTask:
        """The training of `model` on clean beats, plus the attacked training beats of `statics` if any."""
        data = self.catalog.data(dataset, seed).settings
        key = keys.train_key(data, self.identity("models", model), [s.key for s in statics] or None,
                             self.cfg.profile.with_seed(seed))
        return TrainTask(key, dataset, model, seed, tuple(statics))

    def static(self, dataset: str, attack: str, seed: int) -> StaticTask:
        """The static set of `attack`, made against the source model trained on clean beats (paper 2.3, 3.1)."""
        source = self.train(dataset, self.cfg.source_model, seed)
        p = self.cfg.profile.with_seed(seed)
        a = build_attack(attack, p, self.reg)
        key = keys.static_key(self.catalog.data(dataset, seed).settings, source.key, a.config(),
                              self.identity("attacks", a.name), p, bool(getattr(a, "costly", False)))
        return StaticTask(key, dataset, attack, a.name, seed, source)

    def cell(self, cell: Cell) -> CellTask:
        """The task that scores `cell`, with the training (and static sets) it needs; a cell that cannot run carries why."""
        path, ckey = str(cell.path(self.cfg.out)), self.cell_key(cell)
        err = self.problem(cell)
        if err is not None:
            return CellTask(f"cell:{cell.label}", cell, ckey, path, error=err)
        static = self.static(cell.dataset, cell.attack, cell.seed) if cell.training == "static" else None
        statics = (static,) if static else self.defence(cell.dataset, cell.seed) if cell.training == "defence" else ()
        return CellTask(f"cell:{cell.label}", cell, ckey, path, self.train(cell.dataset, cell.model, cell.seed, statics), static)

    def defence(self, dataset: str, seed: int) -> tuple[StaticTask, ...]:
        """The static sets the paper's defence trains on: every attack of the run's that builds, in the run's order
        (an attack whose plugin does not load fails its own cells, and is left out of the defence)."""
        if (dataset, seed) not in self._defences:
            self._defences[(dataset, seed)] = tuple(self.static(dataset, a, seed) for a in self.cfg.attacks if self._builds(a, seed))
        return self._defences[(dataset, seed)]

    def _builds(self, spec: str, seed: int) -> bool:
        try:
            build_attack(spec, self.cfg.profile.with_seed(seed), self.reg)
        except Exception:  # noqa: BLE001 - reported in that attack's own cells
            return False
        return True

    def problem(self, cell: Cell) -> str | None:
        """Why a cell cannot run at all (a plugin that does not load or an attack that does not build), else None."""
        try:
            self.reg.get("models", cell.model)
            if cell.training != "clean":
                self.reg.get("models", self.cfg.source_model)
            if cell.attack:
                build_attack(cell.attack, self.cfg.profile.with_seed(cell.seed), self.reg, cell.eps)
        except Exception as exc:  # noqa: BLE001 - reported in the cell, the run goes on
            return one_line(exc, self.reg, dataset=cell.dataset, model=cell.model, attack=cell.attack)
        return None

    def cell_key(self, cell: Cell) -> str:
        """Everything that changes a cell's answer; a cell file with another key is stale and recomputed."""
        defended = cell.training != "clean"
        attacks = [s.attack for s in self.defence(cell.dataset, cell.seed)] if cell.training == "defence" else []
        attacks += [cell.attack] if cell.attack else []
        plugins = [self.identity(kind, name) for kind, name in
                   [("datasets", cell.dataset), ("models", cell.model), ("models", self.cfg.source_model if defended else None)]
                   + [("attacks", attack_name(a)) for a in dict.fromkeys(attacks)] if name]
        try:
            digest = self.catalog.data(cell.dataset, cell.seed).settings["beats"]
        except Exception:  # noqa: BLE001 - a dataset that fails to load fails the run before any cell
            digest = None
        return keys.cell_key(cell.as_dict(), self.cfg.split, self.cfg.profile.with_seed(cell.seed), plugins, digest, defended)


def plan(cfg: RunConfig, reg: Registry, catalog: Catalog) -> Graph:
    """The task graph of a run, every task after the tasks it needs.

    Each row's cells share one training: on clean beats, or (with `static` among the modes) the paper's
    defence, on clean beats plus every attack's static set made against the source model (3.1). A
    static cell is the paper's protocol: the model trained with that attack's static set, scored on
    its static test set. Without `static`, no static set is made.
    """
    graph, planner = Graph(), Planner(cfg, reg, catalog)
    for cell in cells_of(cfg, reg):
        task = planner.cell(cell)
        if task.train is not None:
            for static in task.train.statics:
                graph.add(static.source)
                graph.add(static)
            graph.add(task.train)
        graph.add(task)
    if packing(cfg):
        graph.tasks = pack_trainings(graph.tasks, cfg, planner.reg, cfg.profile.folds)
    return graph
