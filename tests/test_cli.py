"""End to end through the CLI on real beats: run, report, resume after SIGKILL, one-line errors."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ctrl_c_as_in_a_terminal

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
    assert len(cells) == 2 * (2 * (1 + 2) + 2)  # per model: 2 rows (clean, paper defence) x (clean + 2 adaptive); 2 static
    board = json.loads((finished / "leaderboard.json").read_text())
    assert {(row["model"], row["training"]) for row in board} == {(m, t) for m in ("kachuee", "acharya") for t in ("clean", "paper defence")}
    kachuee = next(row for row in board if row["model"] == "kachuee" and row["training"] == "clean")
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
    assert 1 <= len(first) < 16, "the kill should land after the first cell and before the last"
    res = ecgbench(*RUN, "--out", str(out), cache=cache, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    for path, (content, mtime) in first.items():
        assert path.read_bytes() == content and path.stat().st_mtime_ns == mtime
    assert len(list((out / "cells").rglob("*.json"))) == 16
    ours = json.loads((out / "leaderboard.json").read_text())
    assert ours == json.loads((finished / "leaderboard.json").read_text())


def test_unknown_model_is_one_line_naming_it(tmp_path, data_dir):
    res = ecgbench("run", "--models", "nope", "--profile", "smoke", "--out", str(tmp_path / "o"), cache=tmp_path, data_dir=data_dir)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "'nope'" in res.stderr and "kachuee" in res.stderr


def test_missing_data_dir_is_one_line_even_with_a_warm_cache(finished, tmp_path, data_dir):
    missing = tmp_path / "nowhere"
    cache = finished.parent / "cache"  # warm: the finished run cut and cached these beats
    res = ecgbench(*RUN, "--out", str(tmp_path / "o"), "--data-dir", str(missing), cache=cache, data_dir=data_dir)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert str(missing) in res.stderr
    assert not (tmp_path / "o" / "cells").exists() and not (tmp_path / "o" / "leaderboard.md").exists()


def test_unknown_back_end_stops_before_any_training(tmp_path, data_dir):
    res = ecgbench("run", "--models", "kachuee", "--attacks", "pgd@nope", "--profile", "smoke", "--out", str(tmp_path / "o"),
                   cache=tmp_path, data_dir=data_dir)
    assert res.returncode == 2 and "no back-end 'nope'" in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "o" / "cells").exists() and not (tmp_path / "checkpoints").exists()


# -- trust what is on disk ----------------------------------------------------------------------------
CLEAN = ["run", "--dataset", "mitbih", "--models", "kachuee", "--attacks", "", "--profile", "smoke", "--no-progress"]
SMOKE_RECORDS = ("100", "201", "208", "209", "213", "232")


def _copy_records(src: Path, dst: Path) -> Path:
    (dst / "mitdb").mkdir(parents=True)
    for name in SMOKE_RECORDS:
        for ext in ("hea", "dat", "atr"):
            (dst / "mitdb" / f"{name}.{ext}").write_bytes((src / "mitdb" / f"{name}.{ext}").read_bytes())
    (dst / "mitdb" / "RECORDS").write_text("\n".join(SMOKE_RECORDS) + "\n")
    return dst


def test_damaged_data_is_read_afresh_and_stops_the_run_before_any_cell(tmp_path, data_dir):
    data, cache = _copy_records(data_dir, tmp_path / "data"), tmp_path / "cache"
    ok = ecgbench(*CLEAN, "--out", str(tmp_path / "good"), cache=cache, data_dir=data)
    assert ok.returncode == 0, ok.stderr[-2000:]
    dat = data / "mitdb" / "201.dat"
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 3])  # truncated, the cache still warm
    res = ecgbench(*CLEAN, "--out", str(tmp_path / "bad"), cache=cache, data_dir=data)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "201.dat" in res.stderr and "truncated" in res.stderr, res.stderr
    assert not (tmp_path / "bad" / "cells").exists()


def test_damaged_cache_entries_and_cells_are_reported_deleted_and_recomputed(finished, tmp_path, data_dir):
    import shutil

    out, cache = tmp_path / "out", tmp_path / "cache"
    shutil.copytree(finished, out)
    shutil.copytree(finished.parent / "cache", cache)
    cell = out / "cells" / "mitbih" / "kachuee" / "pgd.static.json"
    checkpoint = cache / "checkpoints" / f"kachuee-{json.loads(cell.read_text())['checkpoint']}.pt"
    # the cell (the paper's protocol), the checkpoint it scores, the attacked set that checkpoint was trained on
    # and the cell is tested on, and the beats
    victims = [cell, checkpoint, next((cache / "attacked").glob("pgd-*.npz")), next((cache / "beats").glob("*.npz"))]
    for v in victims:
        v.write_bytes(v.read_bytes()[: v.stat().st_size // 2])
    res = ecgbench(*RUN, "--out", str(out), cache=cache, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    for v in victims:
        line = next(line for line in res.stderr.splitlines() if str(v) in line)
        assert "is damaged" in line and "recomputing" in line
    assert json.loads((out / "leaderboard.json").read_text()) == json.loads((finished / "leaderboard.json").read_text())


def test_a_second_run_on_the_same_folder_names_the_holder_or_waits(tmp_path, data_dir):
    from ecgbench.store.locks import run_lock

    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    with run_lock(out, "ecgbench run (the test)", wait=False):
        res = ecgbench(*CLEAN, "--out", str(out), cache=cache, data_dir=data_dir)
        assert res.returncode == 2 and res.stderr.count("\n") == 1
        assert f"in use by pid {os.getpid()}" in res.stderr and "--wait" in res.stderr
    assert not (out / "cells").exists()
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache)}
    with run_lock(out, "ecgbench run (the test)", wait=False):
        proc = subprocess.Popen([sys.executable, "-m", "ecgbench", *CLEAN, "--out", str(out), "--wait"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3.0)
        assert proc.poll() is None and not (out / "cells").exists()  # queued behind the holder
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert len(list((out / "cells").rglob("*.json"))) == 1


def test_two_runs_sharing_a_cache_train_each_model_once(tmp_path, data_dir):
    cache = tmp_path / "cache"
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-m", "ecgbench", *CLEAN, "--out", str(tmp_path / f"o{i}")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outputs]
    trained = sum(err.count("trained kachuee") for _, err in outputs)
    assert trained == 1  # one run trained it under the entry's lock; the other waited and loaded it
    a, b = (json.loads((tmp_path / f"o{i}" / "cells" / "mitbih" / "kachuee" / "none.clean.json").read_text()) for i in range(2))
    assert a["correct"] == b["correct"] and a["checkpoint"] == b["checkpoint"]


def test_a_seed_is_recorded_keyed_and_reproducible(tmp_path, data_dir):
    runs = []
    for i in range(2):  # the same seed twice, each on a cold cache
        out = tmp_path / f"o{i}"
        res = ecgbench(*CLEAN, "--seed", "3", "--out", str(out), cache=tmp_path / f"c{i}", data_dir=data_dir)
        assert res.returncode == 0, res.stderr[-2000:]
        runs.append(out)
    cell = json.loads((runs[0] / "cells" / "mitbih" / "kachuee" / "none.clean.seed3.json").read_text())
    assert cell["cell"]["seed"] == 3 and json.loads((runs[0] / "run.json").read_text())["seeds"] == [3]
    def tables(run: Path) -> list[str]:  # the provenance lines hold the folder and the wall time
        return [line for line in (run / "leaderboard.md").read_text().splitlines()
                if not line.startswith(("Command:", "Machine:", "Wall time:"))]

    assert tables(runs[0]) == tables(runs[1])
    assert json.loads((runs[0] / "leaderboard.json").read_text()) == json.loads((runs[1] / "leaderboard.json").read_text())


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_run_says_how_to_resume_and_leaves_whole_files(tmp_path, data_dir, sig, code):
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache)}
    args = [*RUN, "--models", "kachuee", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "ecgbench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_as_in_a_terminal)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "cells").rglob("*.json")):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "rerun the same command to resume" in err.splitlines()[-1]
    for f in (out / "cells").rglob("*.json"):
        json.loads(f.read_text())
    assert not list(out.rglob("*.tmp")) and not list(cache.rglob("*.tmp"))
    stopped = json.loads((out / "run.json").read_text())["invocations"][-1]  # the stopped invocation is recorded
    assert stopped["stopped"] in ("Stopped", "KeyboardInterrupt") and stopped["cells_computed"] >= 1
    res = ecgbench(*args, cache=cache, data_dir=data_dir)
    assert res.returncode == 0 and len(list((out / "cells").rglob("*.json"))) == 8, res.stderr[-2000:]


# -- run files and logs -----------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]


def test_the_readme_config_example_runs_and_the_command_line_overrides_it(tmp_path, data_dir):
    out = tmp_path / "out"
    res = ecgbench("run", "--config", str(REPO / "examples" / "run.toml"), "--models", "kachuee", "--out", str(out),
                   cache=tmp_path / "cache", data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    run = json.loads((out / "run.json").read_text())
    assert run["models"] == ["kachuee"]  # the command line won over the file's two models
    assert run["attacks"] == ["fgsm", "pgd"] and run["modes"] == ["adaptive"]  # the rest came from the file
    assert run["profile"]["epochs"] == 2 and run["profile"]["name"] != "smoke"  # a changed field renames the profile
    assert sorted(p.name for p in (out / "cells" / "mitbih" / "kachuee").glob("*.json")) == [
        "fgsm.adaptive.json", "none.clean.json", "pgd.adaptive.json"]


def test_a_log_file_gets_timestamped_lines_not_progress_frames(tmp_path, data_dir):
    res = ecgbench(*CLEAN, "--out", str(tmp_path / "o"), "--verbose",
                   cache=tmp_path / "c", data_dir=data_dir)  # stderr is a pipe here, as in a log file
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stderr.splitlines()
    assert "\r" not in res.stderr and lines
    assert all(line[:8].count(":") == 2 and line[2] == ":" for line in lines), lines[:5]
    assert any("clean accuracy" in line for line in lines) and any("epoch" in line for line in lines)  # --verbose: epochs
    quiet = ecgbench(*CLEAN, "--out", str(tmp_path / "q"), "--quiet", cache=tmp_path / "c", data_dir=data_dir)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr[-2000:]


@pytest.mark.parametrize("profile", ["smoke", "quick", "standard", "paper"])
def test_a_dry_run_counts_the_graph_of_every_profile_and_writes_nothing(profile, tmp_path, data_dir, cache_dir):
    out = tmp_path / "o"
    res = ecgbench("run", "--models", "all", "--attacks", "all", "--profile", profile, "--dry-run", "--no-calibrate",
                   "--out", str(out), cache=cache_dir, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"profile {profile}" in res.stdout and "trainings" in res.stdout and "train kachuee" in res.stdout
    assert not out.exists()


def test_a_calibrated_dry_run_estimates_the_wall_time(tmp_path, data_dir, cache_dir):
    res = ecgbench("run", "--models", "kachuee,acharya", "--attacks", "fgsm,boundary", "--profile", "smoke", "--dry-run",
                   "--executor", "jobs", "--jobs", "2", "--out", str(tmp_path / "o"), cache=cache_dir, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ms/step" in res.stdout and "ms/beat" in res.stdout
    assert "estimated wall time:" in res.stdout and "with jobs x 2" in res.stdout
    assert "--time-limit" not in res.stdout
    limited = ecgbench("run", "--models", "kachuee", "--attacks", "fgsm", "--profile", "smoke", "--dry-run", "--time-limit", "2h",
                       "--out", str(tmp_path / "o"), cache=cache_dir, data_dir=data_dir)
    assert limited.returncode == 0, limited.stderr[-2000:]
    assert re.search(r"with --time-limit 2\.00 h \(tasks stop 1\.0 min before it, to write the report\): all \d+ cells left "
                     r"would finish in this invocation", limited.stdout), limited.stdout
    assert not (tmp_path / "o").exists()


def test_seeds_and_budgets_run_end_to_end_into_curves_and_spreads(tmp_path, data_dir, cache_dir):
    out = tmp_path / "out"
    res = ecgbench("run", "--models", "kachuee", "--attacks", "fgsm,boundary", "--modes", "adaptive", "--profile", "smoke",
                   "--seeds", "0,1", "--eps", "0.003,0.01,0.03", "--no-progress", "--out", str(out), cache=cache_dir, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    cells = [json.loads(p.read_text()) for p in (out / "cells").rglob("*.json")]
    assert len(cells) == 2 * (1 + 3 + 1)  # per seed: clean, fgsm at 3 budgets, boundary once (judged at each eps)
    assert {c["cell"]["seed"] for c in cells} == {0, 1}
    boundary = [c for c in cells if c["cell"]["attack"] == "boundary"]
    assert all(len(c["linf_found"]) == len(c["correct"]) for c in boundary)
    fgsm = sorted((c for c in cells if c["cell"]["attack"] == "fgsm" and c["cell"]["seed"] == 0), key=lambda c: c["attack"]["eps"])
    assert [c["attack"]["eps"] for c in fgsm] == [0.003, 0.01, 0.03]
    assert all(c["perturbation"]["linf_max"] <= c["attack"]["eps"] + 1e-5 for c in fgsm)
    md = (out / "leaderboard.md").read_text()
    assert "±" in md  # mean and spread over the two seeds
    assert list(out.glob("robust-curves-*.png")) and list(out.glob("auc-*.md"))


def test_budgets_in_microvolts_run_end_to_end_beside_the_beat_scale(tmp_path, data_dir, cache_dir):
    """`--eps-uv`: every beat attacked within the same voltage, i.e. its own eps = budget / its microvolts per unit,
    by the attacks that take a budget per beat or minimise; APGD (one budget for all) is left out and named. Each
    attacked cell states its budget in both units; the headline and per-attack tables keep the beat-scale cells."""
    out = tmp_path / "out"
    res = ecgbench("run", "--models", "kachuee", "--attacks", "fgsm,apgd,boundary", "--modes", "adaptive", "--profile", "smoke",
                   "--eps-uv", "10,40", "--no-progress", "--out", str(out), cache=cache_dir, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "--eps-uv: not for apgd: one budget for all beats" in res.stderr + res.stdout
    cells = {p.name: json.loads(p.read_text()) for p in (out / "cells").rglob("*.json")}
    assert sorted(cells) == sorted(["none.clean.json", "fgsm.adaptive.json", "fgsm.adaptive.eps10uV.json", "fgsm.adaptive.eps40uV.json",
                                    "apgd.adaptive.json", "boundary.adaptive.json", "boundary.adaptive.eps10uV.json",
                                    "boundary.adaptive.eps40uV.json"])
    assert all(c["status"] == "ok" for c in cells.values())
    per_unit = cells["fgsm.adaptive.json"]["units"]["uV"]  # eps 0.01 in microvolts over the test beats
    assert cells["fgsm.adaptive.json"]["units"]["eps"] == {"median": 0.01, "p5": 0.01, "p95": 0.01}
    for uv in (10, 40):
        c = cells[f"fgsm.adaptive.eps{uv}uV.json"]
        assert c["cell"]["eps_uv"] == uv and c["attack"]["eps"] is None
        assert c["units"]["uV"] == pytest.approx({"median": uv, "p5": uv, "p95": uv}, rel=1e-6)  # float32 budgets
        # the same beats' eps: budget over each beat's microvolts per unit (percentiles swap under 1/x)
        eps = c["units"]["eps"]
        assert eps["median"] == pytest.approx(uv * 0.01 / per_unit["median"], rel=0.05)
        assert eps["p5"] == pytest.approx(uv * 0.01 / per_unit["p95"], rel=0.05)
    assert "linf_found" not in cells["boundary.adaptive.eps10uV.json"]  # judged per beat as it ran, not at any eps later
    board = json.loads((out / "leaderboard.json").read_text())
    assert len(board) == 1  # one row: the microvolt cells are not rows or columns of their own
    uv_table = json.loads((out / "uv-curves-mitbih.json").read_text())
    assert [(r["uV"], r["attacks"]) for r in uv_table] == [(10, "boundary, fgsm"), (40, "boundary, fgsm")]
    budgets = json.loads((out / "budgets-mitbih.json").read_text())
    assert [b["eps"] for b in budgets] == [0.01] and budgets[0]["uV median"] == round(per_unit["median"], 1)
    assert (out / "robust-curves-uv-mitbih.png").exists()
    md = (out / "leaderboard.md").read_text()
    assert "robust accuracy (%) at budgets in microvolts" in md
    assert f"eps 0.01 on these beats is a median {round(per_unit['median'], 1):g} microvolts" in md  # under the headline


def test_a_dry_run_of_a_finished_or_resumed_run_counts_only_what_is_left(finished, tmp_path, data_dir):
    """Finished cells, cached checkpoints and attacked sets are not counted again; the dry run changes nothing."""
    import shutil

    out, cache = tmp_path / "out", tmp_path / "cache"
    shutil.copytree(finished, out)
    shutil.copytree(finished.parent / "cache", cache)
    dry = [*RUN, "--out", str(out), "--dry-run", "--no-calibrate"]
    res = ecgbench(*dry, cache=cache, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "16 cells, 0 to compute: 0 trainings, 0 static sets and 0 attacked beats over 0 attack type(s) left" in res.stdout
    (out / "cells" / "mitbih" / "kachuee" / "pgd.adaptive.json").unlink()  # one cell lost, its model still cached
    before = sorted((p, p.stat().st_mtime_ns) for p in cache.rglob("*"))
    res = ecgbench(*dry, cache=cache, data_dir=data_dir)
    assert re.search(r"16 cells, 1 to compute: 0 trainings, 0 static sets and [\d,]+ attacked beats over 1 attack type", res.stdout)
    assert "attack pgd" in res.stdout
    for p in (cache / "checkpoints").glob("kachuee-*"):
        p.unlink()  # and its checkpoints: now its training is counted again
    res = ecgbench(*dry, cache=cache, data_dir=data_dir)
    assert re.search(r"16 cells, 1 to compute: 1 trainings, 0 static sets and [\d,]+ attacked beats over 1 attack type", res.stdout)
    assert "train kachuee" in res.stdout
    assert sorted(p.name for p in (out / "cells").rglob("*.json")) == sorted(
        p.name for p in (finished / "cells").rglob("*.json") if p.name != "pgd.adaptive.json" or "acharya" in str(p))
    assert all(p.exists() for p, _ in before if "checkpoints" not in str(p))
