"""Tables from cell files: the leaderboard and the paper's Tables 1-3, as markdown, CSV and JSON.

Reporting never runs a model: `ecgbench report RUN_DIR` rebuilds every table from `cells/`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecgbench.store import atomic_write, read_json, write_json

__all__ = ["load_cells", "leaderboard", "table1", "table2", "table3", "attack_details", "write_report"]


def load_cells(out: Path) -> list[dict]:
    files = sorted((Path(out) / "cells").rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"{out}: no cell files under {Path(out) / 'cells'}; run `ecgbench run --out {out}` first")
    return [read_json(f) for f in files]


def _ok(cells: list[dict]) -> list[dict]:
    return [c for c in cells if c.get("status") == "ok"]


def _attacks(cells: list[dict]) -> list[str]:
    seen: list[str] = []
    for c in cells:
        a = c["cell"]["attack"]
        if a and a not in seen:
            seen.append(a)
    return seen


def _worst(cells: list[dict], mode: str, max_eps: float = float("inf")) -> float:
    """Share of beats correct under every attack of this mode within `max_eps` (AutoAttack's rule); NaN if none ran."""
    bits = [np.frombuffer(c["correct"].encode(), dtype=np.uint8) == ord("1") for c in cells
            if c["cell"]["mode"] == mode and c.get("attack", {}).get("eps", 0.0) <= max_eps]
    return float(np.logical_and.reduce(bits).mean()) if bits else float("nan")


def leaderboard(cells: list[dict]) -> pd.DataFrame:
    """Models as rows: clean accuracy, accuracy under each attack and mode, worst case; best worst case first."""
    cells = _ok(cells)
    rows = []
    for (dataset, model) in dict.fromkeys((c["cell"]["dataset"], c["cell"]["model"]) for c in cells):
        mine = [c for c in cells if c["cell"]["dataset"] == dataset and c["cell"]["model"] == model]
        row: dict[str, Any] = {"dataset": dataset, "model": model}
        for c in mine:
            cell = c["cell"]
            col = "clean" if cell["mode"] == "clean" else f"{cell['attack']} {cell['mode']}"
            row[col] = c.get("system_accuracy", c["metrics"]["accuracy"])
        row["worst static"] = _worst(mine, "static")
        row["worst adaptive"] = _worst(mine, "adaptive")
        # CW runs at eps 0.1 (paper 2.3), ten times the others' budget: also the worst case at 0.01.
        row["worst adaptive eps<=0.01"] = _worst(mine, "adaptive", 0.01 + 1e-9)
        if any(c["cell"]["mode"] == "adaptive-detect" for c in mine):
            row["worst adaptive-detect"] = _worst(mine, "adaptive-detect")
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    modes = ("static", "adaptive", "adaptive-detect")
    order = (["dataset", "model", "clean"] + [f"{a} {m}" for a in _attacks(cells) for m in modes]
             + ["worst static", "worst adaptive", "worst adaptive eps<=0.01", "worst adaptive-detect"])
    df = df[[c for c in order if c in df.columns]]
    return df.sort_values(["dataset", "worst adaptive", "worst static", "clean"], ascending=[True, False, False, False], na_position="last").reset_index(drop=True)


def table1(cells: list[dict], dataset: str, mode: str = "static") -> pd.DataFrame:
    """Paper Table 1 layout: per attack and model, accuracy and each class's sensitivity and specificity."""
    rows = []
    for c in _ok(cells):
        cell = c["cell"]
        if cell["dataset"] != dataset or cell["mode"] not in ("clean", mode):
            continue
        m = c["metrics"]
        row = {"attack": cell["attack"] or "No Attack", "model": cell["model"], "accuracy": m["accuracy"]}
        row.update({k: v for k, v in m.items() if k.startswith(("sensitivity_", "specificity_"))})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    classes = _classes(cells, dataset)
    df = df[["attack", "model", "accuracy"] + [f"{m}_{c}" for c in classes for m in ("sensitivity", "specificity")]]
    attack_order = ["No Attack"] + _attacks(cells)
    df["_a"] = df["attack"].map(attack_order.index)
    return df.sort_values(["_a", "accuracy"], ascending=[True, False]).drop(columns="_a").reset_index(drop=True)


def _classes(cells: list[dict], dataset: str) -> list[str]:
    """Class names in the dataset's own order (stored in each cell; JSON keys alone are sorted)."""
    for c in _ok(cells):
        if c["cell"]["dataset"] == dataset:
            if "classes" in c:
                return list(c["classes"])
            names = [k[len("sensitivity_"):] for k in c["metrics"] if k.startswith("sensitivity_")]
            paper_order = ["N", "S", "V", "F", "Normal", "NORM", "MI"]
            return sorted(names, key=lambda n: paper_order.index(n) if n in paper_order else len(paper_order))
    return []


def table2(cells: list[dict], dataset: str, positive: str, mode: str = "static") -> pd.DataFrame:
    """Paper Table 2 layout: accuracy, sensitivity and specificity (of `positive`, e.g. MI) per model and attack."""
    t1 = table1(cells, dataset, mode)
    if t1.empty:
        return t1
    long = t1.rename(columns={"accuracy": "Accuracy", f"sensitivity_{positive}": "Sensitivity", f"specificity_{positive}": "Specificity"})
    long = long.melt(id_vars=["attack", "model"], value_vars=["Accuracy", "Sensitivity", "Specificity"], var_name="metric")
    wide = long.pivot_table(index=["metric", "model"], columns="attack", values="value", sort=False)
    cols = [a for a in ["No Attack"] + _attacks(cells) if a in wide.columns]
    return wide[cols].reset_index()


def table3(cells: list[dict]) -> pd.DataFrame:
    """Paper Table 3: similarity of the generator's output to the clean beat, per attack and dataset."""
    rows = []
    for c in _ok(cells):
        if "similarity" in c and c["cell"]["mode"] in ("clean", "static"):
            rows.append({"dataset": c["cell"]["dataset"], "model": c["cell"]["model"],
                         "attack": c["cell"]["attack"] or "No Attack", **c["similarity"]})
    return pd.DataFrame(rows)


def attack_details(cells: list[dict]) -> pd.DataFrame:
    """Per attack, model and mode: success rate, perturbation size and SNR, budget and detection figures."""
    rows = []
    for c in _ok(cells):
        cell = c["cell"]
        if not cell["attack"]:
            continue
        row = {"dataset": cell["dataset"], "model": cell["model"], "attack": cell["attack"], "mode": cell["mode"],
               "accuracy": c["metrics"]["accuracy"], "system_accuracy": c.get("system_accuracy"),
               "success_rate": c.get("success_rate"), **c.get("perturbation", {})}
        row.update({f"budget_{k}": v for k, v in c.get("budget", {}).items()})
        if "detection" in c:
            row["detection_accuracy"] = c["detection"].get("accuracy")
            row["flagged_attacked"] = c["detection"]["flagged_eval"]
        row["params"] = json.dumps({k: v for k, v in c["attack"].items() if k not in ("name",)}, sort_keys=True)
        rows.append(row)
    return pd.DataFrame(rows)


def _pct(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracies and rates as percentages with one decimal, for markdown only (CSV and JSON keep floats)."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype.kind == "f" and not col.startswith(("linf", "l2", "snr", "mse", "nrmse", "budget_linf")):
            out[col] = (out[col] * 100).round(1)
    return out


def _md(df: pd.DataFrame) -> str:
    return _pct(df).to_markdown(index=False, floatfmt=".4g") if not df.empty else "_no finished cells_"


def write_report(out: Path, paper: dict | None = None) -> list[Path]:
    """Write every table (md, csv, json) and figure into the run folder; returns the files written."""
    out = Path(out)
    cells = load_cells(out)
    run = read_json(out / "run.json") if (out / "run.json").exists() else {}
    written: list[Path] = []

    def save(name: str, df: pd.DataFrame, title: str) -> None:
        written.append(atomic_write(out / f"{name}.csv", lambda fh: fh.write(df.to_csv(index=False).encode())))
        written.append(write_json(out / f"{name}.json", json.loads(df.to_json(orient="records"))))
        text = f"# {title}\n\n{_provenance(run)}\n{_md(df)}\n"
        written.append(atomic_write(out / f"{name}.md", lambda fh: fh.write(text.encode())))

    save("leaderboard", leaderboard(cells), "Leaderboard: accuracy (%) clean, under each attack (static and adaptive), and worst case")
    datasets = list(dict.fromkeys(c["cell"]["dataset"] for c in cells))
    for d in datasets:
        classes = _classes(cells, d)
        for mode in ("static", "adaptive"):
            if len(classes) > 2:
                save(f"table1-{d}-{mode}", table1(cells, d, mode), f"Table 1 layout ({d}, {mode} attacks): accuracy and per-class sensitivity/specificity (%)")
            elif classes:
                save(f"table2-{d}-{mode}", table2(cells, d, classes[-1], mode), f"Table 2 layout ({d}, {mode} attacks): accuracy, sensitivity and specificity of {classes[-1]} (%)")
    t3 = table3(cells)
    if not t3.empty:
        save("table3", t3, "Table 3 layout: generator output vs clean beat (MSE, SSIM, cross-correlation, NRMSE)")
    save("attacks", attack_details(cells), "Attack details: success rate on correctly classified beats, perturbation size, budget")
    failed = [c for c in cells if c.get("status") != "ok"]
    if failed:
        text = "\n".join(f"- {c['cell']['dataset']}/{c['cell']['model']}/{c['cell']['attack']}/{c['cell']['mode']}: {c['error']}" for c in failed)
        written.append(atomic_write(out / "failures.md", lambda fh: fh.write(f"# Failed cells\n\n{text}\n".encode())))
    try:
        from ecgbench.figures import write_figures

        written += write_figures(out, cells)
    except ImportError:  # matplotlib is a dependency, but a report must not die for a figure
        pass
    return written


def _provenance(run: dict) -> str:
    if not run:
        return ""
    inv = run.get("invocations", [])
    wall = sum(i["wall_seconds"] for i in inv)
    m = run.get("machine", {})
    where = f"GPU {m['gpu']}" if m.get("gpu") else f"CPU ({m.get('cpu_count')} cores, {m.get('threads')} torch threads)"
    return (f"Command: `{run.get('command', '?')}`  \nMachine: {where}, {m.get('platform')}, torch {m.get('torch')}  \n"
            f"Wall time: {wall / 60:.1f} min over {len(inv)} invocation(s); profile `{run.get('profile', {}).get('name')}`, "
            f"split `{run.get('split')}`, static attacks made against `{run.get('source')}`\n")
