"""Wrap a model for ART and foolbox with the settings both libraries get wrong by default.

See docs/attack-libraries notes: ART needs `input_shape` with the channel axis, `nb_classes` and
`clip_values` (without them PGD leaves [0, 1] silently); its Boundary and HopSkipJump feed float64
under numpy 2 (ART issue #2475); foolbox needs tensors on the model's device and eval mode.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = ["Float32", "art_classifier", "foolbox_model", "to_numpy", "device_of"]


class Float32(nn.Module):
    """Casts input to float32 before the model: ART builds float64 candidates (ART issue #2475)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.float())


def device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float32)


def art_classifier(model: nn.Module, x: torch.Tensor, n_classes: int, value_range: tuple[float, float]) -> Any:
    """An ART PyTorchClassifier with input shape, class count and clip values stated, in eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.estimators.classification import PyTorchClassifier

    model.eval()
    device = device_of(model)
    return PyTorchClassifier(
        model=Float32(model),
        loss=getattr(model, "attack_loss", None) or nn.CrossEntropyLoss(),  # a model may say what to maximise
        input_shape=tuple(x.shape[1:]),
        nb_classes=n_classes,
        clip_values=(float(value_range[0]), float(value_range[1])),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def foolbox_model(model: nn.Module, value_range: tuple[float, float]) -> Any:
    """A foolbox PyTorchModel on the model's own device, model in eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # foolbox 3.3 imports the deprecated scipy.ndimage.filters
        import foolbox

    model.eval()
    return foolbox.PyTorchModel(model, bounds=(float(value_range[0]), float(value_range[1])), device=device_of(model))


def n_classes_of(model: nn.Module, x: torch.Tensor) -> int:
    """Class count read off one forward pass, so an attack needs no side channel."""
    with torch.no_grad():
        return int(model(x[:1]).shape[-1])
