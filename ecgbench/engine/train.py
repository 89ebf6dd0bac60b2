"""One training harness for every model: same data, seeds, folds, batches, devices and checkpoint rules.

Model selection never sees the test set: each fold's validation beats are real training beats
(never SMOTE output), scored by balanced accuracy (mean per-class sensitivity; our choice, since
the paper says only "best validation score" and plain accuracy would reward predicting N).

On CUDA the loop never waits for the device inside an epoch (issue 10): a step returns its loss as
a detached tensor, the losses are read once per epoch, the data live on the device and each batch
is gathered there (the permutation is drawn on the CPU from the fold's seed, so the CPU and the GPU
see the same batches), models run through `ecgbench.engine.accel.accelerate` (Conv1d as channels-last
Conv2d), and each full batch's step is replayed as a CUDA graph (the default on CUDA since issue 19;
`cuda_graphs=False` or ECGBENCH_CUDA_GRAPHS=0 turns it off). On the CPU the arithmetic is exactly what it was: same batches, same kernels, same float32
losses averaged in float64, so checkpoints are bit-identical to the plain loop's.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from ecgbench.engine.accel import GraphedStep, accelerate, enabled, sync
from ecgbench.engine.steps import batch_of, training_hooks
from ecgbench.engine.progress import Checkpoints, Deadline, OutOfTime, rng_state, set_rng_state
from ecgbench.contracts.base import Beats, PluginError

__all__ = ["build", "fit", "predict", "balanced_accuracy", "training_set", "fold_split", "check_patience", "measure_step",
           "FitResult"]


def build(model_cls: type, n_classes: int, window: int, seed: int) -> nn.Module:
    """A fresh model, seeded so that two builds with one seed hold the same weights."""
    torch.manual_seed(seed)
    model = model_cls(n_classes, window)
    if not isinstance(model, nn.Module):
        raise PluginError(f"model {model_cls.__name__} built a {type(model).__name__}, expected a torch.nn.Module")
    return model


def _mean_loss(losses: list[torch.Tensor | float]) -> float:
    """The mean of an epoch's step losses, read from the device in one transfer.

    Each float32 loss becomes the same float64 value `float(loss)` gave, and numpy averages them, so
    the result is what averaging the floats step by step gave, bit for bit.
    """
    tensors = [v.detach().reshape(()).double() for v in losses if torch.is_tensor(v)]
    host = iter(torch.stack([t.to(tensors[0].device) for t in tensors]).cpu().tolist() if tensors else [])
    return float(np.mean([next(host) if torch.is_tensor(v) else float(v) for v in losses])) if losses else float("nan")


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


def training_set(model: nn.Module, train: Beats, attacked: Beats | None, smote_target: int, seed: int) -> Beats:
    """Real beats, balanced by the model's own `augment` or by SMOTE, plus attacked copies (paper 3.1)."""
    from ecgbench.data.beats import smote  # here, so that this module imports with torch and numpy alone (the GPU probe)

    if hasattr(model, "augment"):
        train = model.augment(train, seed)
    elif getattr(model, "oversample", "smote") == "smote":
        train = smote(train, smote_target, seed)
    if attacked is not None and len(attacked):
        train = Beats.concat([train, attacked])
    return train


def check_patience(patience: int | None) -> None:
    """Early stopping's patience is None or a positive number of epochs; anything else is one line."""
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive number of epochs, got {patience!r}")


def fold_split(train: Beats, tr: np.ndarray, va: np.ndarray, attacked: Beats | None,
               attacked_source: np.ndarray | None) -> tuple[Beats, Beats, Beats | None]:
    """A fold's real training beats, its validation beats and the attacked copies that join its training side.

    An attacked copy goes where its clean original goes (training or validation side), so no beat is
    validated against a copy of itself that the model trained on."""
    adv_tr = adv_va = None
    if attacked is not None and attacked_source is not None:
        adv_tr = attacked.take(np.flatnonzero(np.isin(attacked_source, tr)))
        adv_va = attacked.take(np.flatnonzero(np.isin(attacked_source, va)))
    return train.take(tr), Beats.concat([train.take(va)] + ([adv_va] if adv_va is not None else [])), adv_tr


def fit(model_cls: type, n_classes: int, window: int, train: Beats, folds: list[tuple[np.ndarray, np.ndarray]], *,
        attacked: Beats | None = None, attacked_source: np.ndarray | None = None, epochs: int, batch_size: int,
        smote_target: int, device: torch.device, seed: int, progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None, patience: int | None = None,
        cuda_graphs: bool | None = None, accelerated: bool = True, checkpoints: Checkpoints | None = None) -> FitResult:
    """Train one model per fold and keep the checkpoint with the best validation score over all folds.

    `attacked` holds adversarial copies of the training beats at positions `attacked_source`; a copy
    joins a fold's training side only if its clean original does, and its validation side likewise.

    `patience`: stop a fold once its validation score has not improved for that many epochs
    (`epochs` is then the most it runs; issue 11). The info dict records, for the fold whose
    checkpoint is kept, `best_epoch`, `epochs_run` and its `curve` (epoch, loss, validation
    balanced accuracy per epoch). `accelerated`: run the model through `accel.accelerate` (acts
    on CUDA only). `cuda_graphs` (default: ECGBENCH_CUDA_GRAPHS, on): on CUDA, replay each full
    batch's step as a CUDA graph (`accel.GraphedStep`; the last partial batch runs eagerly); if
    capture fails, the fold trains eagerly and the reason is warned.

    `checkpoints`: save the whole training state as it goes and continue from the last one saved.
    On the CPU a resumed training ends with the same checkpoint, bit for bit, as one never stopped:
    the state holds the weights, optimisers, the batch order's and the global random generators,
    the epoch and batch reached, the curves and the best so far; the training set is rebuilt from
    its seed (SMOTE and models' own `augment` are seeded).
    """
    check_patience(patience)
    batch_size = batch_of(model_cls, batch_size)
    if cuda_graphs is None:
        cuda_graphs = enabled("ECGBENCH_CUDA_GRAPHS", True)
    device = torch.device(device)
    saved = checkpoints.load() if checkpoints is not None else None
    run: dict[str, Any] = saved["run"] if saved else {"best": None, "best_fold": 0, "curves": [], "graphed_folds": [],
                                                      "epoch_seconds": [], "seconds": 0.0}
    deadline = checkpoints.deadline if checkpoints is not None else None
    start = time.perf_counter() - run["seconds"]
    saved_at, epochs_unsaved = time.perf_counter(), 0
    for fold, (tr, va) in enumerate(folds):
        if saved and fold < saved["fold"]:
            continue
        model = build(model_cls, n_classes, window, seed + fold).to(device)
        if accelerated:
            model = accelerate(model, device)
        real, val, adv_tr = fold_split(train, tr, va, attacked, attacked_source)
        data = training_set(model, real, adv_tr, smote_target, seed + fold)
        x = torch.as_tensor(data.x, dtype=torch.float32, device=device)[:, None]
        y = torch.as_tensor(data.y, dtype=torch.long, device=device)
        flag = torch.as_tensor(data.attacked, dtype=torch.long, device=device)
        x_val = torch.as_tensor(val.x, dtype=torch.float32, device=device)[:, None]
        optimizers, step = training_hooks(model)
        model.train()
        graphed = _graphed(step, model, optimizers, x, y, flag, batch_size) if cuda_graphs and device.type == "cuda" else None
        gen = torch.Generator(device="cpu").manual_seed(seed + fold)
        f: dict[str, Any] = {"epoch": 0, "fold_best": -np.inf, "since_best": 0, "pos": 0, "order": None, "losses": []}
        if saved and fold == saved["fold"]:  # continue this fold where the saved state left it
            f = saved["fold_state"]
            _restore(model, optimizers, gen, saved)
        else:
            run["curves"].append([])
            run["graphed_folds"].append(graphed is not None)
        curve = run["curves"][fold]
        bar = _progress(range(f["epoch"], epochs), f"train {model_cls.__name__} fold {fold + 1}/{len(folds)}", progress)
        for epoch in bar:
            t0 = time.perf_counter()
            model.train()
            if f["order"] is None:
                f["order"] = torch.randperm(len(y), generator=gen)
            stop = None if deadline is None or graphed is not None else _stopper(deadline)
            f["pos"], losses = _epoch(step, optimizers, x, y, flag, f["order"].to(device), batch_size, graphed,
                                      f["pos"], f["losses"], stop)
            if f["pos"] < -(-len(y) // batch_size):  # stopped mid-epoch by the deadline
                f["losses"] = [float(v) for v in losses]
                _save(checkpoints, model, optimizers, gen, run, fold, f, start)
                raise OutOfTime(f"stopped at fold {fold + 1} epoch {epoch + 1}, batch {f['pos']}: time limit")
            loss = _mean_loss(losses)
            f.update(pos=0, order=None, losses=[])
            score = balanced_accuracy(val.y, predict(model, x_val, device).argmax(1), n_classes)
            run["epoch_seconds"].append(time.perf_counter() - t0)
            record = {"fold": fold, "epoch": epoch + 1, "loss": loss, "val_balanced_accuracy": score}
            curve.append({k: record[k] for k in ("epoch", "loss", "val_balanced_accuracy")})
            if progress:
                bar.set_postfix(loss=f"{loss:.4f}", val=f"{score:.3f}")
            if on_epoch:
                on_epoch(record)
            best = run["best"]
            if best is None or score > best["info"]["val_balanced_accuracy"]:
                state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                run["best"] = {"state": state, "info": {**record, "train_counts": data.counts(n_classes), "n_train": len(data)}}
                run["best_fold"] = fold
            f["fold_best"], f["since_best"] = (score, 0) if score > f["fold_best"] else (f["fold_best"], f["since_best"] + 1)
            f["epoch"] = epoch + 1
            if patience is not None and f["since_best"] >= patience:
                break
            if checkpoints is not None and f["epoch"] < epochs:
                epochs_unsaved += 1
                out_of_time = deadline is not None and not deadline.allows(2 * run["epoch_seconds"][-1]) and graphed is not None
                if out_of_time or epochs_unsaved >= checkpoints.epochs or time.perf_counter() - saved_at >= checkpoints.seconds:
                    _save(checkpoints, model, optimizers, gen, run, fold, f, start)
                    saved_at, epochs_unsaved = time.perf_counter(), 0
                    if out_of_time:
                        raise OutOfTime(f"stopped at fold {fold + 1} after epoch {f['epoch']}: time limit")
        del graphed
        saved = None
    best = run["best"]
    assert best is not None, "fit needs at least one fold and one epoch"
    best_fold = run["best_fold"]
    info = dict(best["info"])
    info.update(
        seconds=time.perf_counter() - start,
        seconds_per_epoch=float(np.mean(run["epoch_seconds"])),
        n_params=sum(p.numel() for p in model.parameters()),
        best_epoch=info["epoch"],
        epochs_run=len(run["curves"][best_fold]),
        epochs_run_per_fold=[len(c) for c in run["curves"]],
        patience=patience,
        curve=run["curves"][best_fold],
        cuda_graphs=run["graphed_folds"][best_fold],
    )
    return FitResult(best["state"], info)


def _stopper(deadline: Deadline) -> Callable[[float], bool]:
    """Whether to stop before the next step, given the last step's seconds: when two more would pass the deadline."""
    return lambda step_seconds: not deadline.allows(2 * step_seconds + 1.0)


def _save(checkpoints: Checkpoints | None, model: nn.Module, optimizers: list[torch.optim.Optimizer], gen: torch.Generator,
          run: dict[str, Any], fold: int, f: dict[str, Any], start: float) -> None:
    """Hand the whole training state to `checkpoints.save` (copies on the CPU)."""
    if checkpoints is None:
        return
    checkpoints.save({
        "fold": fold, "fold_state": _to_cpu(f), "generator": gen.get_state(), "rng": rng_state(),
        "model": _to_cpu(model.state_dict()), "optimizers": [_to_cpu(o.state_dict()) for o in optimizers],
        "run": _to_cpu({**run, "seconds": time.perf_counter() - start}),
    })


def _to_cpu(obj: Any) -> Any:
    """A copy of `obj` with every tensor detached on the CPU, numpy numbers as Python ones (what `weights_only` loads)."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _restore(model: nn.Module, optimizers: list[torch.optim.Optimizer], gen: torch.Generator, saved: dict[str, Any]) -> None:
    """Put a saved state back in place: weights and buffers, optimiser state (copied into a captured graph's
    tensors where they exist), the batch-order generator and the global generators."""
    model.load_state_dict(saved["model"])
    for opt, state in zip(optimizers, saved["optimizers"], strict=True):
        params = [p for g in opt.param_groups for p in g["params"]]
        if not opt.state:
            opt.load_state_dict(state)
            continue
        for i, p in enumerate(params):
            for k, v in state["state"].get(i, {}).items():
                cur = opt.state[p].get(k)
                if torch.is_tensor(cur):
                    cur.copy_(v)
                else:
                    opt.state[p][k] = v
    gen.set_state(saved["generator"])
    set_rng_state(saved["rng"])


def _progress(epochs: range, desc: str, show: bool) -> Any:
    """A tqdm bar over the epochs when asked for (imported only then: the GPU probe runs without tqdm)."""
    if not show:
        return epochs
    from tqdm.auto import tqdm

    return tqdm(epochs, desc=desc, leave=False)


def _graphed(step: Callable[..., Any], model: nn.Module, optimizers: list[torch.optim.Optimizer], x: torch.Tensor,
             y: torch.Tensor, flag: torch.Tensor, batch_size: int) -> GraphedStep | None:
    """The fold's step as a CUDA graph, or None (with a warning saying why) when it cannot be captured."""
    try:
        return GraphedStep(step, model, optimizers, x, y, flag, batch_size)
    except Exception as exc:  # noqa: BLE001 - any capture failure falls back to the eager loop
        warnings.warn(f"CUDA graph capture failed, training this fold eagerly: {type(exc).__name__}: {exc}", stacklevel=3)
        return None


def _epoch(step: Callable[..., Any], optimizers: list[torch.optim.Optimizer], x: torch.Tensor, y: torch.Tensor,
           flag: torch.Tensor, order: torch.Tensor, batch_size: int, graphed: GraphedStep | None, pos: int = 0,
           losses: list[float] | None = None, stop: Callable[[float], bool] | None = None) -> tuple[int, list]:
    """One pass over the batches of `order` from batch `pos`: the batches reached (all of them unless `stop`,
    asked after each step with its seconds, said stop) and the step losses (read from the device once, by `_mean_loss`)."""
    batches = order.split(batch_size)
    out: list = list(losses or [])
    if graphed is None:
        for i in range(pos, len(batches)):
            t0 = time.perf_counter()
            b = batches[i]
            out.append(step(x[b], y[b], flag[b], optimizers))
            if stop is not None and i + 1 < len(batches) and stop(time.perf_counter() - t0):
                return i + 1, out
        return len(batches), out
    for b in batches:
        if len(b) == batch_size:
            graphed(b)
        else:
            graphed.eager(b)
    return len(batches), [graphed.take_loss_sum() / len(batches)]


def measure_step(model_cls: type, n_classes: int, window: int, batch_size: int, device: torch.device | str,
                 steps: int, *, warmup: int = 3, accelerated: bool = True, cuda_graphs: bool = False,
                 autocast: torch.dtype | None = None, host_sync: bool = False, seed: int = 0) -> float:
    """Seconds per training step of `model_cls` after `warmup` steps, as `fit` runs it, on random beats.

    For the dry-run calibration and the benchmarks: the model's own optimisers and step on batches
    of `batch_size` beats in [0, 1] (half of them flagged attacked for models that train on attacked
    beats), the device synchronised before and after the timed steps. `autocast` (e.g. torch.bfloat16)
    runs the step under torch.autocast, for information only: the harness trains in float32.
    `host_sync` reads each loss with `float()`, as the harness did before issue 10 (the baseline).
    """
    device = torch.device(device)
    batch_size = batch_of(model_cls, batch_size)
    model = build(model_cls, n_classes, window, seed).to(device)
    if accelerated:
        model = accelerate(model, device)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    n = 4 * batch_size
    x = torch.rand(n, 1, window, generator=gen).to(device)
    y = (torch.arange(n) % n_classes).to(device)
    flag = (torch.arange(n) % 2 if getattr(model, "wants_attacked", False) else torch.zeros(n, dtype=torch.long)).to(device)
    optimizers, step = training_hooks(model)
    if autocast is not None or host_sync:
        plain_step = step

        def step(*args: Any) -> Any:
            with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                loss = plain_step(*args)
            return float(loss) if host_sync else loss

    batches = torch.randperm(n, generator=gen).to(device).split(batch_size)
    graphed = GraphedStep(step, model, optimizers, x, y, flag, batch_size, warmup) if cuda_graphs else None
    run = graphed if graphed is not None else (lambda b: step(x[b], y[b], flag[b], optimizers))
    for i in range(warmup):
        run(batches[i % len(batches)])
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        run(batches[i % len(batches)])
    sync(device)
    return (time.perf_counter() - t0) / max(steps, 1)
