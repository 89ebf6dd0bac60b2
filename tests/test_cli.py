"""End to end through the CLI on real beats: run, report, resume after SIGKILL, one-line errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN = ["run", "--dataset", "mitbih", "--models", "kachuee,acharya", "--attacks", "fgsm,pgd",
       "--profile", "smoke", "--source", "kachuee", "--no-progress"]


def ecgbench(*args: str, cache: Path, data_dir: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "ecgbench", *args], capture_output=True, text=True, env=env, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """One uninterrupted smoke run of two models x two attacks x two modes."""
    root = tmp_path_factory.mktemp("run")
    res = ecgbench(*RUN, "--out", str(root / "out"), cache=root / "cache", data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    return root / "out"


def test_run_writes_cells_and_leaderboards(finished):
    cells = sorted((finished / "cells").rglob("*.json"))
    assert len(cells) == 2 * (1 + 2 * 2)  # per model: clean + 2 attacks x 2 modes
    board = json.loads((finished / "leaderboard.json").read_text())
    assert {row["model"] for row in board} == {"kachuee", "acharya"}
    kachuee = next(row for row in board if row["model"] == "kachuee")
    assert 0.4 < kachuee["clean"] <= 1.0  # real learning on 4 balanced classes, well above chance
    for row in board:  # (Acharya's SGD barely moves in a smoke run's few steps)
        assert row["worst adaptive"] <= min(row["fgsm adaptive"], row["pgd adaptive"])
    md = (finished / "leaderboard.md").read_text()
    assert "Command: `ecgbench run" in md and "| kachuee" in md
    for name in ("table1-mitbih-static.md", "table1-mitbih-adaptive.md", "attacks.csv", "robust-accuracy-mitbih.png"):
        assert (finished / name).exists(), name


def test_report_rebuilds_identical_tables_from_cells(finished, data_dir, tmp_path):
    before = {p.name: p.read_bytes() for p in finished.glob("*.md")}
    res = ecgbench("report", str(finished), cache=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert {p.name: p.read_bytes() for p in finished.glob("*.md")} == before


def test_killed_run_resumes_without_recomputing_finished_cells(finished, data_dir, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "ecgbench", *RUN, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "cells").rglob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "cells").rglob("*.json")}
    assert 1 <= len(first) < 10, "the kill should land after the first cell and before the last"
    res = ecgbench(*RUN, "--out", str(out), cache=cache, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    for path, (content, mtime) in first.items():
        assert path.read_bytes() == content and path.stat().st_mtime_ns == mtime
    assert len(list((out / "cells").rglob("*.json"))) == 10
    ours = json.loads((out / "leaderboard.json").read_text())
    assert ours == json.loads((finished / "leaderboard.json").read_text())


def test_unknown_model_is_one_line_naming_it(tmp_path, data_dir):
    res = ecgbench("run", "--models", "nope", "--profile", "smoke", "--out", str(tmp_path / "o"), cache=tmp_path, data_dir=data_dir)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "'nope'" in res.stderr and "kachuee" in res.stderr


def test_missing_data_dir_fails_the_cells_with_the_path(tmp_path, data_dir):
    missing = tmp_path / "nowhere"
    res = ecgbench("run", "--models", "kachuee", "--attacks", "", "--profile", "smoke", "--out", str(tmp_path / "o"),
                   "--data-dir", str(missing), cache=tmp_path, data_dir=data_dir)
    assert res.returncode == 1
    assert str(missing) in res.stderr and "ecgbench data download mitdb" in res.stderr


def test_unknown_back_end_stops_before_any_training(tmp_path, data_dir):
    res = ecgbench("run", "--models", "kachuee", "--attacks", "pgd@nope", "--profile", "smoke", "--out", str(tmp_path / "o"),
                   cache=tmp_path, data_dir=data_dir)
    assert res.returncode == 2 and "no back-end 'nope'" in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "o" / "cells").exists() and not (tmp_path / "checkpoints").exists()
