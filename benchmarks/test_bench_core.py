"""Benchmarks of the core: MIT-BIH beat loading (raw and cached) and one training epoch per model.

Skipped in the normal run; `pytest tests/test_bench_core.py --benchmark-only` runs them. The
raw load reads all 48 records with wfdb and cuts every beat; the cached load reads the .npz.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ecgbench.data import load_beats
from ecgbench.plugins.datasets.mitbih import MitBih
from ecgbench.registry import registry
from ecgbench.train import build, classifier_step, default_optimizers


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
def real_batch(data_dir, cache_dir):
    beats, _, _ = load_beats(MitBih(data_dir, records=["208", "209", "213", "232"]), cache_dir)
    idx = np.random.default_rng(0).permutation(len(beats))[:1280]
    return torch.as_tensor(beats.x[idx])[:, None], torch.as_tensor(beats.y[idx]), torch.zeros(1280, dtype=torch.long)


@pytest.mark.parametrize("name", registry.names("models"))
def test_training_epoch_of_1280_beats(benchmark, name, real_batch):
    x, y, flag = real_batch
    model = build(registry.get("models", name), 4, 280, seed=0).train()
    optimizers = model.configure_optimizers() if hasattr(model, "configure_optimizers") else default_optimizers(model)
    step = getattr(model, "training_step", None) or (lambda *a: classifier_step(model, *a))

    def epoch() -> float:
        return float(np.mean([step(x[i:i + 128], y[i:i + 128], flag[i:i + 128], optimizers) for i in range(0, 1280, 128)]))

    loss = benchmark.pedantic(epoch, rounds=3)
    assert np.isfinite(loss)
    benchmark.extra_info["beats_per_second"] = 1280 / benchmark.stats.stats.mean
