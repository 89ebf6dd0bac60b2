"""Share results: `ecgbench export RUN --json` (one entry per model, after RobustBench's per-model JSON) and
`ecgbench merge RUN1 RUN2 ... --out DIR` (shards of one plan, a CPU and a GPU run, into one leaderboard).

Both read cell files and run.json only; neither runs a model.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ecgbench.report.results import COMMON_EPS, classes_of, load_cells, results
from ecgbench.report.tables import MEASURES, leaderboard, row_key
from ecgbench.report.write import write_report
from ecgbench.store.bundle import difference
from ecgbench.store.io import read_json, write_json

__all__ = ["export_entries", "merge_runs", "settings", "MERGE_KEYS"]

# run.json keys two runs must share to be merged; seeds, eps lists, executors, machines and the cells planned
# may differ (a CPU run and a GPU run of one plan merge: torch's local build tag, `+cpu` / `+cu121`, is ignored).
MERGE_KEYS = ("profile", "split", "source", "versions")
IGNORED = {"seed", "seeds", "eps"}
THREATS = {"white_box": f"worst white-box eps={COMMON_EPS:g}", "black_box": f"worst black-box eps={COMMON_EPS:g}",
           "with_detector": f"worst with detector eps={COMMON_EPS:g}"}


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def _acc(row: dict, col: str) -> dict | None:
    if _num(row.get(col)) is None:
        return None
    out = {"mean": _num(row[col]), "sd_over_seeds": _num(row.get(f"{col} sd")),
           "ci95": [_num(row.get(f"{col} lo")), _num(row.get(f"{col} hi"))], "beats": int(row.get(f"{col} n") or 0)}
    if f"{col} upper bound" in row:  # a worst case: True where some attack the board's other rows had did not score
        out["upper_bound"] = bool(row[f"{col} upper bound"])
    return out


def export_entries(run_dir: Path) -> list[dict]:
    """One entry per dataset and row (a model as trained: on clean beats, or the paper's defence): clean and robust accuracies with 95 % bootstrap intervals, threat
    model, attacks and budgets, data, split, profile, seeds, versions and command."""
    run_dir = Path(run_dir)
    cells = load_cells(run_dir)
    run = read_json(run_dir / "run.json") if (run_dir / "run.json").exists() else {}
    rs = results(cells)
    board = leaderboard(cells)
    machine = run.get("machine", {})
    entries = []
    for row in board.to_dict("records"):
        training = row_key(row)[2]
        mine = [r for r in rs if r.dataset == row["dataset"] and r.model == row["model"] and r.training == training]
        attacks = {}
        for r in mine:
            if r.attack:
                a = attacks.setdefault((r.attack, r.eps), {"attack": r.attack, "kind": r.kind, "eps": r.eps, "modes": [],
                                                          "judged_at_every_eps": r.linf_found is not None,
                                                          "params": {k: v for k, v in r.record.get("attack", {}).items() if k != "name"}})
                if r.mode not in a["modes"]:
                    a["modes"].append(r.mode)
        entries.append({
            "dataset": row["dataset"], "model": row["model"], "training": row.get("training", "clean"), "params": None if row.get("params") is None else int(row["params"]),
            "converged": bool(row["converged"]), "val_balanced_accuracy": _num(row.get("val_balanced_accuracy")),
            "threat_model": {"norm": "Linf", "eps": COMMON_EPS, "scale": "each beat min-max scaled to [0, 1] (paper 3.1)"},
            "clean_accuracy": _acc(row, "clean"),
            "robust_accuracy": {k: _acc(row, col) for k, col in THREATS.items()},
            "robust_accuracy_rules": {k: MEASURES[col][2] for k, col in THREATS.items()},
            "attacks": [attacks[k] for k in sorted(attacks, key=lambda k: (k[0], k[1] or 0.0))],
            "data": {"dataset": row["dataset"], "classes": classes_of(cells, row["dataset"]), "test_beats": int(row.get("clean n") or 0)},
            "split": run.get("split"), "profile": run.get("profile"), "seeds": [int(s) for s in str(row["seeds"]).split(",") if s],
            "versions": run.get("versions") or {k: machine.get(k) for k in ("python", "torch")},
            "machine": machine, "command": run.get("command"),
        })
    return entries


def settings(run: dict) -> dict:
    """The part of a run.json that must match for two runs' cells to share a leaderboard."""
    def strip(v: Any) -> Any:
        return {k: strip(x) for k, x in v.items() if k not in IGNORED} if isinstance(v, dict) else v

    out = {k: strip(run[k]) for k in MERGE_KEYS if k in run}
    torch = run.get("machine", {}).get("torch")
    if torch and "versions" not in run:
        out["versions"] = {"torch": str(torch).partition("+")[0]}
    return out


def merge_runs(runs: Sequence[Path], out: Path) -> list[Path]:
    """Copy every run's cells into `out` and write one report; refuse runs whose settings or cells disagree."""
    runs, out = [Path(r) for r in runs], Path(out)
    if len(runs) < 2:
        raise ValueError("merge: give at least two run folders")
    manifests = []
    for r in runs:
        if not (r / "run.json").exists():
            raise ValueError(f"{r}: no run.json; merge needs each run's settings to check they match")
        manifests.append(read_json(r / "run.json"))
    base = settings(manifests[0])
    for r, m in zip(runs[1:], manifests[1:]):
        mine = settings(m)
        if base.get("source") is None or mine.get("source") is None:  # a run without static cells has no source
            mine = {**mine, "source": base.get("source")}
        diff = difference(base, mine)
        if diff:
            raise ValueError(f"cannot merge {runs[0]} and {r}: their settings differ in {diff}")
    if out.resolve() in {r.resolve() for r in runs}:
        raise ValueError(f"--out {out}: must be a new folder, not one of the runs merged")
    seen: dict[Path, tuple[Path, str]] = {}
    plan: list[tuple[Path, Path]] = []
    for r in runs:
        for f in sorted((r / "cells").rglob("*.json")):
            rel = f.relative_to(r)
            key = read_json(f).get("key", "")
            if rel in seen:
                if seen[rel][1] != key:
                    raise ValueError(f"cannot merge: {rel} differs between {seen[rel][0]} and {r} (cell keys {seen[rel][1]} vs {key})")
                continue
            seen[rel] = (r, key)
            plan.append((f, out / rel))
    if not plan:
        raise ValueError(f"merge: no cell files under {', '.join(str(r / 'cells') for r in runs)}")
    for src, dst in plan:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    union = {k: list(dict.fromkeys(x for m in manifests for x in m.get(k, []))) for k in ("datasets", "models", "attacks", "modes")}
    merged = {**manifests[0], **union, "command": "ecgbench merge " + " ".join(str(r) for r in runs) + f" --out {out}",
              "invocations": [i for m in manifests for i in m.get("invocations", [])],
              "failures": [f for m in manifests for f in m.get("failures", [])],
              "merged_from": [{"run": str(r), "command": m.get("command"), "machine": m.get("machine"),
                               "invocations": m.get("invocations", [])} for r, m in zip(runs, manifests)]}
    seeds = sorted({int(s) for m in manifests for s in (m.get("seeds") or [m.get("profile", {}).get("seed", 0)])})
    merged["seeds"] = seeds
    machines = {json.dumps(m.get("machine"), sort_keys=True) for m in manifests}
    if len(machines) > 1:
        merged["machine"] = {**manifests[0].get("machine", {}), "note": f"merged from {len(machines)} machines; see merged_from"}
    write_json(out / "run.json", merged)
    return write_report(out)
