"""One training harness for every model: same data, seeds, folds, batches, devices and checkpoint rules.

Model selection never sees the test set: each fold's validation beats are real training beats
(never SMOTE output), scored by balanced accuracy (mean per-class sensitivity; our choice, since
the paper says only "best validation score" and plain accuracy would reward predicting N).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ecgbench.api import Beats, PluginError
from ecgbench.data import smote

__all__ = ["build", "fit", "predict", "classifier_step", "default_optimizers", "balanced_accuracy", "FitResult"]


def build(model_cls: type, n_classes: int, window: int, seed: int) -> nn.Module:
    """A fresh model, seeded so that two builds with one seed hold the same weights."""
    torch.manual_seed(seed)
    model = model_cls(n_classes, window)
    if not isinstance(model, nn.Module):
        raise PluginError(f"model {model_cls.__name__} built a {type(model).__name__}, expected a torch.nn.Module")
    return model


def default_optimizers(model: nn.Module) -> list[torch.optim.Optimizer]:
    """Adam with the model's own paper's settings (class attributes `lr`, `betas`)."""
    return [torch.optim.Adam(model.parameters(), lr=getattr(model, "lr", 1e-3), betas=getattr(model, "betas", (0.9, 0.999)))]


def classifier_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacked: torch.Tensor,
                    optimizers: list[torch.optim.Optimizer]) -> float:
    """The standard step for a CNN: cross-entropy on clean and attacked beats alike."""
    opt = optimizers[0]
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray | torch.Tensor, device: torch.device, batch: int = 2048) -> np.ndarray:
    """Logits for beats [n, window] or [n, 1, window], in eval mode."""
    model.eval()
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim == 2:
        x = x[:, None]
    out = [model(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    present = [c for c in range(n_classes) if (y == c).any()]
    return float(np.mean([(pred[y == c] == c).mean() for c in present])) if present else float("nan")


@dataclass
class FitResult:
    state: dict[str, torch.Tensor]
    info: dict[str, Any]


def _training_set(model: nn.Module, train: Beats, attacked: Beats | None, smote_target: int, seed: int) -> Beats:
    """Real beats, balanced by the model's own `augment` or by SMOTE, plus attacked copies (paper 3.1)."""
    if hasattr(model, "augment"):
        train = model.augment(train, seed)
    elif getattr(model, "oversample", "smote") == "smote":
        train = smote(train, smote_target, seed)
    if attacked is not None and len(attacked):
        train = Beats.concat([train, attacked])
    return train


def fit(model_cls: type, n_classes: int, window: int, train: Beats, folds: list[tuple[np.ndarray, np.ndarray]], *,
        attacked: Beats | None = None, attacked_source: np.ndarray | None = None, epochs: int, batch_size: int,
        smote_target: int, device: torch.device, seed: int, progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> FitResult:
    """Train one model per fold and keep the checkpoint with the best validation score over all folds.

    `attacked` holds adversarial copies of the training beats at positions `attacked_source`; a copy
    joins a fold's training side only if its clean original does, and its validation side likewise.
    """
    best: FitResult | None = None
    start = time.perf_counter()
    epoch_seconds: list[float] = []
    for fold, (tr, va) in enumerate(folds):
        model = build(model_cls, n_classes, window, seed + fold).to(device)
        adv_tr = adv_va = None
        if attacked is not None and attacked_source is not None:
            adv_tr = attacked.take(np.flatnonzero(np.isin(attacked_source, tr)))
            adv_va = attacked.take(np.flatnonzero(np.isin(attacked_source, va)))
        data = _training_set(model, train.take(tr), adv_tr, smote_target, seed + fold)
        val = Beats.concat([train.take(va)] + ([adv_va] if adv_va is not None else []))
        x = torch.as_tensor(data.x, dtype=torch.float32, device=device)[:, None]
        y = torch.as_tensor(data.y, dtype=torch.long, device=device)
        flag = torch.as_tensor(data.attacked, dtype=torch.long, device=device)
        optimizers = model.configure_optimizers() if hasattr(model, "configure_optimizers") else default_optimizers(model)
        step = getattr(model, "training_step", None) or (lambda *a: classifier_step(model, *a))
        gen = torch.Generator(device="cpu").manual_seed(seed + fold)
        bar = tqdm(range(epochs), desc=f"train {model_cls.__name__} fold {fold + 1}/{len(folds)}", disable=not progress, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(len(y), generator=gen).to(device)
            losses = [step(x[b], y[b], flag[b], optimizers) for b in order.split(batch_size)]
            score = balanced_accuracy(val.y, predict(model, val.x, device).argmax(1), n_classes)
            epoch_seconds.append(time.perf_counter() - t0)
            record = {"fold": fold, "epoch": epoch + 1, "loss": float(np.mean(losses)), "val_balanced_accuracy": score}
            bar.set_postfix(loss=f"{record['loss']:.4f}", val=f"{score:.3f}")
            if on_epoch:
                on_epoch(record)
            if best is None or score > best.info["val_balanced_accuracy"]:
                state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                best = FitResult(state, {**record, "train_counts": data.counts(n_classes), "n_train": len(data)})
    assert best is not None, "fit needs at least one fold and one epoch"
    best.info.update(
        seconds=time.perf_counter() - start,
        seconds_per_epoch=float(np.mean(epoch_seconds)),
        n_params=sum(p.numel() for p in model.parameters()),
    )
    return best
