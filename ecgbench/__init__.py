"""ecgbench: a plugin-based adversarial-robustness benchmark for ECG heartbeat classification.

The Python API (`ecgbench.api`) trains and attacks a registered model in a few lines, through the
same task functions `ecgbench run` uses; see the README's "Python API" section.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
__all__ = ["__version__", "load_split", "train", "attack", "score", "evaluate", "load_model", "Split", "Trained", "Attacked",
           "Evaluation"]


def __getattr__(name: str) -> Any:
    """The API loads on first use, so `ecgbench list` and `--help` never import torch."""
    if name in __all__ and name != "__version__":
        from ecgbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'ecgbench' has no attribute {name!r}")
