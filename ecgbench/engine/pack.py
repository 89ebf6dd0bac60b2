"""Packed training (issue 19): K trainings of one architecture as one model, so each kernel gets K times the work.

One small CNN fills a sliver of a GPU (Kachuee 1.14 ms a step on an H200) and trainings side by side in
processes add nothing; K members of one class (folds, seeds, static sets: same class and settings, other
data) stacked into one set of [K, ...] parameters and run through one `vmap`ed forward do. Generic over
plugins (`torch.func.stack_module_state` + `functional_call` + `vmap`): a third-party model packs without
code. BatchNorm keeps per-member running statistics (stacked buffers, updated in place under vmap);
dropout and `torch.rand` draw per member (`randomness="different"`).

What a member is owed, as if it trained alone: its own beats and order (the caller's batches, one per
member), its own optimiser state (Adam and SGD are elementwise: `PackedAdam` / `PackedSGD` over the stacked
parameters are K optimisers), and when it stops early, no change at all: they mask the update, not only the
gradient (momentum would move a parameter whose gradient is zero), keep a step count per member, and `step`
puts back the member's BatchNorm statistics. `member_state(i)` is a plain state_dict, loadable by the plain
model, as a separate training's.

Custom steps pack when a model states them as losses (`phase_loss`, see `steps.phased_step`): each phase's
loss is vmapped over the members' weights, its gradient taken for the phase's own optimiser, and stepped
before the next phase runs, so ECG-ATK-GAN's D-then-G step, its two Adams and its frozen BatchNorm
statistics on fake beats pack as they run alone; Acharya's SGD with batches of 10 packs as SGD on [K, 10].
A model class packs unless it brings a whole `training_step`, an optimiser other than Adam or SGD with
momentum, or sets `packable = False`; `why_not_packed` says why in one line.

`Pool` holds the members' beats in one device tensor, and `GraphedPack` replays a full-batch packed step as a
CUDA graph (the optimisers update their state in place for that). The training loop is `pack_train`.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from ecgbench.engine.steps import default_optimizers

__all__ = ["Pack", "PackedAdam", "PackedSGD", "packed_optimizers", "why_not_packed", "Pool", "GraphedPack"]


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-member mask [K] shaped to broadcast over a stacked tensor [K, ...]."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


class PackedAdam:
    """Adam (Kingma & Ba 2015, as `torch.optim.Adam` computes it: no weight decay, no amsgrad) over the stacked [K, ...]
    parameters `names`, with a step count per member and a mask: a member not stepped keeps its parameters, moments and
    count, so its bias correction is its own (one shared Adam would count every member's steps for all).

    Its state is updated in place, never rebound, so a step captured in a CUDA graph advances it on every replay."""

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
            on, m, v = _expand(active, p), self.m[n], self.v[n]
            m.copy_(torch.where(on, m * b1 + g * (1 - b1), m))
            v.copy_(torch.where(on, v * b2 + g * g * (1 - b2), v))
            denom = v.sqrt() / _expand(bias2_sqrt, p) + self.eps
            p.copy_(torch.where(on, p - _expand(step_size, p) * m / denom, p))
        self.t.copy_(t)

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t.cpu().clone(), "m": _cpu(self.m), "v": _cpu(self.v)}

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of its state (what a CUDA-graph capture must put back after its warm-up steps)."""
        return [self.t, *self.m.values(), *self.v.values()]

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t.copy_(state["t"])
        for n in self.names:
            self.m[n].copy_(state["m"][n])
            self.v[n].copy_(state["v"][n])


class PackedSGD:
    """SGD with momentum (as `torch.optim.SGD` computes it: no dampening, no Nesterov, no weight decay; the first step
    takes the gradient as its momentum buffer) over the stacked parameters `names`, masked per member and updated in
    place like `PackedAdam`."""

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
                self.buf[n].copy_(torch.where(on, g, self.buf[n]))
            p.copy_(torch.where(on, p - self.lr * g, p))
        self.t.copy_(torch.where(active, self.t + 1, self.t))

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t.cpu().clone(), "buf": _cpu(self.buf)}

    def tensors(self) -> list[torch.Tensor]:
        return [self.t, *self.buf.values()]

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t.copy_(state["t"])
        for n in self.names:
            self.buf[n].copy_(state["buf"][n])


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


class Pool:
    """The members' training beats in one device tensor, [K, n, 1, window] (padded to the longest member), with their
    labels and attacked flags: a step's batches are one gather by an index [K, batch], which a CUDA graph can replay."""

    def __init__(self, xs: list[torch.Tensor], ys: list[torch.Tensor], flags: list[torch.Tensor]) -> None:
        k, n, device = len(xs), max(len(y) for y in ys), ys[0].device
        self.sizes = [len(y) for y in ys]
        self.x = torch.zeros(k, n, *xs[0].shape[1:], dtype=xs[0].dtype, device=device)
        self.y = torch.zeros(k, n, dtype=torch.long, device=device)
        self.flag = torch.zeros(k, n, dtype=torch.long, device=device)
        for i, (x, y, f) in enumerate(zip(xs, ys, flags)):
            self.x[i, :len(y)], self.y[i, :len(y)], self.flag[i, :len(y)] = x, y, f
        self.rows = torch.arange(k, device=device)[:, None]
        self.device = device

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Member m's beats index[m]: x [K, batch, 1, window], y and flags [K, batch]."""
        return self.x[self.rows, index], self.y[self.rows, index], self.flag[self.rows, index]


class GraphedPack:
    """One packed step captured as a CUDA graph, replayed for every step at the full batch size.

    The graph holds the gather from the `Pool` by a static index [K, batch], the packed step with a static mask of
    the members that step (`Pack.step`'s masked path: a member off the mask leaves it unchanged), and each member's
    loss summed on the device. The packed optimisers update their state in place, so every replay advances it.
    Capture needs warm-up steps, which train: parameters, buffers and optimiser state are put back afterwards, so
    training starts where the eager path would. On failure everything is put back and the error raised, so the
    caller can train eagerly.
    """

    def __init__(self, pack: "Pack", optimizers: list[PackedAdam | PackedSGD], pool: Pool, batch_size: int,
                 warmup: int = 3) -> None:
        if pool.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the pool on a CUDA device, not {pool.device}")
        self.pack, self.optimizers, self.pool, self.batch_size = pack, optimizers, pool, batch_size
        device = pool.device
        self.index = torch.zeros(pack.k, batch_size, dtype=torch.long, device=device)
        self.active = torch.ones(pack.k, dtype=torch.bool, device=device)
        self.loss_sum = torch.zeros(pack.k, dtype=torch.float64, device=device)
        state = [*pack.params.values(), *pack.buffers.values(), *(t for o in optimizers for t in o.tensors())]
        saved = [t.detach().clone() for t in state]
        try:
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graph requires
                for _ in range(warmup):
                    self._run()
            torch.cuda.current_stream(device).wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._run()
        finally:
            with torch.no_grad():
                for t, s in zip(state, saved):
                    t.copy_(s)
            self.loss_sum.zero_()

    def _run(self) -> None:
        x, y, flag = self.pool.take(self.index)
        losses = self.pack.step(x, y, self.optimizers, self.active, flag)
        self.loss_sum.add_(losses.double() * self.active)

    def __call__(self, index: torch.Tensor, active: torch.Tensor) -> None:
        """One packed step on the members' batches `index` [K, batch_size], `active` members only, by replay."""
        self.index.copy_(index)
        self.active.copy_(active)
        self.graph.replay()

    def take_loss_sums(self) -> torch.Tensor:
        """Each member's summed losses since the last call, on the device, and reset."""
        out = self.loss_sum.clone()
        self.loss_sum.zero_()
        return out


