"""Packed vs separate training steps (issue 19): K members of each model (all four pack) as one vmap'd model against
K models stepped one after the other, each with its own optimisers and step (`training_hooks`; ECG-ATK-GAN's D-then-G
`phase_loss`), K in 1, 3, 9, 40, on real MIT-BIH beats (batch 128, the paper's, per member; Acharya's own 10).

Not part of the test run: `OMP_NUM_THREADS=1 ECGBENCH_DATA=/path/to/data python -m pytest benchmarks/test_bench_pack.py
--benchmark-only --benchmark-group-by=param:model,param:k`. The device is CUDA when there is one, else the CPU. `extra_info`
holds member steps per second (K steps per round). The issue's target, on an H100/H200: K=40 packed at least 20x
the single model's steps per second; on the CPU packing was measured to gain nothing, so it is CUDA-only by default.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from ecgbench.contracts.registry import registry
from ecgbench.data.catalog import load_beats
from ecgbench.engine.accel import sync
from ecgbench.engine.pack import Pack
from ecgbench.engine.steps import batch_of, training_hooks
from ecgbench.plugins.datasets.mitbih import MitBih

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BATCH = 128


@pytest.fixture(scope="module")
def beats(data_dir, cache_dir):
    b, _, _ = load_beats(MitBih(data_dir, records=["208", "209", "213", "232"]), cache_dir)
    idx = np.random.default_rng(0).permutation(len(b))[:40 * BATCH]
    return torch.as_tensor(b.x[idx])[:, None].to(DEVICE), torch.as_tensor(b.y[idx]).to(DEVICE)


def _members(name: str, k: int) -> list[torch.nn.Module]:
    cls = registry.get("models", name)
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(cls(4, 280).to(DEVICE).train())
    return out


@pytest.mark.parametrize("k", [1, 3, 9, 40])
@pytest.mark.parametrize("how", ["packed", "separate"])
@pytest.mark.parametrize("model", ["kachuee", "shaker", "acharya", "ecg-atk-gan"])
def test_steps(benchmark, beats, model, k, how):
    batch = batch_of(registry.get("models", model), BATCH)
    x = beats[0][:k * batch].view(k, batch, 1, -1)
    y = beats[1][:k * batch].view(k, batch)
    flag = y % 2  # read by the models that train on attacked beats (ECG-ATK-GAN), ignored by the others
    members = _members(model, k)
    if how == "packed":
        pack = Pack(members).train()
        opts = pack.optimizers()

        def step() -> None:
            pack.step(x, y, opts, attacked=flag)
            sync(DEVICE)
    else:
        hooks = [training_hooks(m) for m in members]

        def step() -> None:
            for i, (optimizers, one) in enumerate(hooks):
                one(x[i], y[i], flag[i], optimizers)
            sync(DEVICE)
    step()  # warm-up
    rounds = 5 if k < 40 else 2
    t0 = time.perf_counter()
    benchmark.pedantic(step, rounds=rounds, iterations=1)
    seconds = (time.perf_counter() - t0) / rounds
    benchmark.extra_info.update(model=model, k=k, how=how, device=str(DEVICE), member_steps_per_s=round(k / seconds, 1))
