"""Our Table 1 / Table 2 numbers beside the ECG-ATK-GAN paper's, cell by cell (`ecgbench compare RUN_DIR`).

The paper's numbers live in `ecgbench/report/reference/paper.json` (package data) and are only ever written into
`compare-paper.md` / `compare-paper.csv`, never into our own tables.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import pandas as pd

from ecgbench.report.layouts import table1, table2
from ecgbench.report.results import load_cells
from ecgbench.store.io import atomic_write

__all__ = ["load_paper", "paper_attack", "comparison", "compare_with_paper"]

# Our dataset -> (the paper's table, the positive class for Table 2). PTB-XL stands in for the paper's PTB.
TABLES: dict[str, tuple[str, str | None]] = {"mitbih": ("table1", None), "ptb": ("table2", "MI"), "ptbxl": ("table2", "MI")}
COLUMNS = ["dataset", "attack", "paper_attack", "model", "metric", "ours", "paper", "diff"]


@lru_cache(maxsize=1)
def load_paper() -> dict:
    """The paper's Tables 1-3 (percentages as printed), from the package's reference data."""
    return json.loads((files("ecgbench.report") / "reference" / "paper.json").read_text())


def paper_attack(spec: str) -> str:
    """Our attack spec as the paper's attack key: `pgd@foolbox:variant` -> `pgd`, `No Attack` -> `none`."""
    if spec == "No Attack":
        return "none"
    return spec.partition(":")[0].partition("@")[0]


def _ours(cells: list[dict], dataset: str, mode: str) -> pd.DataFrame:
    """Our numbers for one dataset, long: attack, model, metric, ours (percent), with the paper's metric names."""
    table, positive = TABLES[dataset]
    if table == "table1":
        wide = table1(cells, dataset, mode)
        if wide.empty:
            return pd.DataFrame(columns=["attack", "model", "metric", "ours"])
        long = wide.melt(id_vars=["attack", "model"], var_name="metric", value_name="ours")
    else:
        wide = table2(cells, dataset, positive, mode)
        if wide.empty:
            return pd.DataFrame(columns=["attack", "model", "metric", "ours"])
        long = wide.melt(id_vars=["metric", "model"], var_name="attack", value_name="ours")
        long["metric"] = long["metric"].str.lower()
    long["ours"] = long["ours"].astype(float) * 100
    return long[["attack", "model", "metric", "ours"]]


def comparison(cells: list[dict], mode: str = "static") -> pd.DataFrame:
    """One row per dataset, attack, model and metric that both we and the paper report; diff = ours - paper."""
    paper = load_paper()
    rows = []
    for dataset in dict.fromkeys(c["cell"]["dataset"] for c in cells):
        if dataset not in TABLES:
            continue
        ref = paper[TABLES[dataset][0]]
        for r in _ours(cells, dataset, mode).itertuples(index=False):
            base = paper_attack(r.attack)
            value = ref.get(base, {}).get(r.model, {}).get(r.metric)
            if value is not None:
                order = (list(ref).index(base), list(ref[base]).index(r.model), r.attack, list(ref[base][r.model]).index(r.metric))
                rows.append({"dataset": dataset, "attack": r.attack, "paper_attack": base, "model": r.model,
                             "metric": r.metric, "ours": r.ours, "paper": value, "diff": r.ours - value, "_order": order})
    df = pd.DataFrame(rows, columns=COLUMNS + ["_order"])
    # The paper's row and column order within each dataset; our variants of one attack stay together.
    df["_d"] = df["dataset"].map(list(dict.fromkeys(df["dataset"])).index)
    return df.sort_values(["_d", "_order"], kind="stable").drop(columns=["_d", "_order"]).reset_index(drop=True)


def _markdown(df: pd.DataFrame, mode: str) -> str:
    paper = load_paper()
    lines = [f"# Our results beside the paper's published numbers ({mode} attacks)", "",
             f"Paper: {paper['citation']}", "",
             "Columns: `ours` is this run (percent); `paper` is **the paper's number, not ours**, as printed in its "
             "Tables 1 and 2; `diff` = ours - paper, in percentage points. The paper's DBB is our `boundary`, its "
             "'Proposed Method' our `ecg-atk-gan`; PTB-XL (`ptbxl`) stands in for the paper's PTB.", ""]
    if df.empty:
        return "\n".join(lines + ["_no cell of this run has a counterpart in the paper_", ""])
    for dataset, part in df.groupby("dataset", sort=False):
        table = TABLES[dataset][0]
        label = "Table 1, MIT-BIH" if table == "table1" else "Table 2, PTB (sensitivity/specificity of MI)"
        shown = part.drop(columns=["dataset"]).rename(columns={"paper": "paper (Hossain et al. 2022)"})
        lines += [f"## {dataset} vs the paper's {label}", "",
                  f"{len(part)} cells; mean |diff| {part['diff'].abs().mean():.1f} points.", "",
                  shown.to_markdown(index=False, floatfmt=("", "", "", "", ".1f", ".1f", "+.1f")), ""]
    return "\n".join(lines)


def compare_with_paper(run_dir: Path, mode: str = "static") -> str:
    """Compare a run's cells with the paper; writes compare-paper.md and .csv into the run folder, returns the markdown."""
    run_dir = Path(run_dir)
    df = comparison(load_cells(run_dir), mode)
    text = _markdown(df, mode)
    atomic_write(run_dir / "compare-paper.md", lambda fh: fh.write(text.encode()))
    atomic_write(run_dir / "compare-paper.csv", lambda fh: fh.write(df.to_csv(index=False).encode()))
    return text
