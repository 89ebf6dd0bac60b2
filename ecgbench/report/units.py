"""Budgets in microvolts (issue 23): what each eps on the [0, 1] beat scale is on the beats' own voltage, and
robust accuracy at absolute budgets in microvolts (`--eps-uv`).

Min-max scaling gives every beat its own unit: eps 0.01 is 0.01 times the beat's amplitude range, a median
19 microvolts on MIT-BIH and another voltage on every beat. Each attacked cell records its budget in both units
over the beats it attacked (`units`: median, 5th and 95th percentile), from the dataset's per-beat scale.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ecgbench.report.results import BLACK_BOX, COMMON_EPS, results, worst_case

__all__ = ["budget_table", "uv_tables", "eps_in_microvolts", "UV_NOTE"]

UV_NOTE = ("Each beat is attacked within its own eps = budget / (its amplitude range in microvolts), so every beat "
           "gets the same voltage; only attacks that take one budget per beat (ART's FGSM, BIM, PGD; CW; the "
           "interference attacks) or minimise (Boundary, HSJ: judged per beat) run at these budgets.")


def _spread(d: dict | None) -> str:
    return "" if not d else f"{d['median']:.3g} ({d['p5']:.3g}-{d['p95']:.3g})"


def budget_table(cells: list[dict]) -> dict[str, pd.DataFrame]:
    """Per dataset: each eps the run attacked at (beat scale) in microvolts, median and 5th-95th percentile over
    the test beats; from the cell that attacked the most beats at that eps (costly attacks see a subset)."""
    best: dict[tuple[str, float], dict] = {}
    for c in cells:
        units, eps = c.get("units"), (c.get("attack") or {}).get("eps")
        if c.get("status") != "ok" or not units or eps is None or c["cell"].get("eps_uv") is not None:
            continue
        key = (c["cell"]["dataset"], round(float(eps), 12))
        if key not in best or len(c.get("correct", "")) > len(best[key].get("correct", "")):
            best[key] = c
    out: dict[str, list[dict]] = {}
    for (d, eps), c in sorted(best.items()):
        uv = c["units"]["uV"]
        out.setdefault(d, []).append({"eps": eps, "uV median": round(uv["median"], 1), "uV 5%": round(uv["p5"], 1),
                                      "uV 95%": round(uv["p95"], 1), "beats": len(c.get("correct", ""))})
    return {d: pd.DataFrame(rows) for d, rows in out.items()}


def eps_in_microvolts(cells: list[dict], dataset: str) -> str | None:
    """The headline's budget in microvolts, one sentence; None where the dataset states no scale."""
    budgets = budget_table(cells).get(dataset)
    row = None if budgets is None else budgets[(budgets["eps"] - COMMON_EPS).abs() < 1e-12]
    if row is None or row.empty:
        return None
    r = row.iloc[0]
    return (f"eps {COMMON_EPS:g} on these beats is a median {r['uV median']:g} microvolts (5th-95th percentile "
            f"{r['uV 5%']:g}-{r['uV 95%']:g}): each beat's own amplitude range sets its unit.")


def uv_tables(cells: list[dict]) -> dict[str, pd.DataFrame]:
    """Per dataset with `--eps-uv` cells: per model and budget in microvolts, the white-box and black-box worst case
    over the attacks run there (mean over seeds), which attacks, and the eps each budget was on the beat scale."""
    rs = [r for r in results(cells, microvolts=True) if r.attack is not None and r.mode == "adaptive" and r.in_row]
    out = {}
    for d in dict.fromkeys(r.dataset for r in rs):
        rows = []
        mine = [r for r in rs if r.dataset == d]
        for m in dict.fromkeys(r.row for r in mine):
            for uv in sorted({r.eps_uv for r in mine if r.row == m}):
                at = [r for r in mine if r.row == m and r.eps_uv == uv]
                seeds = sorted({r.seed for r in at})
                worst = {}
                for col, kinds in (("white-box worst", None), ("black-box worst", BLACK_BOX)):
                    accs = [w.accuracy for s in seeds if (w := worst_case([r for r in at if r.seed == s], float("inf"), kinds))]
                    worst[col] = float(np.mean(accs)) if accs else float("nan")
                eps = max(at, key=lambda r: len(r.correct)).record.get("units") or {}
                rows.append({"model": m, "uV": uv, **worst, "eps median (5%-95%)": _spread(eps.get("eps")),
                             "attacks": ", ".join(sorted({r.attack for r in at})), "seeds": len(seeds)})
        df = pd.DataFrame(rows)
        out[d] = df.drop(columns=[c for c in ("black-box worst",) if df[c].isna().all()])  # a run without black-box attacks
    return out
