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
validation and early stopping per member) and returns one `FitResult` per member. Not yet: the plan does not
pack trainings, and a packed training does not save its state part-way (the engine's issue 19 work
continues). A model class packs unless it brings its own step or optimisers, or sets `packable = False`;
`why_not_packed` says why in one line.
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
from ecgbench.engine.train import FitResult, balanced_accuracy, build, predict, training_set

__all__ = ["Pack", "PackedAdam", "Member", "why_not_packed", "fit_packed"]


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
    (weights, SMOTE and batch order), and the attacked copies that join its training side (paper 3.1)."""

    train: Beats
    val: Beats
    seed: int
    attacked: Beats | None = None


def fit_packed(model_cls: type, n_classes: int, window: int, members: list[Member], *, epochs: int, batch_size: int,
               smote_target: int, device: torch.device | str, patience: int | None = None) -> list[FitResult]:
    """Train the members as one pack; per member the best checkpoint by validation balanced accuracy, as `fit` keeps.

    Each epoch every member still training draws its own batch order; step i stacks the members' i-th batches
    (members whose batch i is shorter, the last of an epoch, take their own step with the others masked). A
    member whose score has not improved for `patience` epochs stops: it takes no step again.
    """
    why = why_not_packed(model_cls)
    if why is not None:
        raise ValueError(f"cannot pack: {why}")
    device = torch.device(device)
    nets = [build(model_cls, n_classes, window, m.seed).to(device) for m in members]
    data = [training_set(net, m.train, m.attacked, smote_target, m.seed) for net, m in zip(nets, members)]
    xs = [torch.as_tensor(d.x, dtype=torch.float32, device=device)[:, None] for d in data]
    ys = [torch.as_tensor(d.y, dtype=torch.long, device=device) for d in data]
    gens = [torch.Generator(device="cpu").manual_seed(m.seed) for m in members]
    pack, judge = Pack(nets).train(), nets[0]
    opt, k = pack.optimizer(), len(members)
    training = [True] * k
    best: list[dict | None] = [None] * k
    since, curves, seconds = [0] * k, [[] for _ in range(k)], []
    start = time.perf_counter()
    for epoch in range(epochs):
        if not any(training):
            break
        t0 = time.perf_counter()
        pack.train()
        batches = [torch.randperm(len(ys[i]), generator=gens[i]).to(device).split(batch_size) if training[i] else ()
                   for i in range(k)]
        losses = _epoch(pack, opt, xs, ys, batches)
        seconds.append(time.perf_counter() - t0)
        for i in (i for i in range(k) if training[i]):
            judge.load_state_dict(pack.member_state(i))
            score = balanced_accuracy(members[i].val.y, predict(judge, members[i].val.x, device).argmax(1), n_classes)
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses[i])), "val_balanced_accuracy": score}
            curves[i].append(record)
            if best[i] is None or score > best[i]["info"]["val_balanced_accuracy"]:
                state = {n: v.detach().cpu() for n, v in pack.member_state(i).items()}
                best[i] = {"state": state, "info": {**record, "fold": 0, "train_counts": data[i].counts(n_classes),
                                                   "n_train": len(data[i])}}
                since[i] = 0
            else:
                since[i] += 1
            training[i] = patience is None or since[i] < patience
    results = []
    for i, b in enumerate(best):
        assert b is not None, "fit_packed needs at least one epoch"
        info = dict(b["info"])
        info.update(seconds=time.perf_counter() - start, seconds_per_epoch=float(np.mean(seconds)),
                    n_params=sum(p.numel() for p in nets[0].parameters()), best_epoch=info["epoch"],
                    epochs_run=len(curves[i]), epochs_run_per_fold=[len(curves[i])], patience=patience, curve=curves[i],
                    cuda_graphs=False, packed=k)
        results.append(FitResult(b["state"], info))
    return results


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
