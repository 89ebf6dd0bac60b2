"""Resumable runs (issue 18), end to end on MIT-BIH: a training killed mid-way continues to the checkpoint an
uninterrupted one writes, bit for bit on the CPU; `--time-limit` stops in time with exit 3; a stopped run bundled,
unbundled into a fresh cache and folder and continued ends with the uninterrupted run's tables.

The kill's trigger is certain: the test waits for the training's second saved state (a state is saved every
epoch here), kills, and checks that the training had not finished (ten more epochs of the GAN were left).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecgbench.store.io import read_json

CONFIG = '[profile]\nbase = "smoke"\nepochs = 6\n'  # 6 epochs of ECG-ATK-GAN: long enough to be killed, and stopped, in the middle
RUN = ["run", "--dataset", "mitbih", "--models", "ecg-atk-gan", "--attacks", "fgsm", "--modes", "adaptive",
       "--threads", "1", "--checkpoint-every", "0", "--no-progress"]


def ecgbench(*args: str, cache: Path, data_dir: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "ecgbench", *args], capture_output=True, text=True, env=env, **kw)


def checkpoints(cache: Path, suffix: str = ".pt") -> list[Path]:
    return sorted((cache / "checkpoints").glob(f"ecg-atk-gan-*{suffix}"))


def tables(out: Path) -> dict:
    """What a run's report says, and what each cell scored with which weights."""
    cells = {str(p.relative_to(out)): (r["weights"], r["correct"]) for p in sorted((out / "cells").rglob("*.json"))
             for r in [json.loads(p.read_text())]}
    return {"leaderboard": json.loads((out / "leaderboard.json").read_text()), "cells": cells}


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume-config") / "run.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir, config) -> tuple[Path, Path]:
    """The same run, never stopped."""
    root = tmp_path_factory.mktemp("reference")
    res = ecgbench(*RUN, "--config", str(config), "--out", str(root / "out"), cache=root / "cache", data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    return root / "out", root / "cache"


@pytest.fixture(scope="module")
def killed(tmp_path_factory, data_dir, config) -> tuple[Path, Path, Path]:
    """A run SIGKILLed in the middle of its training (after its second saved state), and its bundle made then."""
    root = tmp_path_factory.mktemp("killed")
    out, cache = root / "out", root / "cache"
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "ecgbench", *RUN, "--config", str(config), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            seqs = [read_json(m).get("seq", 0) for m in checkpoints(cache, ".state*.meta.json")]
            if seqs and max(seqs) >= 2:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-training"
    assert not checkpoints(cache), "the training finished before the kill: the test would check nothing"
    assert checkpoints(cache, ".state*.meta.json"), "no saved training state to continue from"
    bundle = root / "slice.tar.gz"
    res = ecgbench("bundle", str(out), "-o", str(bundle), "--cache-dir", str(cache), cache=cache, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "1 cell(s) left" not in res.stdout and "cell(s) left" in res.stdout
    return out, cache, bundle


def test_a_killed_training_resumes_to_the_uninterrupted_checkpoint(killed, reference, data_dir, config):
    out, cache, _ = killed
    res = ecgbench(*RUN, "--config", str(config), "--out", str(out), cache=cache, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "continuing the training of ecg-atk-gan on mitbih from its saved state" in res.stderr
    [ours], [theirs] = checkpoints(cache), checkpoints(reference[1])
    assert ours.name == theirs.name and ours.read_bytes() == theirs.read_bytes()  # the same weights, bit for bit
    assert not checkpoints(cache, ".state*"), "a finished training leaves no saved state behind"
    assert tables(out) == tables(reference[0])


def test_a_bundle_continues_in_a_fresh_cache_and_folder_with_a_time_limit(killed, reference, data_dir, config, tmp_path):
    _, _, bundle = killed
    out, cache = tmp_path / "elsewhere", tmp_path / "fresh-cache"
    first = ecgbench(*RUN, "--config", str(config), "--out", str(out), "--from-bundle", str(bundle), "--time-limit", "4s",
                     cache=cache, data_dir=data_dir)
    assert first.returncode == 3, first.stderr[-2000:]  # four GAN epochs were left: over four seconds of work
    assert "checked;" in first.stdout and "rerun the same command to continue (exit 3)" in first.stderr.splitlines()[-1]
    inv = read_json(out / "run.json")["invocations"]
    assert inv[-1]["stopped"] == "time limit" and inv[-1]["time_limit"] == 4.0 and inv[-1]["cells_left"] >= 1
    assert len(inv) == 2  # the killed invocation's record came with the bundle (it was killed, so it wrote only its start)
    second = ecgbench(*RUN, "--config", str(config), "--out", str(out), cache=cache, data_dir=data_dir)
    assert second.returncode == 0, second.stderr[-2000:]
    assert tables(out) == tables(reference[0])
    [ours], [theirs] = checkpoints(cache), checkpoints(reference[1])
    assert ours.read_bytes() == theirs.read_bytes()


def test_a_time_limit_that_leaves_no_time_stops_with_exit_3_and_says_how_to_resume(tmp_path, data_dir, config):
    res = ecgbench(*RUN, "--config", str(config), "--out", str(tmp_path / "out"), "--time-limit", "1s",
                   cache=tmp_path / "cache", data_dir=data_dir)
    assert res.returncode == 3, res.stderr[-2000:]
    assert res.stderr.splitlines()[-1] == ("ecgbench: time limit reached: 0 cell(s) computed, 2 left, running work saved; "
                                           "rerun the same command to continue (exit 3)")
    run = read_json(tmp_path / "out" / "run.json")
    assert run["invocations"][-1]["stopped"] == "time limit" and run["invocations"][-1]["cells_left"] == 2
    assert not (tmp_path / "out" / "cells").exists()


@pytest.mark.parametrize("value", ["soon", "5x", "-3m", "1h-2m"])
def test_a_bad_time_limit_is_one_line_naming_the_option(value, tmp_path, data_dir):
    res = ecgbench(*RUN, "--out", str(tmp_path / "out"), f"--time-limit={value}", cache=tmp_path / "cache", data_dir=data_dir)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "--time-limit" in res.stderr and value in res.stderr
