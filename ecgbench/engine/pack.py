"""Packed training (issue 19): K trainings of one architecture as one model, so each kernel gets K times the work.

One small CNN fills a sliver of a GPU (Kachuee 1.14 ms a step on an H200) and trainings side by side in
processes add nothing; K members of one class (folds, seeds, static sets: same class and settings, other
data) stacked into one set of [K, ...] parameters and run through one `vmap`ed forward do. Generic over
plugins (`torch.func.stack_module_state` + `functional_call` + `vmap`): a third-party model packs without
code. BatchNorm keeps per-member running statistics (stacked buffers, updated in place under vmap);
dropout draws per member (`randomness="different"`).

What a member is owed, as if it trained alone: its own beats and order (the caller's batches, one per
member), its own Adam state (Adam is elementwise: `PackedAdam` over the stacked parameters is K Adams), and
when it stops early, no change at all: `PackedAdam` masks the update, not only the gradient (Adam's
momentum would move a parameter whose gradient is zero), keeps a step count per member, and `step` puts back
the member's BatchNorm statistics. `member_state(i)` is a plain state_dict, loadable by the plain model, as a separate training's.

`fit_packed` trains K members as `fit` trains one fold each (same build seed, training set, batch order,
validation and early stopping per member) and returns one `FitResult` per member; `fold_members` makes the
members of one `fit` (its folds) and `best_of_folds` keeps what `fit` keeps, so the plan packs whole trainings
(`ecgbench.plan.packs`). A packed training saves its state at epoch ends and continues it, bit for bit on the
CPU, as `fit` does. A model class packs unless it brings its own step or optimisers, or sets
`packable = False`; `why_not_packed` says why in one line.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from ecgbench.contracts.base import Beats
from ecgbench.engine.accel import sync
from ecgbench.engine.progress import Checkpoints, OutOfTime, rng_state, set_rng_state
from ecgbench.engine.train import FitResult, balanced_accuracy, build, check_patience, fold_split, predict, training_set

__all__ = ["Pack", "PackedAdam", "Member", "why_not_packed", "fit_packed", "fold_members", "best_of_folds",
           "measure_packed_step"]


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-member mask [K] shaped to broadcast over a stacked tensor [K, ...]."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


class PackedAdam:
    """Adam (Kingma & Ba 2015, as `torch.optim.Adam` computes it: no weight decay, no amsgrad) over stacked [K, ...]
    parameters, with a step count per member and a mask: a member not stepped keeps its parameters, moments and
    count, so its bias correction is its own (one shared Adam would count every member's steps for all)."""

    def __init__(self, params: dict[str, torch.Tensor], k: int, lr: float, betas: tuple[float, float], eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        first = next(iter(params.values()))
        self.t = torch.zeros(k, dtype=first.dtype, device=first.device)
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        b1, b2 = self.betas
        t = torch.where(active, self.t + 1, self.t)
        step_size = self.lr / (1 - b1 ** t.clamp(min=1))
        bias2_sqrt = (1 - b2 ** t.clamp(min=1)).sqrt()
        for n, p in self.params.items():
            if p.grad is None:
                continue
            on = _expand(active, p)
            m = torch.where(on, self.m[n] * b1 + p.grad * (1 - b1), self.m[n])
            v = torch.where(on, self.v[n] * b2 + p.grad * p.grad * (1 - b2), self.v[n])
            denom = v.sqrt() / _expand(bias2_sqrt, p) + self.eps
            p.copy_(torch.where(on, p - _expand(step_size, p) * m / denom, p))
            self.m[n], self.v[n] = m, v
        self.t = t


def why_not_packed(model_cls: type) -> str | None:
    """Why a model class trains alone (one line), or None if its members can be packed."""
    if getattr(model_cls, "packable", True) is False:
        return f"{model_cls.__name__} opts out (packable = False)"
    for hook in ("training_step", "configure_optimizers"):
        if hasattr(model_cls, hook):
            return f"{model_cls.__name__} brings its own {hook}, which the packed step cannot vmap"
    return None


class Pack:
    """K members' parameters and buffers stacked along a first axis of K; `pack(x)` is every member's forward.

    `x` is [K, batch, 1, window] (member k's batch at x[k]); the result [K, batch, classes]. Members must be
    of one class built alike (same shapes); their weights may differ.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        if not members:
            raise ValueError("a pack needs at least one member")
        self.k = len(members)
        self.base = copy.deepcopy(members[0]).to("meta")  # the architecture only: weights live in the stacks
        params, self.buffers = stack_module_state(members)
        self.params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
        self.lr = getattr(members[0], "lr", 1e-3)
        self.betas = getattr(members[0], "betas", (0.9, 0.999))

    def train(self, mode: bool = True) -> "Pack":
        self.base.train(mode)
        return self

    def eval(self) -> "Pack":
        return self.train(False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        def one(p: dict, b: dict, xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xb,))
        return vmap(one, randomness="different")(self.params, self.buffers, x)

    def optimizer(self) -> "PackedAdam":
        """Adam with the members' own settings (the model's `lr` and `betas`), one step count per member."""
        return PackedAdam(self.params, self.k, lr=self.lr, betas=self.betas)

    def step(self, x: torch.Tensor, y: torch.Tensor, optimizer: "PackedAdam",
             active: torch.Tensor | None = None) -> torch.Tensor:
        """One cross-entropy step of every member on its own batch; returns the K batch losses, detached.

        The summed loss gives each member the gradient of its own mean loss. A member with `active` False
        (stopped early, or without a batch of this size) leaves the step exactly as it entered it: parameters,
        Adam state and step count, BatchNorm statistics.
        """
        active = torch.ones(self.k, dtype=torch.bool, device=x.device) if active is None else active.to(x.device, torch.bool)
        kept = None if bool(active.all()) else {n: b.clone() for n, b in self.buffers.items()}
        logits = self(x)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(self.k, -1).mean(1)
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step(active)
        if kept is not None:
            with torch.no_grad():
                for n, b in self.buffers.items():
                    b.copy_(torch.where(_expand(active, b), b, kept[n]))
        return losses.detach()

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's state_dict, as the plain model's `state_dict()` names it (loadable with `load_state_dict`)."""
        state = {n: p.detach()[i].clone() for n, p in self.params.items()}
        state.update({n: b[i].clone() for n, b in self.buffers.items()})
        return state


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
               checkpoints: Checkpoints | None = None, on_epoch: Any = None) -> list[FitResult]:
    """Train the members as one pack; per member the best checkpoint by validation balanced accuracy, as `fit` keeps.

    Each epoch every member still training draws its own batch order; step i stacks the members' i-th batches
    (members whose batch i is shorter, the last of an epoch, take their own step with the others masked). A
    member whose score has not improved for `patience` epochs stops: it takes no step again.

    `checkpoints`: save the pack's whole state at epoch ends, as `fit` does (every `epochs` epochs or `seconds`,
    and before the next epoch would pass the deadline: then `OutOfTime`), and continue from a saved one.
    `on_epoch(member, record)` is called for each member's epoch.
    """
    why = why_not_packed(model_cls)
    if why is not None:
        raise ValueError(f"cannot pack: {why}")
    check_patience(patience)
    device = torch.device(device)
    nets = [build(model_cls, n_classes, window, m.seed).to(device) for m in members]
    data = [training_set(net, m.train, m.attacked, smote_target, m.seed) for net, m in zip(nets, members)]
    xs = [torch.as_tensor(d.x, dtype=torch.float32, device=device)[:, None] for d in data]
    ys = [torch.as_tensor(d.y, dtype=torch.long, device=device) for d in data]
    gens = [torch.Generator(device="cpu").manual_seed(m.seed) for m in members]
    pack, judge = Pack(nets).train(), nets[0]
    opt, k = pack.optimizer(), len(members)
    run: dict[str, Any] = {"epoch": 0, "training": [True] * k, "best": [None] * k, "since": [0] * k,
                           "curves": [[] for _ in range(k)], "epoch_seconds": [], "seconds": 0.0}
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        if saved.get("packed") != k:
            raise ValueError(f"a saved packed training of {saved.get('packed')} members cannot continue one of {k}")
        run = saved["run"]
        _restore(pack, opt, gens, saved)
    start, saved_at, unsaved = time.perf_counter() - run["seconds"], time.perf_counter(), 0
    for epoch in range(run["epoch"], epochs):
        if not any(run["training"]):
            break
        t0 = time.perf_counter()
        pack.train()
        batches = [torch.randperm(len(ys[i]), generator=gens[i]).to(device).split(batch_size) if run["training"][i] else ()
                   for i in range(k)]
        losses = _epoch(pack, opt, xs, ys, batches)
        run["epoch_seconds"].append(time.perf_counter() - t0)
        for i in (i for i in range(k) if run["training"][i]):
            judge.load_state_dict(pack.member_state(i))
            score = balanced_accuracy(members[i].val.y, predict(judge, members[i].val.x, device).argmax(1), n_classes)
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses[i])), "val_balanced_accuracy": score}
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
                checkpoints.save(_state(pack, opt, gens, run))
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
                    curve=run["curves"][i], cuda_graphs=False, packed=k)
        results.append(FitResult(b["state"], info))
    return results


def _state(pack: Pack, opt: PackedAdam, gens: list[torch.Generator], run: dict[str, Any]) -> dict[str, Any]:
    """Everything a packed training continues from: plain tensors, numbers and lists (loads with weights_only)."""
    cpu = lambda d: {n: v.detach().cpu().clone() for n, v in d.items()}  # noqa: E731
    return {"packed": pack.k, "params": cpu(pack.params), "buffers": cpu(pack.buffers),
            "adam": {"t": opt.t.cpu().clone(), "m": cpu(opt.m), "v": cpu(opt.v)},
            "gens": [g.get_state() for g in gens], "rng": rng_state(), "run": run}


def _restore(pack: Pack, opt: PackedAdam, gens: list[torch.Generator], saved: dict[str, Any]) -> None:
    with torch.no_grad():
        for n, p in pack.params.items():
            p.copy_(saved["params"][n])
        for n, b in pack.buffers.items():
            b.copy_(saved["buffers"][n])
    device = opt.t.device
    opt.t = saved["adam"]["t"].to(device)
    opt.m = {n: v.to(device) for n, v in saved["adam"]["m"].items()}
    opt.v = {n: v.to(device) for n, v in saved["adam"]["v"].items()}
    for g, state in zip(gens, saved["gens"]):
        g.set_state(state)
    set_rng_state(saved["rng"])


def measure_packed_step(model_cls: type, n_classes: int, window: int, batch_size: int, device: torch.device | str,
                        k: int, steps: int = 3, warmup: int = 2, seed: int = 0) -> float:
    """Seconds per packed step of `k` members (each on its own batch of `batch_size` random beats): the dry run's price."""
    device = torch.device(device)
    pack = Pack([build(model_cls, n_classes, window, seed + i).to(device) for i in range(k)]).train()
    opt = pack.optimizer()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(k, batch_size, 1, window, generator=gen).to(device)
    y = (torch.arange(k * batch_size) % n_classes).view(k, batch_size).to(device)
    for _ in range(warmup):
        pack.step(x, y, opt)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        pack.step(x, y, opt)
    sync(device)
    return (time.perf_counter() - t0) / max(steps, 1)


def _epoch(pack: Pack, opt: PackedAdam, xs: list[torch.Tensor], ys: list[torch.Tensor],
           batches: list[tuple]) -> list[list[float]]:
    """One epoch of packed steps over each member's batches; each member's step losses."""
    k = len(xs)
    losses: list[list[float]] = [[] for _ in range(k)]
    for i in range(max(len(b) for b in batches)):
        for size in sorted({len(b[i]) for b in batches if i < len(b)}):
            on = [i < len(b) and len(b[i]) == size for b in batches]
            # a member without a batch of this size steps on stand-in beats, and `step` undoes what that did
            idx = [batches[m][i] if on[m] else torch.arange(size, device=ys[m].device) % len(ys[m]) for m in range(k)]
            out = pack.step(torch.stack([xs[m][idx[m]] for m in range(k)]), torch.stack([ys[m][idx[m]] for m in range(k)]),
                            opt, torch.tensor(on, device=ys[0].device))
            for m in (m for m in range(k) if on[m]):
                losses[m].append(out[m])
    return [torch.stack(v).double().cpu().tolist() if v else [] for v in losses]  # read from the device once an epoch
