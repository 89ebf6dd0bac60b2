"""Throughput of every attack x back-end on one trained Kachuee model and one set of real beats.

Not part of the test run (tests are collected from tests/ only, and addopts has --benchmark-skip); run
them with `ECGBENCH_DATA=/path/to/data python -m pytest benchmarks/test_bench_attacks.py --benchmark-only`.
The model is Kachuee trained 3 epochs on ~5,400 real MIT-BIH beats of 10 records (at most 1,700 per
class); the beats are 256 held-out beats it classifies correctly, 64 per class, or 32 of them for the
attacks that work one beat at a time and for Square (5,000 queries, up to 15,000 model calls a beat).
Each result's `extra_info` holds n, beats/s, the success rate (share pushed to a wrong class within
eps), the median L-inf of the fooled beats and the model queries per beat. One torch thread, so
that other jobs on a shared machine disturb the numbers less; compare rows of one run only.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from ecgbench.contracts.registry import registry

VALUE_RANGE = (0.0, 1.0)
RECORDS = ["201", "203", "207", "208", "209", "213", "215", "223", "232", "233"]
FEW_BEATS = {("cw", "art"), ("boundary", "art"), ("hsj", "art"), ("square", "art")}  # ART's per-beat loops, Square: 32 beats
SLOW = {"boundary", "hsj", "apgd", "square"} | {name for name, _ in FEW_BEATS}  # one round, not three




def _cases() -> list:
    cases = []
    for name in registry.names("attacks"):
        cls = registry.get("attacks", name)
        cases += [pytest.param(name, b, None, id=f"{name}@{b}") for b in cls.backends]
        cases += [pytest.param(name, None, v, id=f"{name}:{v}") for v in cls.variants]
    return cases


@pytest.fixture(scope="module")
def bench_setup(data_dir, cache_dir):
    from ecgbench.contracts.splits import stratified_split
    from ecgbench.data.beats import cap_per_class
    from ecgbench.data.catalog import load_beats
    from ecgbench.plugins.datasets.mitbih import MitBih
    from ecgbench.kit.testing import train_reference

    torch.set_num_threads(1)
    beats, _, _ = load_beats(MitBih(data_dir, records=RECORDS), cache_dir)
    train_idx, test_idx = stratified_split(beats.y, 0.3, 0)
    test = beats.take(test_idx)
    model = train_reference(cap_per_class(beats.take(train_idx), 1700, 0), 4, epochs=3)
    with torch.no_grad():
        pred = model(torch.as_tensor(test.x)[:, None]).argmax(1).numpy()
    rng = np.random.default_rng(1)
    pick = np.sort(np.concatenate([rng.permutation(np.flatnonzero((test.y == c) & (pred == c)))[:64] for c in range(4)]))
    return model, torch.as_tensor(test.x[pick])[:, None], torch.as_tensor(test.y[pick])


@pytest.mark.parametrize("name,backend,variant", _cases())
def test_attack_throughput(benchmark, bench_setup, name, backend, variant):
    from ecgbench.plugins.attacks.decision import QueryCounter

    model, x, y = bench_setup
    attack = registry.get("attacks", name)(backend=backend, variant=variant)
    if (name, attack.backend) in FEW_BEATS:
        x, y = x[::8], y[::8]
    counter = QueryCounter(model)
    rounds = 1 if name in SLOW else 3
    t0 = time.perf_counter()
    adv = benchmark.pedantic(attack, args=(counter, x, y, VALUE_RANGE), rounds=rounds, iterations=1)
    seconds = (time.perf_counter() - t0) / rounds
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    linf = (adv - x).flatten(1).abs().amax(1)
    benchmark.extra_info.update(
        attack=attack.label, params=attack.params, n=len(x), beats_per_s=round(len(x) / seconds, 2),
        success=round(float((fooled & (linf <= attack.eps + 1e-6)).float().mean()), 4),
        median_linf=round(float(linf[fooled].median()), 4) if fooled.any() else None,
        queries_per_beat=round(counter.used / rounds / len(x)),
    )
