"""Executors on a smoke matrix: serial vs `--jobs 2`, and the `--dry-run` estimate vs the measured run.

Each round is a whole `ecgbench run` on a cold cache (the beats cache warmed first, so data loading
is not what is timed). Run: `python -m pytest benchmarks/test_bench_executors.py --benchmark-only`.
The estimate's error is in each benchmark's `extra_info` (`--benchmark-json` keeps it).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

MATRIX = ["run", "--dataset", "mitbih", "--models", "kachuee,acharya,shaker", "--attacks", "fgsm,pgd,boundary",
          "--modes", "static,adaptive", "--profile", "smoke", "--source", "kachuee", "--no-progress", "--quiet"]


def _run(args: list[str], data_dir: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache), "ECGBENCH_PLUGINS": "ecgbench"}
    res = subprocess.run([sys.executable, "-m", "ecgbench", *args], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def _cold(tmp_path_factory, data_dir: Path) -> Path:
    """A cache holding only the beats: trainings and attacks are timed, not reading the records."""
    cache = tmp_path_factory.mktemp("cache")
    _run(["run", "--dataset", "mitbih", "--models", "kachuee", "--attacks", "", "--profile", "smoke", "--dry-run",
          "--no-calibrate", "--out", str(cache / "o")], data_dir, cache)
    return cache


@pytest.mark.parametrize("executor", [["--executor", "serial"], ["--executor", "jobs", "--jobs", "2"]], ids=["serial", "jobs2"])
def test_smoke_matrix(benchmark, tmp_path_factory, data_dir, executor):
    def setup():
        cache = _cold(tmp_path_factory, data_dir)
        return (MATRIX + executor + ["--out", str(cache / "out")], data_dir, cache), {}

    benchmark.pedantic(_run, setup=setup, rounds=2, iterations=1)


def test_dry_run_estimate_against_the_run(benchmark, tmp_path_factory, data_dir):
    cache = _cold(tmp_path_factory, data_dir)
    dry = _run(MATRIX + ["--dry-run", "--out", str(cache / "out")], data_dir, cache).stdout
    m = re.search(r"estimated wall time: ([\d.]+) (s|min|h) with 1 worker", dry)
    assert m, dry
    estimate = float(m.group(1)) * {"s": 1, "min": 60, "h": 3600}[m.group(2)]
    t0 = time.perf_counter()
    benchmark.pedantic(_run, args=(MATRIX + ["--out", str(cache / "out")], data_dir, cache), rounds=1, iterations=1)
    measured = time.perf_counter() - t0
    benchmark.extra_info.update(estimate_s=estimate, measured_s=measured, ratio=estimate / measured)
    print(f"dry-run estimate {estimate:.1f} s, measured {measured:.1f} s, ratio {estimate / measured:.2f}")
