"""Behaviour is kept: a smoke run of every built-in model x attack x mode writes the tables a committed run wrote.

`tests/reference/mitbih-smoke/` holds the tables of that run, made by an earlier version of the code
(its README names the commit and the command). Refactoring the core must not change a number: the
same seed, profile and thread count give the same tables on the CPU. Only the built-in plugins take
part (ECGBENCH_PLUGINS), so an installed third-party plugin does not change the plan.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REFERENCE = Path(__file__).parent / "reference" / "mitbih-smoke"
TABLES = ["leaderboard.json", "table1-mitbih-static.json", "table1-mitbih-adaptive.json", "perclass-mitbih.json",
          "table3.json", "attacks.json"]
COMMAND = ["run", "--profile", "smoke", "--threads", "2", "--no-progress", "-q"]


@pytest.mark.slow
def test_a_smoke_run_reproduces_the_committed_tables(tmp_path, data_dir):
    env = {**os.environ, "ECGBENCH_PLUGINS": "ecgbench-atk", "ECGBENCH_DATA": str(data_dir),
           "ECGBENCH_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "ecgbench", *COMMAND, "--out", str(out)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in TABLES:
        ours, theirs = json.loads((out / name).read_text()), json.loads((REFERENCE / name).read_text())
        assert len(ours) == len(theirs), name
        for row, ref in zip(ours, theirs):
            assert row == ref, f"{name}: {({k: (row.get(k), ref.get(k)) for k in set(row) | set(ref) if row.get(k) != ref.get(k)})}"
