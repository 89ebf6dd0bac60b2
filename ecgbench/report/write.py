"""Writing a run's report: every table as markdown, CSV and JSON, the figures, the HTML page, and the hook plugins' additions.

Everything is computed from the cell files alone (`tables`), so a report can be rebuilt any time.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd
import pluggy

from ecgbench.contracts import hooks
from ecgbench.report.figures import save, write_figures
from ecgbench.report.html import write_html
from ecgbench.report.curves import curve_tables
from ecgbench.report.units import UV_NOTE, budget_table, eps_in_microvolts, uv_tables
from ecgbench.report.results import classes_of, load_cells, static_source
from ecgbench.report.layouts import per_class_worst, protocol_table, table1, table2, table3
from ecgbench.report.seeds import PAIRS_NOTE, seed_tables
from ecgbench.report.tables import (AUC_NOTE, HEADLINE_NOTE, MODES, attack_details, auc_table, headline, leaderboard, mode_table,
                                    pct)
from ecgbench.store.io import atomic_write, read_json, write_json

__all__ = ["write_report", "leaderboard_markdown", "provenance", "markdown"]


def markdown(df: pd.DataFrame, percent: bool = True) -> str:
    if df.empty:
        return "_no finished cells_"
    if not percent:  # already formatted strings: keep "69.0" as written
        # object columns: tabulate would print a frame's int column as floats ("910.0") beside float ones
        return df.astype(object).to_markdown(index=False, disable_numparse=True,
                                             colalign=["left" if c in ("rank", "model") else "right" for c in df.columns])
    return pct(df).to_markdown(index=False, floatfmt=".4g")


def _save_table(out: Path, name: str, df: pd.DataFrame, title: str, run: dict, written: list[Path], percent: bool = True) -> None:
    written.append(atomic_write(out / f"{name}.csv", lambda fh: fh.write(df.to_csv(index=False).encode())))
    written.append(write_json(out / f"{name}.json", json.loads(df.to_json(orient="records"))))
    text = f"# {title}\n\n{provenance(run)}\n{markdown(df, percent)}\n"
    written.append(atomic_write(out / f"{name}.md", lambda fh: fh.write(text.encode())))


def leaderboard_markdown(board: pd.DataFrame, cells: list[dict], run: dict, sections: Sequence[tuple[str, str]] = ()) -> str:
    """leaderboard.md: per dataset the headline table, then one table per mode; then plugin sections."""
    lines = ["# Leaderboard", "", provenance(run), HEADLINE_NOTE, ""]
    for d in dict.fromkeys(board["dataset"]) if not board.empty else []:
        note = eps_in_microvolts(cells, d)
        lines += [f"## {d}", "", markdown(headline(board, d), percent=False), ""] + ([note, ""] if note else [])
        for note in board[(board["dataset"] == d) & (board["notes"] != "")][["model", "notes"]].itertuples(index=False):
            lines += [f"- {note.model}: {note.notes}"]
        for mode in MODES:
            t = protocol_table(cells, d) if mode == "static" else mode_table(board, cells, d, mode)
            if not t.empty:
                title = (f"### {d}, static attacks, the paper's protocol (3.1): per attack, the model trained with that "
                         "attack's static set, on its static test set (%)") if mode == "static" else \
                    f"### {d}, {mode} attacks: accuracy (%) per attack"
                lines += ["", title, "", markdown(t, percent=False)]
        auc = auc_table(cells, d)
        if not auc.empty:
            lines += ["", f"### {d}: area under the robust accuracy vs eps curve (%)", "", AUC_NOTE, "", markdown(auc)]
        lines += _microvolts(cells, d) + [""]
    for title, body in sections:
        lines += [f"## {title}", "", body.strip(), ""]
    return "\n".join(lines)


def _microvolts(cells: list[dict], dataset: str) -> list[str]:
    """leaderboard.md's lines on budgets in microvolts: each eps in microvolts, and the `--eps-uv` table."""
    lines = []
    budgets = budget_table(cells).get(dataset)
    if budgets is not None:
        lines += ["", f"### {dataset}: the budgets in microvolts (each beat's amplitude range sets its unit)", "",
                  budgets.to_markdown(index=False, floatfmt=".4g")]
    uv = uv_tables(cells).get(dataset)
    if uv is not None and not uv.empty:
        lines += ["", f"### {dataset}: robust accuracy (%) at budgets in microvolts (adaptive)", "", UV_NOTE, "", markdown(uv)]
    return lines


def write_report(out: Path) -> list[Path]:
    """Write every table (md, csv, json), figure and the HTML page into the run folder; returns the files written."""
    out = Path(out)
    cells = load_cells(out)
    run = read_json(out / "run.json") if (out / "run.json").exists() else {}
    pm = hooks.manager()
    written: list[Path] = []
    board = leaderboard(cells, lambda recs: hooks.model_metrics(pm, recs))
    written.append(atomic_write(out / "leaderboard.csv", lambda fh: fh.write(board.to_csv(index=False).encode())))
    written.append(write_json(out / "leaderboard.json", json.loads(board.to_json(orient="records"))))
    sections = hooks.report_sections(pm, cells, run)
    text = leaderboard_markdown(board, cells, run, sections)
    written.append(atomic_write(out / "leaderboard.md", lambda fh: fh.write(text.encode())))
    datasets = list(dict.fromkeys(c["cell"]["dataset"] for c in cells))
    by_seed = seed_tables(cells, board)
    for d in datasets:
        classes = classes_of(cells, d)
        for mode in ("static", "adaptive"):
            if len(classes) > 2:
                _save_table(out, f"table1-{d}-{mode}", table1(cells, d, mode), f"Table 1 layout ({d}, {mode} attacks): accuracy and per-class sensitivity/specificity (%)", run, written)
            elif classes:
                _save_table(out, f"table2-{d}-{mode}", table2(cells, d, classes[-1], mode), f"Table 2 layout ({d}, {mode} attacks): accuracy, sensitivity and specificity of {classes[-1]} (%)", run, written)
        pc, note = per_class_worst(cells, d)
        if not pc.empty:
            _save_table(out, f"perclass-{d}", pc, f"Per-class robust accuracy (%), adaptive worst case ({d}). {note}", run, written)
        values, pairs = by_seed.get(d, (pd.DataFrame(), pd.DataFrame()))
        if not values.empty:
            _save_table(out, f"seeds-{d}", values, f"Each seed's accuracy (%) per row ({d}); worst cases only from seeds that "
                        "scored every attack", run, written, percent=False)
        if not pairs.empty:
            _save_table(out, f"seed-pairs-{d}", pairs, f"Rows compared seed by seed ({d}): the first minus the second on the "
                        f"same test beats (percentage points). {PAIRS_NOTE}", run, written, percent=False)
    for d, (curve, auc) in curve_tables(cells).items():
        _save_table(out, f"curves-{d}", curve, f"Robust accuracy (%) vs eps ({d}), adaptive mode", run, written)
        _save_table(out, f"auc-{d}", auc, f"Area under the robust accuracy vs log10(eps) curve ({d}, %). {AUC_NOTE}", run, written)
    for d, budgets in budget_table(cells).items():
        _save_table(out, f"budgets-{d}", budgets, f"Budgets in microvolts ({d}): each eps over the test beats' amplitudes",
                    run, written, percent=False)
    for d, uv in uv_tables(cells).items():
        _save_table(out, f"uv-curves-{d}", uv, f"Robust accuracy (%) at budgets in microvolts ({d}), adaptive mode. {UV_NOTE}",
                    run, written)
    t3 = table3(cells)
    if not t3.empty:
        _save_table(out, "table3", t3, "Table 3 layout: generator output vs clean beat (MSE, SSIM, cross-correlation, NRMSE)", run, written)
    _save_table(out, "attacks", attack_details(cells, lambda rec: hooks.cell_metrics(pm, rec)), "Attack details: success rate on correctly classified beats, perturbation size, budget", run, written)
    failed = [c for c in cells if c.get("status") != "ok"]
    if failed:
        text = "\n".join(f"- {c['cell']['dataset']}/{c['cell']['model']}/{c['cell']['attack']}/{c['cell']['mode']}: {c['error']}" for c in failed)
        written.append(atomic_write(out / "failures.md", lambda fh: fh.write(f"# Failed cells\n\n{text}\n".encode())))
    figures = write_figures(out, cells) + hook_figures(pm, cells, run, out)
    written += figures
    written.append(write_html(out, board, cells, run, figures, sections))
    return written


def provenance(run: dict) -> str:
    """Command, machine, wall time, profile, split and seeds of a run, from its run.json."""
    if not run:
        return ""
    inv = run.get("invocations", [])
    wall = sum(i.get("wall_seconds", 0.0) for i in inv)
    m = run.get("machine", {})
    where = f"GPU {m['gpu']}" if m.get("gpu") else f"CPU ({m.get('cpu_count')} cores, {m.get('threads')} torch threads)"
    seeds = run.get("seeds") or [run.get("profile", {}).get("seed", 0)]
    return (f"Command: `{run.get('command', '?')}`  \nMachine: {where}, {m.get('platform')}, torch {m.get('torch')}  \n"
            f"Wall time: {wall / 60:.1f} min over {len(inv)} invocation(s); profile `{run.get('profile', {}).get('name')}`, "
            f"split `{run.get('split')}`, seeds {', '.join(str(s) for s in seeds)}"
            + (f", static attacks made against `{run['source']}`" if static_source(run) else "")
            + (" (trained on clean beats for that purpose; not a row)" if static_source(run) and run["source"] not in run.get("models", [run["source"]]) else "")
            + "\n")




def hook_figures(pm: pluggy.PluginManager, cells: list[dict], run: dict, out: Path) -> list[Path]:
    """Save every hook plugin's figure as `<stem>.png` in `out`; returns the paths."""
    written = []
    for figs in reversed(pm.hook.ecgbench_figures(cells=cells, run=run)):
        for stem, fig in figs or []:
            written.append(save(fig, Path(out) / f"{stem}.png"))
    return written
