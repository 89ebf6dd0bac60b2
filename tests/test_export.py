"""`ecgbench export` (one RobustBench-style entry per model) and `ecgbench merge` (shards into one leaderboard,
refusing runs whose settings or cells differ)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellfactory import RUN, cell, write_cells
from ecgbench.report.export import export_entries, merge_runs

N = 50


def ok(k: int) -> np.ndarray:
    return np.arange(N) < k


def model_cells(model: str, seed: int = 0) -> list[dict]:
    return [cell(model, None, "clean", ok(45 - seed), seed=seed, n_params=123), cell(model, "fgsm", "adaptive", ok(30), seed=seed),
            cell(model, "hsj", "adaptive", ok(40), seed=seed), cell(model, "fgsm", "static", ok(44), seed=seed)]


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return write_cells(tmp_path / "run", model_cells("kachuee") + model_cells("shaker"))


def test_export_has_one_entry_per_model_with_intervals_and_provenance(run: Path):
    entries = export_entries(run)
    assert [(e["dataset"], e["model"]) for e in entries] == [("mitbih", "kachuee"), ("mitbih", "shaker")]
    e = entries[0]
    assert e["params"] == 123 and e["converged"] and e["seeds"] == [0]
    assert e["clean_accuracy"]["mean"] == pytest.approx(0.9) and e["clean_accuracy"]["beats"] == N
    lo, hi = e["clean_accuracy"]["ci95"]
    assert lo < 0.9 < hi
    assert e["robust_accuracy"]["white_box"]["mean"] == pytest.approx(0.6)
    assert e["robust_accuracy"]["black_box"]["mean"] == pytest.approx(0.8)  # hsj only
    assert "static" not in e["robust_accuracy"] and e["training"] == "clean"  # the paper's protocol is a model per attack
    assert e["robust_accuracy"]["with_detector"] is None
    assert e["robust_accuracy"]["white_box"]["upper_bound"] is False and "upper_bound" not in e["clean_accuracy"]
    assert e["threat_model"]["norm"] == "Linf" and e["threat_model"]["eps"] == 0.01
    assert {(a["attack"], a["kind"], a["eps"]) for a in e["attacks"]} == {("fgsm", "gradient", 0.01), ("hsj", "decision", 0.01)}
    assert e["split"] == "random" and e["profile"]["name"] == "quick" and e["command"] == RUN["command"]
    assert e["data"]["classes"] == ["N", "S", "V", "F"] and e["versions"]["torch"] == "2.13.0"


def test_an_entry_judged_on_fewer_attacks_than_the_others_is_exported_as_an_upper_bound(tmp_path: Path):
    partial = [c for c in model_cells("shaker") if c["cell"]["attack"] != "hsj"]  # shaker's HopSkipJump not run yet
    entries = {e["model"]: e for e in export_entries(write_cells(tmp_path / "run", model_cells("kachuee") + partial))}
    white = entries["shaker"]["robust_accuracy"]["white_box"]
    assert white["mean"] == pytest.approx(0.6) and white["beats"] == N and white["upper_bound"] is True  # FGSM alone
    assert entries["shaker"]["robust_accuracy"]["black_box"] is None  # no decision- or score-based attack at all
    assert entries["kachuee"]["robust_accuracy"]["white_box"]["upper_bound"] is False


def test_export_cli_prints_json_and_writes_a_file(run: Path, tmp_path: Path):
    res = subprocess.run([sys.executable, "-m", "ecgbench", "export", str(run), "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == json.loads(json.dumps(export_entries(run)))
    target = tmp_path / "models.json"
    res = subprocess.run([sys.executable, "-m", "ecgbench", "export", str(run), "--json", "--out", str(target)], capture_output=True, text=True)
    assert res.returncode == 0 and len(json.loads(target.read_text())) == 2


def test_merge_of_seed_shards_equals_one_run_of_both_seeds(tmp_path: Path):
    a = write_cells(tmp_path / "a", model_cells("kachuee", 0), {**RUN, "seeds": [0]})
    b = write_cells(tmp_path / "b", model_cells("kachuee", 1), {**RUN, "seeds": [1], "machine": {**RUN["machine"], "gpu": "H100"}})
    both = write_cells(tmp_path / "both", model_cells("kachuee", 0) + model_cells("kachuee", 1))
    merge_runs([a, b], tmp_path / "merged")
    from ecgbench.report.write import write_report

    write_report(both)
    merged = pd.read_csv(tmp_path / "merged" / "leaderboard.csv")
    pd.testing.assert_frame_equal(merged, pd.read_csv(both / "leaderboard.csv"))
    assert merged.loc[0, "seeds"] == "0,1" and merged.loc[0, "clean sd"] > 0
    manifest = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert [m["run"] for m in manifest["merged_from"]] == [str(a), str(b)] and manifest["seeds"] == [0, 1]
    assert (tmp_path / "merged" / "leaderboard.html").exists()


def test_merge_refuses_runs_whose_settings_differ_naming_the_setting(tmp_path: Path):
    a = write_cells(tmp_path / "a", model_cells("kachuee"))
    other = copy.deepcopy(RUN)
    other["profile"]["epochs"] = 20
    b = write_cells(tmp_path / "b", model_cells("shaker"), other)
    res = subprocess.run([sys.executable, "-m", "ecgbench", "merge", str(a), str(b), "--out", str(tmp_path / "m")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "profile.epochs: 3 vs 20" in res.stderr
    assert not (tmp_path / "m").exists()


def test_merge_refuses_another_torch_version_but_not_another_build_of_it(tmp_path: Path):
    a = write_cells(tmp_path / "a", model_cells("kachuee"))
    gpu = write_cells(tmp_path / "gpu", model_cells("shaker"), {**RUN, "machine": {**RUN["machine"], "torch": "2.13.0+cu121", "gpu": "H100"}})
    merge_runs([a, gpu], tmp_path / "m")
    assert len(pd.read_csv(tmp_path / "m" / "leaderboard.csv")) == 2
    old = write_cells(tmp_path / "old", model_cells("shaker"), {**RUN, "machine": {**RUN["machine"], "torch": "2.4.1"}})
    with pytest.raises(ValueError, match=r"settings differ in versions.torch: \"2.13.0\" vs \"2.4.1\""):
        merge_runs([a, old], tmp_path / "m2")


def test_merge_refuses_the_same_cell_computed_differently(tmp_path: Path):
    a = write_cells(tmp_path / "a", model_cells("kachuee"))
    changed = model_cells("kachuee")
    changed[1]["key"] = "another-key"
    b = write_cells(tmp_path / "b", changed)
    with pytest.raises(ValueError, match=r"cells/mitbih/kachuee/fgsm\.adaptive\.json differs between"):
        merge_runs([a, b], tmp_path / "m")


def test_merge_needs_two_runs_with_run_json(tmp_path: Path):
    a = write_cells(tmp_path / "a", model_cells("kachuee"))
    with pytest.raises(ValueError, match="at least two"):
        merge_runs([a], tmp_path / "m")
    (tmp_path / "b" / "cells").mkdir(parents=True)
    with pytest.raises(ValueError, match="no run.json"):
        merge_runs([a, tmp_path / "b"], tmp_path / "m")
