"""Unfinished work: a run's time limit as every task sees it, and how a long task saves its state to continue later.

`ecgbench run --time-limit 2h` turns into a `Deadline` (wall-clock seconds since the epoch, so it
means the same in a worker process or on a Ray node). Long loops ask it between steps or batches;
when the next piece of work would not end in time they save what they have and raise `OutOfTime`,
which no task counts as a failure: the task is left for the next invocation, and continues from
the state it saved through its `Checkpoints` (a training: `engine.train.fit`; an attacked set:
`engine.attack.generate`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["Deadline", "OutOfTime", "Checkpoints", "rng_state", "set_rng_state"]


class OutOfTime(Exception):
    """A task stopped because the run's time limit came; its saved progress is continued next time."""


@dataclass(frozen=True)
class Deadline:
    """The moment by which tasks must have stopped (time.time() seconds)."""

    at: float

    def left(self) -> float:
        """Seconds until the deadline (negative once it has passed)."""
        return self.at - time.time()

    def allows(self, seconds: float) -> bool:
        """Whether work expected to take `seconds` ends before the deadline."""
        return time.time() + max(seconds, 0.0) < self.at

    @staticmethod
    def of(at: float | None) -> Deadline | None:
        return None if at is None else Deadline(float(at))


@dataclass
class Checkpoints:
    """Where a long task keeps its state while it runs, and how often (issue 18).

    `load()` gives the last state saved (None: start afresh), `save(state)` stores one. A state is
    saved at the end of an epoch once `epochs` epochs or `seconds` seconds have passed since the
    last save, whichever comes first: five epochs keep the cost small where epochs take seconds,
    five minutes bound what a kill loses where an epoch takes minutes (ECG-ATK-GAN's `standard` epoch
    on a 2-core CPU). When the `deadline` would not leave room for the next step, the state is saved
    mid-epoch and `fit` raises `OutOfTime`. An attacked set saves between batches, every `seconds`
    and when the deadline comes. A state is plain tensors, numbers and lists: it loads with
    `torch.load(weights_only=True)`.
    """

    load: Callable[[], dict | None]
    save: Callable[[dict], None]
    epochs: int = 5
    seconds: float = 300.0
    deadline: Deadline | None = None


def rng_state() -> dict[str, Any]:
    """The global random generators a training step may draw from (dropout, a GAN's noise, numpy): as tensors."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_rest": [int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
