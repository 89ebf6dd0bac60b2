"""Packed training loop (issue 19): `fit_packed` trains K members of one `Pack` as `train.fit` trains one fold each.

Same build seed, training set, batch order, validation and early stopping per member; one `FitResult` per
member. `fold_members` makes the members of one `fit` (its folds) and `best_of_folds` keeps what `fit` keeps,
so the plan packs whole trainings (`ecgbench.plan.packs`). A packed training saves its state at epoch ends and
continues it, bit for bit on the CPU, as `fit` does; on CUDA its full-batch steps replay as a CUDA graph.
`measure_packed_step` is the dry run's price of a packed step.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ecgbench.contracts.base import Beats
from ecgbench.engine.accel import enabled, sync
from ecgbench.engine.pack import GraphedPack, Pack, PackedAdam, PackedSGD, Pool, why_not_packed
from ecgbench.engine.progress import Checkpoints, OutOfTime, rng_state, set_rng_state
from ecgbench.engine.steps import batch_of
from ecgbench.engine.train import FitResult, balanced_accuracy, build, check_patience, fold_split, predict, training_set

__all__ = ["Member", "fit_packed", "fold_members", "best_of_folds", "measure_packed_step"]


@dataclass
class Member:
    """One training of a pack, as `fit` trains one fold: its real training beats, its validation beats, its seed
    (weights, SMOTE and batch order), the attacked copies that join its training side (paper 3.1), its fold."""

    train: Beats
    val: Beats
    seed: int
    attacked: Beats | None = None
    fold: int = 0


def fold_members(train: Beats, folds: list[tuple[np.ndarray, np.ndarray]], seed: int, attacked: Beats | None = None,
                 attacked_source: np.ndarray | None = None) -> list[Member]:
    """The members that stand for one `fit(train, folds, seed=seed, ...)`: one per fold, seeded `seed + fold` as `fit` seeds it."""
    out = []
    for fold, (tr, va) in enumerate(folds):
        real, val, adv_tr = fold_split(train, tr, va, attacked, attacked_source)
        out.append(Member(real, val, seed + fold, adv_tr, fold))
    return out


def best_of_folds(results: list[FitResult]) -> FitResult:
    """What `fit` keeps of one training's folds: the best validation score over all of them (the first fold on a tie)."""
    scores = [r.info["val_balanced_accuracy"] for r in results]
    best = results[int(np.argmax(scores))]
    info = {**best.info, "epochs_run_per_fold": [r.info["epochs_run"] for r in results]}
    return FitResult(best.state, info)


def fit_packed(model_cls: type, n_classes: int, window: int, members: list[Member], *, epochs: int, batch_size: int,
               smote_target: int, device: torch.device | str, patience: int | None = None,
               checkpoints: Checkpoints | None = None, on_epoch: Any = None, cuda_graphs: bool | None = None) -> list[FitResult]:
    """Train the members as one pack; per member the best checkpoint by validation balanced accuracy, as `fit` keeps.

    Each epoch every member still training draws its own batch order; step i stacks the members' i-th batches
    (members whose batch i is shorter, the last of an epoch, take their own step with the others masked). A
    member whose score has not improved for `patience` epochs stops: it takes no step again.

    `checkpoints`: save the pack's whole state at epoch ends, as `fit` does (every `epochs` epochs or `seconds`,
    and before the next epoch would pass the deadline: then `OutOfTime`), and continue from a saved one.
    `on_epoch(member, record)` is called for each member's epoch. `cuda_graphs` (default: ECGBENCH_CUDA_GRAPHS, on):
    on CUDA, replay each full-batch packed step as a CUDA graph (`GraphedPack`); a capture that fails trains eagerly,
    with a warning that says why.
    """
    why = why_not_packed(model_cls)
    if why is not None:
        raise ValueError(f"cannot pack: {why}")
    check_patience(patience)
    batch_size = batch_of(model_cls, batch_size)
    device = torch.device(device)
    nets = [build(model_cls, n_classes, window, m.seed).to(device) for m in members]
    data = [training_set(net, m.train, m.attacked, smote_target, m.seed) for net, m in zip(nets, members)]
    pool = Pool([torch.as_tensor(d.x, dtype=torch.float32, device=device)[:, None] for d in data],
                [torch.as_tensor(d.y, dtype=torch.long, device=device) for d in data],
                [torch.as_tensor(d.attacked, dtype=torch.long, device=device) for d in data])
    gens = [torch.Generator(device="cpu").manual_seed(m.seed) for m in members]
    pack, judge = Pack(nets).train(), nets[0]
    opts, k = pack.optimizers(), len(members)
    run: dict[str, Any] = {"epoch": 0, "training": [True] * k, "best": [None] * k, "since": [0] * k,
                           "curves": [[] for _ in range(k)], "epoch_seconds": [], "seconds": 0.0}
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        if saved.get("packed") != k:
            raise ValueError(f"a saved packed training of {saved.get('packed')} members cannot continue one of {k}")
        run = saved["run"]
        _restore(pack, opts, gens, saved)
    if cuda_graphs is None:
        cuda_graphs = enabled("ECGBENCH_CUDA_GRAPHS", True)
    graphed = _graphed(pack, opts, pool, batch_size) if cuda_graphs and device.type == "cuda" else None
    start, saved_at, unsaved = time.perf_counter() - run["seconds"], time.perf_counter(), 0
    for epoch in range(run["epoch"], epochs):
        if not any(run["training"]):
            break
        t0 = time.perf_counter()
        pack.train()
        batches = [torch.randperm(pool.sizes[i], generator=gens[i]).to(device).split(batch_size) if run["training"][i] else ()
                   for i in range(k)]
        losses = _epoch(pack, opts, pool, batches, graphed)
        run["epoch_seconds"].append(time.perf_counter() - t0)
        for i in (i for i in range(k) if run["training"][i]):
            judge.load_state_dict(pack.member_state(i))
            score = balanced_accuracy(members[i].val.y, predict(judge, members[i].val.x, device).argmax(1), n_classes)
            record = {"epoch": epoch + 1, "loss": losses[i], "val_balanced_accuracy": score}
            run["curves"][i].append(record)
            if on_epoch is not None:
                on_epoch(i, {"fold": members[i].fold, **record})
            best = run["best"][i]
            if best is None or score > best["info"]["val_balanced_accuracy"]:
                state = {n: v.detach().cpu() for n, v in pack.member_state(i).items()}
                run["best"][i] = {"state": state, "info": {"fold": members[i].fold, **record,
                                                          "train_counts": data[i].counts(n_classes), "n_train": len(data[i])}}
                run["since"][i] = 0
            else:
                run["since"][i] += 1
            run["training"][i] = patience is None or run["since"][i] < patience
        run["epoch"] = epoch + 1
        if checkpoints is not None and run["epoch"] < epochs and any(run["training"]):
            unsaved += 1
            deadline = checkpoints.deadline
            out_of_time = deadline is not None and not deadline.allows(2 * run["epoch_seconds"][-1])
            if out_of_time or unsaved >= checkpoints.epochs or time.perf_counter() - saved_at >= checkpoints.seconds:
                run["seconds"] = time.perf_counter() - start
                checkpoints.save(_state(pack, opts, gens, run))
                saved_at, unsaved = time.perf_counter(), 0
                if out_of_time:
                    raise OutOfTime(f"packed training of {k} stopped after epoch {run['epoch']}: time limit")
    results = []
    for i, b in enumerate(run["best"]):
        assert b is not None, "fit_packed needs at least one epoch"
        info = dict(b["info"])
        info.update(seconds=time.perf_counter() - start, seconds_per_epoch=float(np.mean(run["epoch_seconds"])),
                    n_params=sum(p.numel() for p in nets[0].parameters()), best_epoch=info["epoch"],
                    epochs_run=len(run["curves"][i]), epochs_run_per_fold=[len(run["curves"][i])], patience=patience,
                    curve=run["curves"][i], cuda_graphs=graphed is not None, packed=k)
        results.append(FitResult(b["state"], info))
    return results


def _state(pack: Pack, opts: list[PackedAdam | PackedSGD], gens: list[torch.Generator], run: dict[str, Any]) -> dict[str, Any]:
    """Everything a packed training continues from: plain tensors, numbers and lists (loads with weights_only)."""
    cpu = lambda d: {n: v.detach().cpu().clone() for n, v in d.items()}  # noqa: E731
    return {"packed": pack.k, "params": cpu(pack.params), "buffers": cpu(pack.buffers),
            "optimizers": [o.state_dict() for o in opts],
            "gens": [g.get_state() for g in gens], "rng": rng_state(), "run": run}


def _restore(pack: Pack, opts: list[PackedAdam | PackedSGD], gens: list[torch.Generator], saved: dict[str, Any]) -> None:
    with torch.no_grad():
        for n, p in pack.params.items():
            p.copy_(saved["params"][n])
        for n, b in pack.buffers.items():
            b.copy_(saved["buffers"][n])
    for opt, state in zip(opts, saved["optimizers"], strict=True):
        opt.load_state_dict(state)
    for g, state in zip(gens, saved["gens"]):
        g.set_state(state)
    set_rng_state(saved["rng"])


def measure_packed_step(model_cls: type, n_classes: int, window: int, batch_size: int, device: torch.device | str,
                        k: int, steps: int = 3, warmup: int = 2, seed: int = 0, cuda_graphs: bool = False) -> float:
    """Seconds per packed step of `k` members (each on its own batch of the model's batch, `batch_of`, of random
    beats), eager or replayed as a CUDA graph, as `fit_packed` runs it: the dry run's price."""
    device = torch.device(device)
    batch_size = batch_of(model_cls, batch_size)
    pack = Pack([build(model_cls, n_classes, window, seed + i).to(device) for i in range(k)]).train()
    opts = pack.optimizers()
    gen = torch.Generator().manual_seed(seed)
    y = (torch.arange(batch_size) % n_classes).to(device)
    flag = y % 2 if getattr(model_cls, "wants_attacked", False) else torch.zeros_like(y)
    pool = Pool([torch.rand(batch_size, 1, window, generator=gen).to(device) for _ in range(k)], [y] * k, [flag] * k)
    index, on = torch.arange(batch_size, device=device).repeat(k, 1), torch.ones(k, dtype=torch.bool, device=device)
    graphed = GraphedPack(pack, opts, pool, batch_size) if cuda_graphs else None

    def step() -> None:
        if graphed is not None:
            graphed(index, on)
        else:
            x, yb, fb = pool.take(index)
            pack.step(x, yb, opts, None, fb)
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / max(steps, 1)


def _graphed(pack: Pack, opts: list[PackedAdam | PackedSGD], pool: Pool, batch_size: int) -> GraphedPack | None:
    """The pack's full-batch step as a CUDA graph, or None (with a warning saying why) when it cannot be captured."""
    try:
        return GraphedPack(pack, opts, pool, batch_size)
    except Exception as exc:  # noqa: BLE001 - any capture failure falls back to the eager steps
        warnings.warn(f"CUDA graph capture of the packed step failed, training eagerly: {type(exc).__name__}: {exc}",
                      stacklevel=3)
        return None


def _epoch(pack: Pack, opts: list[PackedAdam | PackedSGD], pool: Pool, batches: list[tuple],
           graphed: GraphedPack | None) -> list[float]:
    """One epoch of packed steps over each member's batches; each member's mean step loss (read from the device once).

    Step i stacks the members' i-th batches; members whose batch i has another size (the last of an epoch) step
    apart, on stand-in beats for the others, which the mask leaves unchanged. Full batches replay `graphed`."""
    k = pack.k
    total = torch.zeros(k, dtype=torch.float64, device=pool.device)
    count = [0] * k
    for i in range(max(len(b) for b in batches)):
        for size in sorted({len(b[i]) for b in batches if i < len(b)}):
            on = [i < len(b) and len(b[i]) == size for b in batches]
            index = torch.stack([batches[m][i] if on[m] else torch.arange(size, device=pool.device) % pool.sizes[m]
                                 for m in range(k)])
            mask = torch.tensor(on, device=pool.device)
            if graphed is not None and size == graphed.batch_size:
                graphed(index, mask)
            else:
                x, y, flag = pool.take(index)
                total += pack.step(x, y, opts, None if all(on) else mask, flag).double() * mask
            count = [c + o for c, o in zip(count, on)]
    if graphed is not None:
        total += graphed.take_loss_sums()
    return [s / c if c else float("nan") for s, c in zip(total.cpu().tolist(), count)]
