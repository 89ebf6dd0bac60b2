"""Packed vs separate training steps (issue 19): K members of each model that packs (Kachuee, Shaker) as one vmap'd
model against K models stepped one after the other, K in 1, 3, 9, 40, on real MIT-BIH beats (batch 128, the paper's,
per member).

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
import torch.nn.functional as F

from ecgbench.contracts.registry import registry
from ecgbench.data.catalog import load_beats
from ecgbench.engine.accel import sync
from ecgbench.engine.pack import Pack
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
@pytest.mark.parametrize("model", ["kachuee", "shaker"])
def test_steps(benchmark, beats, model, k, how):
    x = beats[0][:k * BATCH].view(k, BATCH, 1, -1)
    y = beats[1][:k * BATCH].view(k, BATCH)
    members = _members(model, k)
    if how == "packed":
        pack = Pack(members).train()
        opt = pack.optimizer()

        def step() -> None:
            pack.step(x, y, opt)
            sync(DEVICE)
    else:
        opts = [torch.optim.Adam(m.parameters(), lr=m.lr, betas=getattr(m, "betas", (0.9, 0.999))) for m in members]

        def step() -> None:
            for i, m in enumerate(members):
                opts[i].zero_grad(set_to_none=True)
                F.cross_entropy(m(x[i]), y[i]).backward()
                opts[i].step()
            sync(DEVICE)
    step()  # warm-up
    rounds = 5 if k < 40 else 2
    t0 = time.perf_counter()
    benchmark.pedantic(step, rounds=rounds, iterations=1)
    seconds = (time.perf_counter() - t0) / rounds
    benchmark.extra_info.update(model=model, k=k, how=how, device=str(DEVICE), member_steps_per_s=round(k / seconds, 1))
