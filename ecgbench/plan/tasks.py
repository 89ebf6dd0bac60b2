"""The kinds of task, typed: train a model, train several as one pack, make a static attacked set, score a cell.

Each task carries its content `key` and the tasks it needs (so a worker never works them out
again), and `deps` names those by key for the scheduler. A task is plain data: it pickles to a
worker process or a Ray node unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

from ecgbench.plan.cells import Cell

__all__ = ["TrainTask", "PackTask", "StaticTask", "CellTask", "Task"]


@dataclass(frozen=True)
class TrainTask:
    """Fit `model` on the clean training beats of `dataset` (seed `seed`), plus the attacked beats of `statics`.

    No static set: the model trained on clean beats. One: the paper's protocol for that attack.
    Every attack's: the paper's defence (3.1), E'x = Ex + Exadv.
    """

    key: str
    dataset: str
    model: str
    seed: int
    statics: tuple["StaticTask", ...] = ()
    error: str | None = None  # known before running (a plugin that does not load): the task fails at once
    pack: str | None = None  # the key of the `PackTask` that trains it (then this task only loads its checkpoint)
    kind: ClassVar[str] = "train"

    @property
    def deps(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.statics) + ((self.pack,) if self.pack else ())

    @property
    def trained_on(self) -> str:
        """How the model was trained, as a cell records it."""
        if not self.statics:
            return "clean"
        if len(self.statics) == 1:
            return f"clean + {self.statics[0].attack} static set"
        return f"clean + static sets of {', '.join(s.attack for s in self.statics)}"

    @property
    def label(self) -> str:
        on = "" if not self.statics else f" on {self.trained_on}"
        return f"train {self.dataset}/{self.model}{on} seed {self.seed}"


@dataclass(frozen=True)
class PackTask:
    """Fit the `members` (trainings of one model class on one dataset, each with its own data and seed) as one
    packed model (`engine.pack`, issue 19); each member's checkpoint is then what its own training would save."""

    key: str
    members: tuple[TrainTask, ...]
    error: str | None = None
    kind: ClassVar[str] = "pack"

    @property
    def model(self) -> str:
        return self.members[0].model

    @property
    def dataset(self) -> str:
        return self.members[0].dataset

    @property
    def seed(self) -> int:
        """The first member's seed (what a profile needs; each member trains with its own)."""
        return self.members[0].seed

    @property
    def deps(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d for m in self.members for d in m.deps))

    @property
    def label(self) -> str:
        seeds = sorted({m.seed for m in self.members})
        return f"train {self.dataset}/{self.model} x {len(self.members)} packed (seeds {', '.join(map(str, seeds))})"


@dataclass(frozen=True)
class StaticTask:
    """Attacked copies of training and test beats, made once with `attack` against `source`'s model (paper 3.1)."""

    key: str
    dataset: str
    attack: str  # the attack spec
    attack_name: str  # its registered name (names the cache file)
    seed: int
    source: TrainTask  # the model the attack is made against
    error: str | None = None
    kind: ClassVar[str] = "static"

    @property
    def deps(self) -> tuple[str, ...]:
        return (self.source.key,)

    @property
    def label(self) -> str:
        return f"static set {self.dataset}/{self.attack} vs {self.source.model} seed {self.seed}"


@dataclass(frozen=True)
class CellTask:
    """Attack and score one cell with the model `train` made (and, in static mode, `static`'s test set)."""

    key: str
    cell: Cell
    cell_key: str  # what the cell file records; a file with another key is stale
    path: str  # the cell file
    train: TrainTask | None = None  # None only when the cell cannot run (`error`)
    static: StaticTask | None = None
    error: str | None = None
    kind: ClassVar[str] = "cell"

    @property
    def deps(self) -> tuple[str, ...]:
        return tuple(t.key for t in (self.static, self.train) if t is not None)

    @property
    def label(self) -> str:
        return self.cell.label


Task = Union[TrainTask, PackTask, StaticTask, CellTask]
