"""Kachuee, Fazeli & Sarrafzadeh 2018, "ECG heartbeat classification: a deep transferable representation" (ICHI).

Follows the paper's Fig. 2: Conv(32, k5), five residual blocks [Conv 32 k5 same, ReLU, Conv 32 k5
same, + skip, ReLU, MaxPool(5, stride 2)], then FC 32, FC 32, FC classes. On 187 samples the
five pools give 187 -> 92 -> 44 -> 20 -> 8 -> 2 steps and a 64-wide flatten, the paper's
arithmetic. Optimiser: Adam lr 1e-3 (paper: Adam, lr 0.001, decayed; we keep it constant, our
choice). The flatten size is computed from the window, so any window length works.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ecgbench.contracts import Model


class ResidualBlock(nn.Module):
    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 5, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, 5, padding=2)
        self.pool = nn.MaxPool1d(5, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(x + self.conv2(F.relu(self.conv1(x)))))


class Kachuee(Model):
    """Residual 1D CNN of Kachuee et al. 2018; 53k parameters on 280-sample beats, 4 classes."""

    lr = 1e-3  # Kachuee 2018, section III-B

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__(n_classes, window)
        self.stem = nn.Conv1d(1, 32, 5, padding=2)
        self.blocks = nn.Sequential(*(ResidualBlock(32) for _ in range(5)))
        length = window
        for _ in range(5):
            length = (length - 5) // 2 + 1
        if length < 1:
            raise ValueError(f"kachuee needs a window of at least 65 samples, got {window}")
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * length, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))
