"""The training tasks: a model fitted on clean beats (or clean + static sets), checkpointed in the verified cache;
and a pack of such trainings fitted as one model (issue 19), each member checkpointed as its own training would be."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgbench import log
from ecgbench.contracts.base import Beats, PluginError
from ecgbench.contracts.outside import Outside, check_expects, load_into, outside_of
from ecgbench.engine.accel import accelerate
from ecgbench.engine.pack_train import best_of_folds, fit_packed, fold_members
from ecgbench.engine.train import fit
from ecgbench.execute.context import Context
from ecgbench.execute.saving import checkpoints
from ecgbench.plan.tasks import PackTask, TrainTask
from ecgbench.store.io import verified
from ecgbench.store.layout import checkpoint_path, drop_state, read_checkpoint, save_checkpoint
from ecgbench.store.locks import entry_lock

__all__ = ["train", "train_pack"]


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


def train_pack(w: Context, task: PackTask) -> int:
    """Fit the members of `task` that the cache lacks as one packed model, and save each member's checkpoint
    under its own training's key (in `fit`'s format); returns how many were trained.

    Each member is its training's folds (`fold_members`), its static sets made first; what `fit` keeps of
    them (`best_of_folds`) is saved. The pack's running state is saved beside its own cache entry, and a
    later invocation continues it if the same members are still to train (otherwise it starts afresh)."""
    state_path = checkpoint_path(w.cfg.cache, task.model, task.key)  # its running state lives beside it
    with entry_lock(state_path):  # another run packing the same trainings waits, then finds them done
        todo = [m for m in task.members if verified(read_checkpoint, checkpoint_path(w.cfg.cache, m.model, m.key)) is None]
        if not todo:
            return 0
        cls, p = w.reg.get("models", task.model), w.cfg.profile
        members, owner = [], []
        for i, t in enumerate(todo):
            s, statics = w.catalog.data(t.dataset, t.seed).splits, [w.static_set(st) for st in t.statics]
            members += fold_members(s.train, s.folds, t.seed,
                                    Beats.concat([st["train"] for st in statics]) if statics else None,
                                    np.concatenate([st["source"] for st in statics]) if statics else None)
            owner += [i] * len(s.folds)
        keys = [t.key for t in todo]
        base = checkpoints(w, state_path, f"the packed training of {len(todo)} {task.model} models on {task.dataset}")

        def load() -> dict | None:  # a state saved for other members (the cache changed since) is not continued
            state = base.load()
            return state if state is not None and state.get("members") == keys else None

        ctx = w.catalog.data(task.dataset, todo[0].seed)
        torch.manual_seed(p.seed)
        results = fit_packed(cls, ctx.n_classes, ctx.dataset.window, members, epochs=p.epochs, batch_size=p.batch_size,
                             smote_target=p.smote_target, device=w.device, patience=p.patience,
                             checkpoints=replace(base, load=load, save=lambda state: base.save({**state, "members": keys})),
                             on_epoch=lambda i, r: _log_epoch(f"{task.model} #{owner[i] + 1}", r))
        for i, t in enumerate(todo):
            result = best_of_folds([r for r, o in zip(results, owner) if o == i])
            info = {**result.info, **({"defence": cls.defence} if hasattr(cls, "defence") else {})}
            path = checkpoint_path(w.cfg.cache, t.model, t.key)
            with entry_lock(path):
                save_checkpoint(path, result.state, info)
            on = "" if not t.statics else f" ({t.trained_on})"
            log.info(f"trained {t.model} on {t.dataset}{on} seed {t.seed}, packed ({len(todo)} training(s), {len(members)} "
                     f"members): val balanced accuracy {info['val_balanced_accuracy']:.3f}")
        drop_state(state_path)
    w.trainings += len(todo)
    return len(todo)


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
