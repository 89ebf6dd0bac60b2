"""What a task function needs from the process it runs in (a `Worker` provides it)."""
from __future__ import annotations

from typing import Protocol

import torch

from ecgbench.config.run import RunConfig
from ecgbench.contracts.registry import Registry
from ecgbench.data.catalog import Catalog
from ecgbench.plan.tasks import StaticTask, TrainTask

__all__ = ["Context"]


class Context(Protocol):
    """The run's configuration, the registry, the data catalog and the device, plus the trained models and
    static sets other tasks made (served from memory or the store, made on demand if missing)."""

    cfg: RunConfig
    reg: Registry
    catalog: Catalog
    device: torch.device
    trainings: int  # models fitted here (not served from the cache)
    attack_calls: int  # attacked sets generated here

    def model(self, task: TrainTask) -> tuple[torch.nn.Module, dict, str]: ...

    def static_set(self, task: StaticTask) -> dict: ...
