"""ecgbench hooks: a metric, a report section and a sub-command (see docs/plugins.md, "Hooks").

The metric is balanced accuracy, the mean of the per-class sensitivities a cell records (paper 3.3's
sensitivity per class): on MIT-BIH's natural test set (about 90 % N) plain accuracy hides a model
that misses every S and F beat, balanced accuracy does not. (A metric that needs scores, such as
sensitivity at a fixed specificity, cannot be computed from cells: they store decisions, not scores.)
Everything here reads cell records only; nothing imports torch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ecgbench.contracts.hooks import hookimpl


def balanced_accuracy(record: dict) -> float:
    """Mean per-class sensitivity of one cell record (NaN if the cell has no per-class sensitivities)."""
    sens = [v for k, v in record.get("metrics", {}).items() if k.startswith("sensitivity_") and v is not None]
    return float(np.nanmean(sens)) if sens else float("nan")


@hookimpl
def ecgbench_cell_metrics(record: dict) -> dict[str, float]:
    return {"balanced_accuracy": balanced_accuracy(record)}


@hookimpl
def ecgbench_model_metrics(records: list[dict]) -> dict[str, float]:
    """The lowest balanced accuracy under any adaptive attack: a per-model number for the leaderboard's CSV/JSON."""
    scores = [balanced_accuracy(r) for r in records if r["cell"]["mode"] == "adaptive"]
    return {"min balanced accuracy adaptive": float(np.nanmin(scores)) if scores else float("nan")}


def section_table(cells: list[dict]) -> str:
    """Markdown: balanced accuracy (%) per model, clean and the lowest under each mode's attacks."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for c in cells:
        if c.get("status") != "ok":
            continue
        key = (c["cell"]["dataset"], c["cell"]["model"])
        mode = c["cell"]["mode"]
        score = balanced_accuracy(c)
        row = rows.setdefault(key, {})
        row[mode] = min(row.get(mode, np.inf), score)
    modes = [m for m in ("clean", "static", "adaptive", "adaptive-detect") if any(m in r for r in rows.values())]
    lines = ["| dataset | model | " + " | ".join(modes) + " |", "|---|---|" + "---:|" * len(modes)]
    for (d, m), r in rows.items():
        lines.append(f"| {d} | {m} | " + " | ".join(f"{r[k] * 100:.1f}" if k in r else "—" for k in modes) + " |")
    return "\n".join(lines)


@hookimpl
def ecgbench_report_section(cells: list[dict], run: dict) -> tuple[str, str]:
    note = ("Mean of the per-class sensitivities (%), clean and the lowest under any attack of each mode; "
            "added by the ecgbench-example plugin's hooks.")
    return "Balanced accuracy (ecgbench-example)", note + "\n\n" + section_table(cells)


def cmd_balanced(args: argparse.Namespace) -> int:
    from ecgbench.report.results import load_cells

    print(section_table(load_cells(Path(args.run_dir))))
    return 0


@hookimpl
def register_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("balanced-accuracy", help="(ecgbench-example) balanced accuracy per model and mode of a run folder")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_balanced)
