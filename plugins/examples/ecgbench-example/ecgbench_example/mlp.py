"""A two-hidden-layer perceptron on raw beats: the smallest model worth attacking.

Not from a paper: a baseline that shows the model contract in a dozen lines. It takes the beat's
samples as features, so it works for any window length and class count the dataset states.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ecgbench.contracts import Model

__all__ = ["ExampleMLP"]


class ExampleMLP(Model):
    """window -> 64 -> 32 -> n_classes, ReLU; about 20k parameters on 280-sample beats.

    Input: beats [batch, 1, window] in the dataset's value range; output: logits [batch, n_classes].
    Trained by the harness's default step (cross-entropy, Adam at `lr`), SMOTE-balanced like the CNNs.
    """

    lr = 3e-3  # our choice: a small MLP tolerates a larger step, so the smoke profile's 2 epochs suffice

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__(n_classes, window)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(window, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
