"""A classifier from someone else's pipeline: plain PyTorch, nothing of ecgbench in it.

It declares what it was trained on (`expects`), so `ecgbench evaluate` can check the beats fit it.
"""
import torch
import torch.nn as nn


class TinyNet(nn.Module):
    """Two convolutions and a linear head over 280-sample beats in [0, 1] (MIT-BIH at 360 Hz), four AAMI classes."""

    expects = {"window": 280, "rate": 360, "value_range": (0.0, 1.0)}

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(1, 16, 7, padding=3), nn.ReLU(), nn.MaxPool1d(4),
                                      nn.Conv1d(16, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(8))
        self.head = nn.Linear(16 * 8, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, 1, 280] -> logits [batch, n_classes]
        return self.head(self.features(x).flatten(1))
