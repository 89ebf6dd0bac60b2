"""Classifier and attack detector as one model, for the `adaptive-detect` mode (Carlini & Wagner 2017)."""
from __future__ import annotations

import torch

__all__ = ["DetectorAware", "DetectorAwareLoss"]


class DetectorAwareLoss(torch.nn.CrossEntropyLoss):
    """What a detector-aware gradient attack maximises: the classifier's cross-entropy minus the detector's margin.

    On DetectorAware's K+1 logits: CE over the K classes, minus relu(d_attacked - d_clean), so the
    ascent raises the loss of the true class while pushing the beat back under the detector's
    threshold (Carlini & Wagner 2017, section 5). A CrossEntropyLoss subclass, so ART hands it
    index labels; used by the ART gradient attacks (`adapters.art_classifier`).
    """

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z, flag_margin = logits[:, :-1], logits[:, -1] - logits[:, :-1].max(1).values
        per_beat = torch.nn.functional.cross_entropy(z, y.long(), reduction="none") - torch.relu(flag_margin)
        return {"none": per_beat, "sum": per_beat.sum()}.get(self.reduction, per_beat.mean())


class DetectorAware(torch.nn.Module):
    """Classifier and detector as one K+1-way model: class K ("detected") wins when the detector fires.

    Logit K is max_j z_j + (d_attacked - d_clean), Carlini & Wagner's (2017) construction, so an
    untargeted attack on this model must cross a class boundary without tripping the detector.
    ART's gradient attacks maximise `attack_loss`, which never rewards a step into class K; the
    other attacks see only the K+1 logits and may end in K, where the beat counts as robust.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.attack_loss = DetectorAwareLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, d = self.model(x), self.model.detect(x)
        return torch.cat([z, (z.max(1).values + d[:, 1] - d[:, 0])[:, None]], 1)
