"""The plugin layer: the contracts a dataset, model or attack implements (`Beats`, `Dataset`, `Model`,
`Attack`, `PluginError`), the registry that finds them, the pluggy hooks, and the checks and test kit.

Plugin authors import the base classes from here: `from ecgbench.contracts import Model`. They load
on first use, so listing plugins never imports torch.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Beats", "Dataset", "Model", "Attack", "Defence", "PluginError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ecgbench.contracts import base

        return getattr(base, name)
    raise AttributeError(f"module 'ecgbench.contracts' has no attribute {name!r}")
