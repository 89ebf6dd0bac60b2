"""Robustness curves: robust accuracy against eps per model, white-box and black-box worst case, and the
area under each curve.

A curve is drawn for a dataset whose adaptive cells hold at least two budgets (`--eps 0.001,...,0.1`).
At each eps a worst case takes every attack admissible there (see `cells.robust_at`): bounded attacks
run at that eps or below, and decision-based attacks that record the L-inf they needed per beat
(`linf_found`), judged at every eps from their one run. Bounded attacks (gradient ones and the
score-based Square) are run once per eps.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ecgbench import metrics
from ecgbench.report.results import BLACK_BOX, Result, results, worst_case
from ecgbench.report.units import budget_table

__all__ = ["eps_grid", "curve", "curve_tables"]


def eps_grid(rs: list[Result]) -> list[float]:
    """The budgets the adaptive cells of one dataset were run at, ascending; empty unless some attack ran at
    two budgets or more (an attack at its own default budget alone, like CW's 0.1, makes no curve)."""
    adaptive = [r for r in rs if r.mode == "adaptive" and r.eps is not None]
    per_attack: dict[str, set[float]] = {}
    for r in adaptive:
        per_attack.setdefault(r.attack, set()).add(round(r.eps, 12))
    if max((len(v) for v in per_attack.values()), default=0) < 2:
        return []
    return sorted({round(r.eps, 12) for r in adaptive})


def curve(rs: list[Result], grid: list[float], kinds: tuple[str, ...] | None) -> list[float]:
    """Mean over seeds of the worst-case robust accuracy at each eps of `grid` (NaN where no attack is admissible)."""
    seeds = sorted({r.seed for r in rs})
    out = []
    for eps in grid:
        accs = [w.accuracy for s in seeds if (w := worst_case([r for r in rs if r.seed == s and r.mode == "adaptive"], eps, kinds)) is not None]
        out.append(float(np.mean(accs)) if accs else float("nan"))
    return out


def curve_tables(cells: list[dict]) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per dataset with several budgets: (robust accuracy per model and eps, area under each curve)."""
    rs = results(cells)
    budgets = budget_table(cells)
    out = {}
    for d in dict.fromkeys(r.dataset for r in rs):
        mine = [r for r in rs if r.dataset == d]
        grid = eps_grid(mine)
        if len(grid) < 2:
            continue
        rows, aucs = [], []
        b = budgets.get(d)
        uv = {} if b is None else dict(zip(b["eps"].round(12), b["uV median"]))
        for m in dict.fromkeys(r.model for r in mine):
            model = [r for r in mine if r.model == m]
            white, black = curve(model, grid, None), curve(model, grid, BLACK_BOX)
            rows += [{"model": m, "eps": e, "uV median": uv.get(round(e, 12), np.nan), "white-box worst": w, "black-box worst": bb}
                     for e, w, bb in zip(grid, white, black)]
            aucs.append({"model": m, "auc white-box": metrics.auc_log_eps(grid, white), "auc black-box": metrics.auc_log_eps(grid, black),
                         "eps from": grid[0], "eps to": grid[-1]})
        auc = pd.DataFrame(aucs).sort_values("auc white-box", ascending=False, na_position="last").reset_index(drop=True)
        out[d] = (pd.DataFrame(rows), auc)
    return out
