"""Benchmarks of the core: MIT-BIH beat loading, a training step of every model (plain and accelerated), an epoch
of 1,280 beats per model, and the harness's `fit` against the bare torch loop it wraps.

Not part of the test run (tests are collected from tests/ only; pyproject's addopts skip benchmarks):
`OMP_NUM_THREADS=1 ECGBENCH_DATA=/path/to/data python -m pytest benchmarks/test_bench_core.py --benchmark-only`.
The device is CUDA when there is one, else the CPU. "accelerated" is `ecgbench.engine.accel.convert` (Conv1d
as channels-last Conv2d), which `fit` applies on CUDA only; on the CPU it is measured here to show it
does not pay there. "graphed" (CUDA only) is the whole step replayed as a CUDA graph.
Issue 10's target: the harness epoch within 1.1x the bare loop's. Add `--benchmark-group-by=param:name`
to see each model's paths side by side.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecgbench.engine.accel import GraphedStep, convert, sync
from ecgbench.contracts import Beats
from ecgbench.data.catalog import load_beats
from ecgbench.plugins.datasets.mitbih import MitBih
from ecgbench.contracts.registry import registry
from ecgbench.engine.train import balanced_accuracy, build, fit, predict
from ecgbench.engine.steps import training_hooks

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
MODELS = registry.names("models")
BATCH = 128  # paper 3.2
cuda_only = pytest.mark.skipif(DEVICE.type != "cuda", reason="needs CUDA")


def test_load_all_records_raw(benchmark, data_dir, tmp_path):
    def fresh():
        shutil.rmtree(tmp_path / "beats", ignore_errors=True)
        return (), {}

    beats, _, hit = benchmark.pedantic(lambda: load_beats(MitBih(data_dir), tmp_path), setup=fresh, rounds=3)
    assert not hit and len(beats) > 100_000
    benchmark.extra_info["beats"] = len(beats)


def test_load_all_records_cached(benchmark, data_dir, tmp_path):
    load_beats(MitBih(data_dir), tmp_path)
    beats, _, hit = benchmark(load_beats, MitBih(data_dir), tmp_path)
    assert hit and len(beats) > 100_000


@pytest.fixture(scope="module")
def real_beats(data_dir, cache_dir) -> Beats:
    """2,560 real beats of four records rich in S, V and F beats."""
    beats, _, _ = load_beats(MitBih(data_dir, records=["208", "209", "213", "232"]), cache_dir)
    return beats.take(np.random.default_rng(0).permutation(len(beats))[:2560])


@pytest.fixture(scope="module")
def real_batch(real_beats):
    x, y = torch.as_tensor(real_beats.x[:1280])[:, None], torch.as_tensor(real_beats.y[:1280])
    return x.to(DEVICE), y.to(DEVICE), (torch.arange(1280) % 2).to(DEVICE)


def _model(name: str, accelerated: bool) -> torch.nn.Module:
    model = build(registry.get("models", name), 4, 280, seed=0).to(DEVICE)
    return (convert(model) if accelerated else model).train()


@pytest.mark.parametrize("name", MODELS)
def test_training_epoch_of_1280_beats(benchmark, name, real_batch):
    x, y, flag = real_batch
    model = _model(name, accelerated=DEVICE.type == "cuda")
    optimizers, step = training_hooks(model)

    def epoch() -> float:
        losses = [step(x[i:i + BATCH], y[i:i + BATCH], flag[i:i + BATCH], optimizers) for i in range(0, 1280, BATCH)]
        return float(np.mean([float(v) for v in losses]))

    loss = benchmark.pedantic(epoch, rounds=3)
    assert np.isfinite(loss)
    benchmark.extra_info["beats_per_second"] = 1280 / benchmark.stats.stats.mean


@pytest.mark.parametrize("path", ["plain", "accelerated"])
@pytest.mark.parametrize("name", MODELS)
def test_training_step(benchmark, name, path, real_batch):
    """One step at batch 128 (the model's own optimisers and step), the device synchronised after it."""
    x, y, flag = real_batch
    model = _model(name, accelerated=path == "accelerated")
    optimizers, step = training_hooks(model)
    batches = torch.arange(1280, device=DEVICE).split(BATCH)
    it = iter(range(10**9))

    def one() -> None:
        b = batches[next(it) % len(batches)]
        step(x[b], y[b], flag[b], optimizers)
        sync(DEVICE)

    for _ in range(3):
        one()
    benchmark.pedantic(one, rounds=20 if DEVICE.type == "cpu" else 200, iterations=1)
    benchmark.extra_info["device"] = str(DEVICE)


@cuda_only
@pytest.mark.parametrize("name", MODELS)
def test_training_step_graphed(benchmark, name, real_batch):
    x, y, flag = real_batch
    model = _model(name, accelerated=True)
    optimizers, step = training_hooks(model)
    graphed = GraphedStep(step, model, optimizers, x, y, flag, BATCH)
    batches = torch.arange(1280, device=DEVICE).split(BATCH)
    it = iter(range(10**9))

    def one() -> None:
        graphed(batches[next(it) % len(batches)])
        sync(DEVICE)

    benchmark.pedantic(one, rounds=500, iterations=1, warmup_rounds=5)


# -- harness vs bare loop ---------------------------------------------------------------------
EPOCHS, HARNESS_MODEL = 2, "kachuee"


def _split(beats: Beats) -> tuple[np.ndarray, np.ndarray]:
    n = len(beats)
    return np.arange(n - n // 10), np.arange(n - n // 10, n)


@pytest.mark.benchmark(group="harness vs bare loop")
def test_epoch_harness(benchmark, real_beats):
    """`fit` as the runner calls it (progress bar off), 2 epochs of 2,304 beats and validation on 256."""
    cls = registry.get("models", HARNESS_MODEL)

    def run() -> dict:
        return fit(cls, 4, 280, real_beats, [_split(real_beats)], epochs=EPOCHS, batch_size=BATCH, smote_target=0,
                   device=DEVICE, seed=0, progress=False).info

    info = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(seconds_per_epoch=info["seconds_per_epoch"], device=str(DEVICE))


@pytest.mark.benchmark(group="harness vs bare loop")
def test_epoch_bare_loop(benchmark, real_beats):
    """The loop a user would write by hand for the same work: Adam, shuffled batches, `float(loss)` per step,
    the validation beats scored after each epoch and the best weights copied."""
    cls = registry.get("models", HARNESS_MODEL)
    tr, va = _split(real_beats)

    def run() -> float:
        torch.manual_seed(0)
        model = cls(4, 280).to(DEVICE)
        opt = torch.optim.Adam(model.parameters(), lr=cls.lr)
        x = torch.as_tensor(real_beats.x[tr], device=DEVICE)[:, None]
        y = torch.as_tensor(real_beats.y[tr], device=DEVICE)
        gen, best, state = torch.Generator().manual_seed(0), -1.0, None
        for _ in range(EPOCHS):
            model.train()
            losses = []
            for b in torch.randperm(len(y), generator=gen).to(DEVICE).split(BATCH):
                opt.zero_grad()
                loss = F.cross_entropy(model(x[b]), y[b])
                loss.backward()
                opt.step()
                losses.append(loss.item())
            score = balanced_accuracy(real_beats.y[va], predict(model, real_beats.x[va], DEVICE).argmax(1), 4)
            if score > best:
                best, state = score, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        assert state is not None
        return best

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    benchmark.extra_info["device"] = str(DEVICE)
