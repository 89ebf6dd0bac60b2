"""The training task: a model fitted on clean beats (or clean + a static set), checkpointed in the verified cache."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgbench import log
from ecgbench.contracts.base import Beats, PluginError
from ecgbench.contracts.outside import Outside, check_expects, load_into, outside_of
from ecgbench.engine.accel import accelerate
from ecgbench.engine.train import fit
from ecgbench.execute.context import Context
from ecgbench.execute.saving import checkpoints
from ecgbench.plan.tasks import TrainTask
from ecgbench.store.io import verified
from ecgbench.store.layout import checkpoint_path, drop_state, read_checkpoint, save_checkpoint
from ecgbench.store.locks import entry_lock

__all__ = ["train"]


def train(w: Context, task: TrainTask) -> tuple[torch.nn.Module, dict, str]:
    """Load the checkpoint of `task`, or fit it (making its static sets first if needed) and save it; ready for eval.

    Returns the model, its training record and its weights' digest (what the cells record, so that a
    row is known to be one model)."""
    ctx, p = w.catalog.data(task.dataset, task.seed), w.cfg.profile.with_seed(task.seed)
    cls = w.reg.get("models", task.model)
    path = checkpoint_path(w.cfg.cache, task.model, task.key)
    spec = outside_of(w.cfg.outside, task.model)
    with entry_lock(path):
        found = verified(read_checkpoint, path)
        if found is None and spec is not None:
            found = _take_outside(spec, task, cls(ctx.n_classes, ctx.dataset.window), ctx.dataset, path)
        elif found is None:
            statics = [w.static_set(s) for s in task.statics]
            torch.manual_seed(p.seed)
            s = ctx.splits
            result = fit(cls, ctx.n_classes, ctx.dataset.window, s.train, s.folds,
                         attacked=Beats.concat([st["train"] for st in statics]) if statics else None,
                         attacked_source=np.concatenate([st["source"] for st in statics]) if statics else None,
                         epochs=p.epochs, batch_size=p.batch_size, smote_target=p.smote_target, device=w.device,
                         seed=p.seed, progress=log.interactive() and w.cfg.progress, patience=p.patience,
                         on_epoch=lambda r, m=task.model: _log_epoch(m, r), checkpoints=checkpoints(w, path, f"the training of {task.model} on {task.dataset}"))
            w.trainings += 1
            info = {**result.info, **({"defence": cls.defence} if hasattr(cls, "defence") else {})}  # its parameters
            found = (result.state, info, save_checkpoint(path, result.state, info))
            drop_state(path)
            on = "" if not task.statics else f" ({task.trained_on})"
            log.info(f"trained {task.model} on {task.dataset}{on}: val balanced accuracy "
                     f"{result.info['val_balanced_accuracy']:.3f} ({result.info['seconds']:.1f} s)")
    state, info, weights = found
    net = cls(ctx.n_classes, ctx.dataset.window)
    net.load_state_dict(state)
    return accelerate(net.to(w.device), w.device).eval(), info, weights  # CUDA's fast path; the CPU keeps the plain model


def _take_outside(spec: Outside, task: TrainTask, net: torch.nn.Module, dataset: Any, path: Path) -> tuple[dict, dict, str]:
    """An outside model's "training": its checkpoint, checked and loaded as it is, kept in the cache like a trained one."""
    if task.statics:
        raise PluginError(f"model {spec.name} comes from outside and is not retrained: no static or defence cells for it")
    check_expects(spec, dataset)
    load_into(spec, net.net)
    info = {"outside": spec.describe(), "n_params": sum(p.numel() for p in net.net.parameters()), "seconds": 0.0}
    state = net.state_dict()
    weights = save_checkpoint(path, state, info)
    log.info(f"{spec.name}: checkpoint {Path(spec.checkpoint).name} (SHA-256 {spec.sha256[:16]}) loaded as it is, not retrained")
    return state, info, weights


def _log_epoch(model: str, r: dict) -> None:
    """Every 10th epoch at the normal level (a log file shows a long training moving), every one with --verbose."""
    line = f"train {model} fold {r['fold'] + 1} epoch {r['epoch']}: loss {r['loss']:.4f}, val {r['val_balanced_accuracy']:.3f}"
    (log.info if r["epoch"] % 10 == 0 else log.detail)(line)
