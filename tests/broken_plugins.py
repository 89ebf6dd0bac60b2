"""Deliberately broken plugins, registered in-process by tests/test_plugins_contract.py.

Each breaks one contract the way a real plugin might; the harness must name it and run on.
Not a test module (no `test_` prefix): pytest imports it only through the registry entries.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ecgbench.contracts import Attack, Model


class WrongShape(Model):
    """Hard-codes the five AAMI classes (N, S, V, F, Q) and ignores `n_classes`: one logit too many.

    Cross-entropy still trains it (labels 0..3 index a 5-wide output), so only the harness's logits
    check at evaluation catches it.
    """

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__(n_classes, window)
        self.fc = nn.Linear(window, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class Raises(Model):
    """A forward pass that raises, as an unfinished plugin would."""

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__(n_classes, window)
        self.fc = nn.Linear(window, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward is not implemented yet")


class Overshoots(Attack):
    """Claims to be bounded but steps 2 * eps: the harness must call that a bug, never a success."""

    name = "overshoots"
    backends = ("torch",)
    defaults = {"eps": 0.01}

    def run_torch(self, model, x, y, value_range):
        return (x + 2 * self.eps).clamp(*value_range)
