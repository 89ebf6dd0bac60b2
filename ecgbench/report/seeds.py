"""What several seeds say: each seed's clean accuracy and worst cases per row, and, for each pair of rows, their
difference seed by seed.

A seed draws the split, the weights and the attacks' randomness, so two models of one seed are scored on the same
test beats: the paired difference of one seed is free of the split's variation that the spread over seeds of each
model keeps. A difference whose sign holds on every seed is one that retraining did not overturn; one that flips is
not a ranking. Worst cases come from `measured_worsts`: a seed that has not scored every attack yet is left out.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from ecgbench.report.results import clean_result, results
from ecgbench.report.tables import MEASURES, RANK_BY, measured_worsts, row_groups, row_key, row_name

__all__ = ["seed_values", "seed_tables", "seed_table", "PAIRS_NOTE"]

CLEAN = "clean"
PAIRS_NOTE = ("A seed draws the split, so both rows of a seed are scored on the same beats; a difference that keeps "
              "its sign on every seed survived retraining, one that flips is no ranking.")


def seed_values(cells: list[dict], board: pd.DataFrame) -> dict[str, dict[str, dict[str, dict[int, float]]]]:
    """Dataset -> row name -> measure (`clean`, then the headline measures) -> seed -> accuracy, rows in the board's
    order; a worst case that is only an upper bound gives no value."""
    groups = row_groups(results(cells))
    worsts = measured_worsts(groups)
    out: dict[str, dict[str, dict[str, dict[int, float]]]] = {}
    for _, r in board.iterrows():
        key = row_key(r)
        seeds = groups.get(key, {})
        cleans = {s: clean_result(part) for s, part in seeds.items()}
        values = {CLEAN: {s: c.accuracy for s, c in cleans.items() if c is not None}}
        for col in MEASURES:
            kept, _, bound = worsts.get((key, col), ({}, "", False))
            values[col] = {} if bound else {s: w.accuracy for s, w in kept.items()}
        out.setdefault(key[0], {})[row_name(r)] = values
    return out


def _pp(v: float) -> str:
    return f"{v * 100:+.1f}"


def seed_tables(cells: list[dict], board: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per dataset, the tables of `seed_table`."""
    return {dataset: seed_table(values) for dataset, values in seed_values(cells, board).items()}


def seed_table(values: dict[str, dict[str, dict[int, float]]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two tables of one dataset, empty unless some row has two seeds or more: each row's value per seed with mean ± sd
    (%), and for clean accuracy and the white-box worst case every pair of rows with two seeds or more in common, the
    first minus the second seed by seed (percentage points), their mean ± sd, and on how many seeds the first is ahead."""
    seeds = sorted({s for v in values.values() for per in v.values() for s in per})
    if not any(len(per) > 1 for v in values.values() for per in v.values()):
        return pd.DataFrame(), pd.DataFrame()
    labels = {CLEAN: "clean", **{col: label for col, (_, _, label) in MEASURES.items()}}
    rows = []
    for name, v in values.items():
        for col, per in v.items():
            if not per:
                continue
            acc = np.array(list(per.values()))
            spread = f"{acc.mean() * 100:.1f} ± {acc.std(ddof=1) * 100:.1f}" if len(acc) > 1 else f"{acc.mean() * 100:.1f}"
            rows.append({"row": name, "measure": labels[col], **{f"seed {s}": f"{per[s] * 100:.1f}" if s in per else "—"
                                                                  for s in seeds}, "mean ± sd": spread})
    pairs = []
    for col in (CLEAN, RANK_BY):
        for a, b in combinations(values, 2):
            common = [s for s in seeds if s in values[a][col] and s in values[b][col]]
            if len(common) < 2:
                continue
            diff = np.array([values[a][col][s] - values[b][col][s] for s in common])
            if diff.mean() < 0:
                a, b, diff = b, a, -diff
            pairs.append({"measure": labels[col], "first": a, "second": b,
                          **{f"seed {s}": _pp(d) for s, d in zip(common, diff)},
                          "mean ± sd (points)": f"{_pp(diff.mean())} ± {diff.std(ddof=1) * 100:.1f}",
                          "first ahead on": f"{int((diff > 0).sum())} of {len(common)} seeds"})
    if not pairs:
        return pd.DataFrame(rows), pd.DataFrame()
    order = ["measure", "first", "second", *(f"seed {s}" for s in seeds), "mean ± sd (points)", "first ahead on"]
    return pd.DataFrame(rows), pd.DataFrame(pairs).reindex(columns=order).fillna("—")
