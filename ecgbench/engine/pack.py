"""Packed training (issue 19): K trainings of one architecture as one model, so each kernel gets K times the work.

One small CNN fills a sliver of a GPU (Kachuee 1.14 ms a step on an H200) and trainings side by side in
processes add nothing; K members of one class (folds, seeds, static sets: same class and settings, other
data) stacked into one set of [K, ...] parameters and run through one `vmap`ed forward do. Generic over
plugins (`torch.func.stack_module_state` + `functional_call` + `vmap`): a third-party model packs without
code. BatchNorm keeps per-member running statistics (stacked buffers, updated in place under vmap);
dropout draws per member (`randomness="different"`).

What a member is owed, as if it trained alone: its own beats and order (the caller's batches, one per
member), its own optimiser state (Adam and SGD are elementwise: `PackedAdam` / `PackedSGD` over the stacked
parameters are K optimisers), and when it stops early, no change at all: they mask the update, not only the
gradient (momentum would move a parameter whose gradient is zero), keep a step count per member, and `step`
puts back the member's BatchNorm statistics.

Custom steps pack when a model states them as losses (`phase_loss`, see `train.phased_step`): each phase's
loss is vmapped over the members' weights, its gradient taken for the phase's own optimiser, and stepped
before the next phase runs, so ECG-ATK-GAN's D-then-G step, its two Adams and its frozen BatchNorm
statistics on fake beats pack as they run alone; Acharya's SGD with batches of 10 packs as SGD on [K, 10]. `member_state(i)` is a plain state_dict, loadable by the plain model, as a separate training's.

`fit_packed` trains K members as `fit` trains one fold each (same build seed, training set, batch order,
validation and early stopping per member) and returns one `FitResult` per member; `fold_members` makes the
members of one `fit` (its folds) and `best_of_folds` keeps what `fit` keeps, so the plan packs whole trainings
(`ecgbench.plan.packs`). A packed training saves its state at epoch ends and continues it, bit for bit on the
CPU, as `fit` does. A model class packs unless it brings a whole `training_step`, an optimiser other than
Adam or SGD with momentum, or sets `packable = False`; `why_not_packed` says why in one line.
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
from ecgbench.engine.train import (FitResult, balanced_accuracy, batch_of, build, check_patience, default_optimizers, fold_split,
                                   predict, training_set)

__all__ = ["Pack", "PackedAdam", "PackedSGD", "packed_optimizers", "Member", "why_not_packed", "fit_packed", "fold_members", "best_of_folds",
           "measure_packed_step"]


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-member mask [K] shaped to broadcast over a stacked tensor [K, ...]."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


class PackedAdam:
    """Adam (Kingma & Ba 2015, as `torch.optim.Adam` computes it: no weight decay, no amsgrad) over the stacked [K, ...]
    parameters `names`, with a step count per member and a mask: a member not stepped keeps its parameters, moments and
    count, so its bias correction is its own (one shared Adam would count every member's steps for all)."""

    def __init__(self, params: dict[str, torch.Tensor], names: list[str], k: int, lr: float,
                 betas: tuple[float, float], eps: float = 1e-8) -> None:
        self.params, self.names, self.lr, self.betas, self.eps = params, list(names), lr, betas, eps
        first = params[self.names[0]]
        self.t = torch.zeros(k, dtype=first.dtype, device=first.device)
        self.m = {n: torch.zeros_like(params[n]) for n in self.names}
        self.v = {n: torch.zeros_like(params[n]) for n in self.names}

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor | None], active: torch.Tensor) -> None:
        b1, b2 = self.betas
        t = torch.where(active, self.t + 1, self.t)
        step_size = self.lr / (1 - b1 ** t.clamp(min=1))
        bias2_sqrt = (1 - b2 ** t.clamp(min=1)).sqrt()
        for n in self.names:
            p, g = self.params[n], grads.get(n)
            if g is None:
                continue
            on = _expand(active, p)
            m = torch.where(on, self.m[n] * b1 + g * (1 - b1), self.m[n])
            v = torch.where(on, self.v[n] * b2 + g * g * (1 - b2), self.v[n])
            denom = v.sqrt() / _expand(bias2_sqrt, p) + self.eps
            p.copy_(torch.where(on, p - _expand(step_size, p) * m / denom, p))
            self.m[n], self.v[n] = m, v
        self.t = t

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t.cpu().clone(), "m": _cpu(self.m), "v": _cpu(self.v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.t.device
        self.t = state["t"].to(device)
        self.m = {n: v.to(device) for n, v in state["m"].items()}
        self.v = {n: v.to(device) for n, v in state["v"].items()}


class PackedSGD:
    """SGD with momentum (as `torch.optim.SGD` computes it: no dampening, no Nesterov, no weight decay; the first step
    takes the gradient as its momentum buffer) over the stacked parameters `names`, masked per member like `PackedAdam`."""

    def __init__(self, params: dict[str, torch.Tensor], names: list[str], k: int, lr: float, momentum: float = 0.0) -> None:
        self.params, self.names, self.lr, self.momentum = params, list(names), lr, momentum
        first = params[self.names[0]]
        self.t = torch.zeros(k, dtype=first.dtype, device=first.device)
        self.buf = {n: torch.zeros_like(params[n]) for n in self.names}

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor | None], active: torch.Tensor) -> None:
        for n in self.names:
            p, g = self.params[n], grads.get(n)
            if g is None:
                continue
            on = _expand(active, p)
            if self.momentum:  # torch's first step takes the gradient as the buffer: 0 * momentum + g
                g = self.buf[n] * self.momentum + g
                self.buf[n] = torch.where(on, g, self.buf[n])
            p.copy_(torch.where(on, p - self.lr * g, p))
        self.t = torch.where(active, self.t + 1, self.t)

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t.cpu().clone(), "buf": _cpu(self.buf)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.t.device
        self.t = state["t"].to(device)
        self.buf = {n: v.to(device) for n, v in state["buf"].items()}


def _cpu(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: v.detach().cpu().clone() for n, v in d.items()}


def _settings(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimiser's settings, the same for every parameter group, or ValueError."""
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    if any(g != groups[0] for g in groups[1:]):
        raise ValueError(f"{type(opt).__name__} has parameter groups with different settings")
    return groups[0]


def _packed_kind(opt: torch.optim.Optimizer) -> str:
    """Which packed optimiser stands for `opt` ("adam" or "sgd"), or ValueError saying why none does."""
    hp = _settings(opt)
    plain = not hp.get("weight_decay") and not hp.get("maximize")
    if type(opt) is torch.optim.Adam and plain and not hp.get("amsgrad"):
        return "adam"
    if type(opt) is torch.optim.SGD and plain and not hp.get("dampening") and not hp.get("nesterov"):
        return "sgd"
    raise ValueError(f"its optimiser {type(opt).__name__} has no packed form (Adam, or SGD with momentum only, "
                     "without weight decay)")


def _optimizers_of(model: nn.Module) -> list[torch.optim.Optimizer]:
    return model.configure_optimizers() if hasattr(model, "configure_optimizers") else default_optimizers(model)


def packed_optimizers(model: nn.Module, params: dict[str, torch.Tensor], k: int) -> list[PackedAdam | PackedSGD]:
    """The packed twins of `model`'s own optimisers, in its order, over the stacked `params` (named as the model names them)."""
    names = {id(p): n for n, p in model.named_parameters()}
    out: list[PackedAdam | PackedSGD] = []
    for opt in _optimizers_of(model):
        hp, mine = _settings(opt), [names[id(p)] for g in opt.param_groups for p in g["params"]]
        if _packed_kind(opt) == "adam":
            out.append(PackedAdam(params, mine, k, lr=hp["lr"], betas=hp["betas"], eps=hp["eps"]))
        else:
            out.append(PackedSGD(params, mine, k, lr=hp["lr"], momentum=hp["momentum"]))
    return out


def why_not_packed(model_cls: type) -> str | None:
    """Why a model class trains alone (one line), or None if its members can be packed.

    A model packs if its step is the harness's (cross-entropy, or its own `phase_loss`) and its optimisers are
    Adam or SGD with momentum; a whole `training_step` of its own cannot be vmapped."""
    name = model_cls.__name__
    if getattr(model_cls, "packable", True) is False:
        return f"{name} opts out (packable = False)"
    if hasattr(model_cls, "training_step"):
        return f"{name} brings its own training_step, which the packed step cannot vmap (a phase_loss would pack)"
    try:
        with torch.device("meta"):  # the optimisers' kinds and settings, without allocating weights
            model = model_cls(4, 280)
        for opt in _optimizers_of(model):
            _packed_kind(opt)
    except ValueError as exc:
        return f"{name}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a model that cannot be built on the meta device trains alone
        return f"{name} could not be built on the meta device to read its optimisers ({type(exc).__name__})"
    return None


class _PhaseLoss(nn.Module):
    """`model.phase_loss` as a forward, so `functional_call` (which calls forward) can run it on a member's weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any) -> Any:
        return self.model.phase_loss(*args)


class Pack:
    """K members' parameters and buffers stacked along a first axis of K; `pack(x)` is every member's forward.

    `x` is [K, batch, 1, window] (member k's batch at x[k]); the result [K, batch, classes]. Members must be
    of one class built alike (same shapes); their weights may differ.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        if not members:
            raise ValueError("a pack needs at least one member")
        self.k = len(members)
        self.keys = list(members[0].state_dict())  # what a member's checkpoint holds (no non-persistent buffers)
        self.base = copy.deepcopy(members[0]).to("meta")  # the architecture only: weights live in the stacks
        self.phased = _PhaseLoss(self.base) if hasattr(self.base, "phase_loss") else None
        params, self.buffers = stack_module_state(members)
        self.params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}

    def train(self, mode: bool = True) -> "Pack":
        self.base.train(mode)
        return self

    def eval(self) -> "Pack":
        return self.train(False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        def one(p: dict, b: dict, xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xb,))
        return vmap(one, randomness="different")(self.params, self.buffers, x)

    def optimizers(self) -> list[PackedAdam | PackedSGD]:
        """The members' own optimisers (`configure_optimizers`, else Adam with the model's `lr` and `betas`), packed:
        one step count and state per member."""
        return packed_optimizers(self.base, self.params, self.k)

    def _losses(self, phase: int, x: torch.Tensor, y: torch.Tensor, attacked: torch.Tensor,
                carry: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every member's loss of `phase` [K] and what it carries to the next phase ([K, ...] each)."""
        if self.phased is None:
            losses = F.cross_entropy(self(x).flatten(0, 1), y.flatten(), reduction="none").view(self.k, -1).mean(1)
            return losses, {}

        def one(p: dict, b: dict, xb: torch.Tensor, yb: torch.Tensor, ab: torch.Tensor, c: dict) -> Any:
            weights = {f"model.{n}": v for n, v in {**p, **b}.items()}
            return functional_call(self.phased, weights, (phase, xb, yb, ab, c))
        return vmap(one, randomness="different")(self.params, self.buffers, x, y, attacked, carry)

    def step(self, x: torch.Tensor, y: torch.Tensor, optimizers: list[PackedAdam | PackedSGD],
             active: torch.Tensor | None = None, attacked: torch.Tensor | None = None) -> torch.Tensor:
        """One step of every member on its own batch, as the harness steps one model (`phased_step`: optimiser i on
        the loss of phase i, in order; else cross-entropy); returns the K summed batch losses, detached.

        Summing the members' losses gives each member the gradient of its own loss. A member with `active` False
        (stopped early, or without a batch of this size) leaves the step exactly as it entered it: parameters,
        optimiser state and step count, BatchNorm statistics.
        """
        active = torch.ones(self.k, dtype=torch.bool, device=x.device) if active is None else active.to(x.device, torch.bool)
        attacked = torch.zeros_like(y) if attacked is None else attacked
        kept = None if bool(active.all()) else {n: b.clone() for n, b in self.buffers.items()}
        total, carry = None, {}
        for phase, opt in enumerate(optimizers):
            losses, carry = self._losses(phase, x, y, attacked, carry)
            params = [self.params[n] for n in opt.names]
            grads = torch.autograd.grad(losses.sum(), params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = g
            opt.step(dict(zip(opt.names, grads)), active)
            total = losses.detach() if total is None else total + losses.detach()
        if kept is not None:
            with torch.no_grad():
                for n, b in self.buffers.items():
                    b.copy_(torch.where(_expand(active, b), b, kept[n]))
        assert total is not None, "a packed step needs at least one optimiser"
        return total

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's state_dict, as the plain model's `state_dict()` names it (loadable with `load_state_dict`)."""
        stacks = {**self.params, **self.buffers}
        return {n: stacks[n].detach()[i].clone() for n in self.keys}


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
    batch_size = batch_of(model_cls, batch_size)
    device = torch.device(device)
    nets = [build(model_cls, n_classes, window, m.seed).to(device) for m in members]
    data = [training_set(net, m.train, m.attacked, smote_target, m.seed) for net, m in zip(nets, members)]
    xs = [torch.as_tensor(d.x, dtype=torch.float32, device=device)[:, None] for d in data]
    ys = [torch.as_tensor(d.y, dtype=torch.long, device=device) for d in data]
    flags = [torch.as_tensor(d.attacked, dtype=torch.long, device=device) for d in data]
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
    start, saved_at, unsaved = time.perf_counter() - run["seconds"], time.perf_counter(), 0
    for epoch in range(run["epoch"], epochs):
        if not any(run["training"]):
            break
        t0 = time.perf_counter()
        pack.train()
        batches = [torch.randperm(len(ys[i]), generator=gens[i]).to(device).split(batch_size) if run["training"][i] else ()
                   for i in range(k)]
        losses = _epoch(pack, opts, xs, ys, flags, batches)
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
                    curve=run["curves"][i], cuda_graphs=False, packed=k)
        results.append(FitResult(b["state"], info))
    return results


def _state(pack: Pack, opts: list[PackedAdam | PackedSGD], gens: list[torch.Generator], run: dict[str, Any]) -> dict[str, Any]:
    """Everything a packed training continues from: plain tensors, numbers and lists (loads with weights_only)."""
    return {"packed": pack.k, "params": _cpu(pack.params), "buffers": _cpu(pack.buffers),
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
                        k: int, steps: int = 3, warmup: int = 2, seed: int = 0) -> float:
    """Seconds per packed step of `k` members (each on its own batch of `batch_size` random beats): the dry run's price."""
    device = torch.device(device)
    batch_size = batch_of(model_cls, batch_size)
    pack = Pack([build(model_cls, n_classes, window, seed + i).to(device) for i in range(k)]).train()
    opts = pack.optimizers()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(k, batch_size, 1, window, generator=gen).to(device)
    y = (torch.arange(k * batch_size) % n_classes).view(k, batch_size).to(device)
    flag = (y % 2 if getattr(model_cls, "wants_attacked", False) else torch.zeros_like(y)).to(device)
    for _ in range(warmup):
        pack.step(x, y, opts, attacked=flag)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        pack.step(x, y, opts, attacked=flag)
    sync(device)
    return (time.perf_counter() - t0) / max(steps, 1)


def _epoch(pack: Pack, opts: list[PackedAdam | PackedSGD], xs: list[torch.Tensor], ys: list[torch.Tensor],
           flags: list[torch.Tensor], batches: list[tuple]) -> list[list[float]]:
    """One epoch of packed steps over each member's batches; each member's step losses."""
    k = len(xs)
    losses: list[list[float]] = [[] for _ in range(k)]
    for i in range(max(len(b) for b in batches)):
        for size in sorted({len(b[i]) for b in batches if i < len(b)}):
            on = [i < len(b) and len(b[i]) == size for b in batches]
            # a member without a batch of this size steps on stand-in beats, and `step` undoes what that did
            idx = [batches[m][i] if on[m] else torch.arange(size, device=ys[m].device) % len(ys[m]) for m in range(k)]
            out = pack.step(torch.stack([xs[m][idx[m]] for m in range(k)]), torch.stack([ys[m][idx[m]] for m in range(k)]),
                            opts, torch.tensor(on, device=ys[0].device), torch.stack([flags[m][idx[m]] for m in range(k)]))
            for m in (m for m in range(k) if on[m]):
                losses[m].append(out[m])
    return [torch.stack(v).double().cpu().tolist() if v else [] for v in losses]  # read from the device once an epoch
