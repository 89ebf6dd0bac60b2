"""Plain Conv1d models made fast on CUDA without changing them: same `state_dict`, same outputs within float tolerance.

Model plugins stay `nn.Module`s written as their papers describe them (Conv1d, BatchNorm1d). On
CUDA, PyTorch runs a Conv1d's weight gradient on cuFFT kernels: measured on an H200 (issue 10),
Kachuee's fp32 training step took 14.95 ms with Conv1d, 3.33 ms with the same layers as Conv2d on
[N, C, 1, L] in channels-last layout, and 0.98 ms with that whole step captured in a CUDA graph.

- `convert` swaps every plain `nn.Conv1d`, `nn.ConvTranspose1d` and `nn.BatchNorm1d` for a module
  that holds the original's own Parameters and buffers (same names, same shapes) and runs it as the
  2D operator on a [N, C, 1, L] view, channels-last by default, and `nn.Dropout` for one that draws
  its mask in the plain model's element order. Checkpoints load either way.
- `accelerate(model, device)` applies `convert` on CUDA only (ECGBENCH_ACCEL=0: never; =all: on the
  CPU too). On the CPU it is off by default, so CPU results stay bit-identical to the plain modules';
  there it measured no gain for Kachuee and Acharya and 1.2-1.5x for the BatchNorm models
  (`benchmarks/test_bench_core.py`, 2-core shared CPU).
- `GraphedStep` captures one whole training step (batch gather, forward, backward, optimiser
  steps, loss accumulation) as a CUDA graph and replays it for every full batch.
- `measure_attack` times one attack batch (seconds per beat), for the dry-run calibration.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["resolve_device", 
    "Conv1dAs2d", "ConvTranspose1dAs2d", "BatchNorm1dAs2d", "ContiguousDropout", "convert", "accelerate", "enabled",
    "GraphedStep", "sync", "measure_attack",
]

_TRUE = ("1", "true", "yes", "on")


def enabled(var: str, default: bool) -> bool:
    """An on/off environment switch (`1/true/yes/on` or `0/false/no/off`); anything else is an error."""
    value = os.environ.get(var, "").strip().lower()
    if not value:
        return default
    if value not in _TRUE + ("0", "false", "no", "off"):
        raise ValueError(f"{var}={os.environ[var]!r}: expected 1 or 0")
    return value in _TRUE


def _as_4d(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = x.unsqueeze(2)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Conv1dAs2d(nn.Module):
    """An `nn.Conv1d` run as a 2D convolution over [N, C, 1, L], holding the Conv1d's own Parameters.

    `weight` keeps its Conv1d shape [out, in / groups, k] and is viewed as [out, in / groups, 1, k]
    at call time, so the gradient reaches the same Parameter and the state_dict is unchanged.
    """

    def __init__(self, conv: nn.Conv1d, channels_last: bool = True) -> None:
        super().__init__()
        self.weight = conv.weight
        self.register_parameter("bias", conv.bias)
        self.stride, self.dilation, self.groups = (1, conv.stride[0]), (1, conv.dilation[0]), conv.groups
        self.padding_mode, self.channels_last = conv.padding_mode, channels_last
        self.pre_pad = list(conv._reversed_padding_repeated_twice) if conv.padding_mode != "zeros" else None
        if self.pre_pad is not None:
            self.padding: str | tuple[int, int] = (0, 0)
        else:
            self.padding = conv.padding if isinstance(conv.padding, str) else (0, conv.padding[0])
        self.train(conv.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # unbatched [C, L], as Conv1d allows
            return self(x[None])[0]
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad, mode=self.padding_mode)
        w = _as_4d(self.weight, self.channels_last)
        return F.conv2d(_as_4d(x, self.channels_last), w, self.bias, self.stride, self.padding, self.dilation, self.groups).squeeze(2)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, stride={self.stride[1]}, padding={self.padding}, channels_last={self.channels_last}"


class ConvTranspose1dAs2d(nn.Module):
    """An `nn.ConvTranspose1d` run as a 2D transposed convolution over [N, C, 1, L]; its own Parameters."""

    def __init__(self, conv: nn.ConvTranspose1d, channels_last: bool = True) -> None:
        super().__init__()
        self.weight = conv.weight
        self.register_parameter("bias", conv.bias)
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.output_padding, self.groups = conv.dilation, conv.output_padding, conv.groups
        self.channels_last = channels_last
        self.train(conv.training)

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        if x.dim() == 2:
            return self(x[None], output_size)[0]
        out_pad = self.output_padding
        if output_size is not None:  # the same rule as nn.ConvTranspose1d
            out_pad = nn.ConvTranspose1d._output_padding(self, x, output_size, self.stride, self.padding,  # type: ignore[arg-type]
                                                         self.kernel_size, 1, self.dilation)
        w = _as_4d(self.weight, self.channels_last)
        return F.conv_transpose2d(_as_4d(x, self.channels_last), w, self.bias, (1, self.stride[0]), (0, self.padding[0]),
                                  (0, out_pad[0]), self.groups, (1, self.dilation[0])).squeeze(2)


class BatchNorm1dAs2d(nn.BatchNorm1d):
    """An `nn.BatchNorm1d` that normalises [N, C, L] as BatchNorm2d over [N, C, 1, L] (channels-last kernels).

    The same statistics (over N and L), Parameters and buffers (running mean and variance, batch
    count); [N, C] input is normalised as before. Still a BatchNorm1d, so code that finds a model's
    BatchNorm layers (ECG-ATK-GAN's frozen statistics) finds these.
    """

    channels_last: bool = True

    @classmethod
    def from_module(cls, bn: nn.BatchNorm1d, channels_last: bool = True) -> "BatchNorm1dAs2d":
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device="meta")
        new._parameters.update(bn._parameters)
        new._buffers.update(bn._buffers)
        new._non_persistent_buffers_set = set(bn._non_persistent_buffers_set)
        new.channels_last = channels_last
        return new.train(bn.training)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            return super().forward(x)
        return super().forward(_as_4d(x, self.channels_last)).squeeze(2)


class ContiguousDropout(nn.Dropout):
    """`nn.Dropout` that draws its mask over a contiguous copy of its input.

    Dropout draws the mask in the input's memory order, so on a channels-last activation the same
    seed would drop other elements than on the plain model's contiguous one; made contiguous first,
    the accelerated model drops exactly the elements the plain one drops.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x.contiguous(), self.p, self.training, self.inplace)


def _swap(module: nn.Module, channels_last: bool) -> nn.Module | None:
    kind = type(module)  # exact types: a subclass may have its own forward
    if kind is nn.Dropout:
        new = ContiguousDropout(module.p, module.inplace)  # type: ignore[arg-type]
        return new.train(module.training)
    if kind is nn.Conv1d:
        return Conv1dAs2d(module, channels_last)  # type: ignore[arg-type]
    if kind is nn.ConvTranspose1d:
        return ConvTranspose1dAs2d(module, channels_last)  # type: ignore[arg-type]
    if kind is nn.BatchNorm1d:
        return BatchNorm1dAs2d.from_module(module, channels_last)  # type: ignore[arg-type]
    return None


def convert(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """Swap, in place, every plain Conv1d, ConvTranspose1d and BatchNorm1d for its 2D-kernel twin (and Dropout for
    `ContiguousDropout`, so one seed drops the same elements); returns `model`.

    Parameters and buffers are the same tensor objects, so optimisers built before or after keep
    working, and `state_dict` keys and shapes do not change.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _swap(child, channels_last)
            if new is not None:
                setattr(parent, name, new)
    return model


def accelerate(model: nn.Module, device: torch.device | str, channels_last: bool = True) -> nn.Module:
    """`convert` on CUDA; the model unchanged elsewhere. ECGBENCH_ACCEL=0 turns it off, ECGBENCH_ACCEL=all turns it
    on for the CPU too (measured 1.2-1.5x faster steps there for the BatchNorm models, Shaker and ECG-ATK-GAN,
    no gain for Kachuee and Acharya; off by default so CPU results stay bit-identical to the plain modules')."""
    mode = os.environ.get("ECGBENCH_ACCEL", "").strip().lower()
    if mode == "all":
        return convert(model, channels_last)
    if torch.device(device).type != "cuda" or not enabled("ECGBENCH_ACCEL", True):
        return model
    return convert(model, channels_last)


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when there is one, else the CPU; asking for CUDA where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine")
    return torch.device(name)


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so wall-clock timings mean something."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# -- CUDA graphs ------------------------------------------------------------------------------
def _make_capturable(optimizers: Sequence[torch.optim.Optimizer]) -> list[list[bool]]:
    """Adam/AdamW switched to `capturable=True`; SGD as it is (its step never syncs). Returns the old flags."""
    flags = []
    for opt in optimizers:
        if opt.state:
            raise ValueError(f"{type(opt).__name__} has state already; a CUDA graph must be captured before the first step")
        if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
            flags.append([g.get("capturable", False) for g in opt.param_groups])
            for g in opt.param_groups:
                g["capturable"] = True
        elif type(opt) is torch.optim.SGD and all(g.get("dampening", 0) == 0 for g in opt.param_groups):
            flags.append([])
        else:
            raise ValueError(f"no CUDA-graph path for {type(opt).__name__}: only Adam, AdamW and SGD without dampening")
    return flags


class GraphedStep:
    """One whole training step captured as a CUDA graph, replayed for each full batch.

    For the harness's steps, whose shapes are fixed: a batch of `batch_size` beats gathered from the
    training tensors `x`, `y`, `flag` (which stay where they are for the whole fold) by an index
    tensor copied in before each replay. The graph holds the gather, the step (the model's
    `training_step` or the classifier step: forward, backward, optimiser steps) and the sum of the
    losses in float64 on the device. A step must return its loss as a tensor (a float would need a
    host sync, which capture forbids). Partial batches run eagerly through `eager`, the same step
    on the same Parameters, so the graph path trains on exactly the batches the eager path does.

    Capture needs a few warm-up steps, which train the model: its Parameters and buffers are put
    back and the optimisers' state zeroed afterwards (for Adam, AdamW and SGD without dampening,
    zeroed state is the state of a fresh optimiser), so training starts where the eager path does.
    Adam and AdamW run with `capturable=True`. On failure the model and optimisers are restored
    and the error raised, so the caller can fall back to the eager path.
    """

    def __init__(self, step: Callable[..., Any], model: nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                 x: torch.Tensor, y: torch.Tensor, flag: torch.Tensor, batch_size: int, warmup: int = 3) -> None:
        if x.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the training tensors on a CUDA device, not {x.device}")
        if len(y) < batch_size:
            raise ValueError(f"{len(y)} training beats: fewer than one batch of {batch_size}")
        self.step, self.optimizers, self.x, self.y, self.flag = step, list(optimizers), x, y, flag
        self.batch_size, device = batch_size, x.device
        self.index = torch.arange(batch_size, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        tensors = list(model.parameters()) + list(model.buffers())
        saved = [t.detach().clone() for t in tensors]
        old_flags = _make_capturable(self.optimizers)
        try:
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graph requires
                for _ in range(warmup):
                    self._run(self.index)
            torch.cuda.current_stream(device).wait_stream(stream)
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._run(self.index)
        except Exception:
            self._restore(tensors, saved)
            for opt, flags in zip(self.optimizers, old_flags):
                opt.state.clear()
                for g, f in zip(opt.param_groups, flags):
                    g["capturable"] = f
            raise
        self._restore(tensors, saved)
        for opt in self.optimizers:
            for state in opt.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()

    def _restore(self, tensors: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for t, s in zip(tensors, saved):
                t.copy_(s)
        self.loss_sum.zero_()

    def _run(self, idx: torch.Tensor) -> None:
        loss = self.step(self.x[idx], self.y[idx], self.flag[idx], self.optimizers)
        if not torch.is_tensor(loss):
            raise ValueError(f"the training step returned a {type(loss).__name__}; the CUDA-graph path needs a tensor")
        self.loss_sum.add_(loss.detach().double())

    def __call__(self, idx: torch.Tensor) -> None:
        """One step on the full batch `idx` (indices into the training tensors), by graph replay."""
        self.index.copy_(idx)
        self.graph.replay()

    def eager(self, idx: torch.Tensor) -> None:
        """One step on a batch of any size, run eagerly (capturable optimisers warn when stepped eagerly)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            self._run(idx)

    def take_loss_sum(self) -> float:
        """The summed losses since the last call, read once (one host sync), and reset."""
        total = float(self.loss_sum)
        self.loss_sum.zero_()
        return total


# -- calibration ------------------------------------------------------------------------------
def measure_attack(attack: Callable[..., Any], model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   value_range: tuple[float, float], repeats: int = 1) -> float:
    """Seconds per beat of `attack(model, x, y, value_range)` on one batch, the device synchronised around it.

    The first call includes the attack library's set-up (ART wraps the model each call, as the
    runner does), so what it measures is what a run pays per batch.
    """
    device = x.device
    model.eval()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        attack(model, x, y, value_range)
    sync(device)
    return (time.perf_counter() - t0) / (repeats * max(len(x), 1))
