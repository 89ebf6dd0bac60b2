"""One row, one model (issue 17): every headline number of a static run is the robustness of one trained model.

A static run has, per model, a row for the model trained on clean beats and a row for the paper's
defence (trained on clean beats plus every attack's static set, paper 3.1); each row's clean
accuracy, adaptive attacks and worst cases come from cells of one checkpoint. The paper's protocol
(per attack, a model trained on that attack's static set) is its own table, with no worst case.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

RUN = ["run", "--dataset", "mitbih", "--models", "kachuee,acharya", "--attacks", "fgsm,pgd", "--modes", "static,adaptive",
       "--profile", "smoke", "--source", "kachuee", "--no-progress"]


def ecgbench(*args: str, cache: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "ecgbench", *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def static_run(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("rows")
    res = ecgbench(*RUN, "--out", str(root / "out"), cache=root / "cache", data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    return root / "out", root / "cache"


def _cells(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "cells").rglob("*.json"))]


def test_every_headline_number_comes_from_cells_of_one_checkpoint(static_run):
    out, _ = static_run
    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for c in _cells(out):
        if c["cell"]["mode"] != "static":
            rows[(c["cell"]["model"], c["cell"]["training"])].append(c)
    assert set(rows) == {(m, t) for m in ("kachuee", "acharya") for t in ("clean", "defence")}
    for (model, training), cells in rows.items():
        assert len(cells) == 3, (model, training)  # clean + fgsm + pgd, adaptive
        assert len({c["checkpoint"] for c in cells}) == 1 and len({c["weights"] for c in cells}) == 1, (model, training)
        clean = next(c for c in cells if c["cell"]["mode"] == "clean")
        for c in cells:  # an attacked accuracy is measured on the model whose clean accuracy heads the row
            assert c["clean_accuracy"] == clean["metrics"]["accuracy"]
        want = "clean" if training == "clean" else "clean + static sets of fgsm, pgd"
        assert {c["trained_on"] for c in cells} == {want}
    board = {(r["model"], r["training"]): r for r in json.loads((out / "leaderboard.json").read_text())}
    assert set(board) == {("kachuee", "clean"), ("kachuee", "paper defence"), ("acharya", "clean"), ("acharya", "paper defence")}
    for (model, training), row in board.items():
        cells = rows[(model, "clean" if training == "clean" else "defence")]
        clean = next(c for c in cells if c["cell"]["mode"] == "clean")
        assert row["clean"] == pytest.approx(clean["metrics"]["accuracy"])
        both = [c for c in cells if c["cell"]["mode"] == "adaptive"]
        survived = [all(c["correct"][i] == "1" for c in both) for i in range(len(both[0]["correct"]))]
        assert row["worst white-box eps=0.01"] == pytest.approx(sum(survived) / len(survived))  # AND over one model's cells
        assert "worst static eps=0.01" not in row  # no worst case across the protocol's per-attack models


def test_the_papers_protocol_is_its_own_table_of_per_attack_models(static_run):
    out, _ = static_run
    static = [c for c in _cells(out) if c["cell"]["mode"] == "static"]
    assert len(static) == 4
    for c in static:
        assert c["trained_on"] == f"clean + {c['cell']['attack']} static set"
    assert len({c["checkpoint"] for c in static if c["cell"]["model"] == "kachuee"}) == 2  # one model per attack
    md = (out / "leaderboard.md").read_text()
    assert "the paper's protocol" in md and "static worst" not in md
    assert "static attacks made against `kachuee`" in md


def _with_other_weights(run: Path, copy: Path, cell: str, weights: str) -> str:
    """A copy of the run whose `cell` claims other weights, as if it came from another training of the recipe;
    returns the weights it had."""
    shutil.copytree(run, copy)
    victim = copy / "cells" / "mitbih" / "kachuee" / cell
    record = json.loads(victim.read_text())
    right, record["weights"] = record["weights"], weights
    victim.write_text(json.dumps(record))
    return right


def test_a_report_refuses_a_row_mixing_two_trained_models(static_run, data_dir, tmp_path):
    out, cache = static_run
    copy = tmp_path / "copy"
    _with_other_weights(out, copy, "pgd.adaptive.json", "0" * 16)
    res = ecgbench("report", str(copy), cache=cache, data_dir=data_dir)
    assert res.returncode == 2
    assert "kachuee" in res.stderr and "pgd.adaptive" in res.stderr and "0000000000000000" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_resumed_run_recomputes_cells_of_other_weights(static_run, data_dir, tmp_path):
    out, cache = static_run
    copy = tmp_path / "copy"
    right = _with_other_weights(out, copy, "fgsm.adaptive.json", "f" * 16)
    victim = copy / "cells" / "mitbih" / "kachuee" / "fgsm.adaptive.json"
    res = ecgbench(*RUN, "--out", str(copy), cache=cache, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "other trained weights" in res.stderr and "fgsm/adaptive" in res.stderr
    assert json.loads(victim.read_text())["weights"] == right
    assert "16 cells planned, 15 already done" in res.stderr  # that cell alone
    assert res.stderr.count("robust accuracy after") == 1


def test_the_source_is_named_only_where_static_sets_exist(tmp_path, data_dir):
    dry = ecgbench("run", "--models", "kach*", "--attacks", "fgsm", "--profile", "smoke", "--out", str(tmp_path / "a"),
                   "--dry-run", "--no-calibrate", cache=tmp_path / "cache", data_dir=data_dir)
    assert dry.returncode == 0, dry.stderr
    assert "static sets are made against ecg-atk-gan" in dry.stdout and "not among --models" in dry.stdout
    adaptive = ecgbench("run", "--models", "kachuee", "--attacks", "fgsm", "--modes", "adaptive", "--profile", "smoke",
                        "--out", str(tmp_path / "b"), cache=tmp_path / "cache", data_dir=data_dir)
    assert adaptive.returncode == 0, adaptive.stderr[-2000:]
    assert "static attacks made against" not in (tmp_path / "b" / "leaderboard.md").read_text()
    dry = ecgbench("run", "--models", "kachuee", "--attacks", "fgsm", "--modes", "adaptive", "--profile", "smoke",
                   "--out", str(tmp_path / "b"), "--dry-run", "--no-calibrate", cache=tmp_path / "cache", data_dir=data_dir)
    assert "static sets are made against" not in dry.stdout
