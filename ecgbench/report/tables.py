"""Tables from cell files: the leaderboard (a headline table, then one table per mode), the paper's Tables
1-3 and attack details, as markdown, CSV and JSON, plus the HTML page and figures.

Reporting never runs a model: `ecgbench report RUN_DIR` rebuilds every table from `cells/`.

The headline ranks models by the honest number: robust accuracy under every adaptive (white-box)
attack at the common eps 0.01 (paper 2.3), a beat counting only if it survives all of them
(AutoAttack's rule). Beside it: the black-box worst case (decision- and score-based attacks only:
what an attacker without the weights achieves), the static worst case (the paper's protocol, 3.1),
and the detector-aware worst case for models with an attack detector. Each number carries a 95 %
bootstrap interval over test beats and, where the run has several seeds, mean +- sd over seeds.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ecgbench import metrics
from ecgbench.config.run import MODES
from ecgbench.report.flags import explain, row_flags
from ecgbench.report.results import (BLACK_BOX, COMMON_EPS, Result, WorstCase, classes_of, load_cells, not_converged,
                                     results, validation_score, worst_case)

__all__ = ["load_cells", "leaderboard", "headline", "mode_table", "attack_details",
           "auc_table", "pick", "pct", "row_name", "row_key", "one_model", "row_groups", "attacks_of", "whole_seeds", "measured_worsts", "column_label", "MODES", "MEASURES", "HEADLINE_NOTE", "AUC_NOTE"]

E = f"eps={COMMON_EPS:g}"
# Headline measures: column name -> (mode, attack kinds or None for all, label in the markdown table).
MEASURES: dict[str, tuple[str, tuple[str, ...] | None, str]] = {
    f"worst white-box {E}": ("adaptive", None, "white-box worst"),
    f"worst black-box {E}": ("adaptive", BLACK_BOX, "black-box worst"),
    f"worst with detector {E}": ("adaptive-detect", None, "with detector"),
}
RANK_BY = f"worst white-box {E}"


def row_groups(rs: Sequence[Result]) -> dict[tuple[str, str, str], dict[int, list[Result]]]:
    """(dataset, model, training) -> seed -> the row's results, in first-seen order: one row, one trained model.

    Cells of no row (the paper's static protocol: a model per attack) are left out."""
    out: dict[tuple[str, str, str], dict[int, list[Result]]] = {}
    for r in rs:
        if r.in_row:
            out.setdefault((r.dataset, r.model, r.training), {}).setdefault(r.seed, []).append(r)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def one_model(key: tuple[str, str, str], seed: int, part: Sequence[Result]) -> None:
    """A row's cells of one seed must come from one set of trained weights; else a one-line error naming them."""
    weights = {r.record.get("weights") for r in part} - {None}
    if len(weights) > 1:
        cells = ", ".join(f"{r.attack or 'none'}.{r.mode} ({r.record.get('weights')})" for r in part if r.record.get("weights"))
        dataset, model, training = key
        raise ValueError(f"the {dataset} row {model} ({'paper defence' if training == 'defence' else 'trained on clean beats'}), "
                         f"seed {seed}, mixes cells of {len(weights)} trained models: {cells}; rerun the run's command "
                         "to recompute the cells whose weights differ from the cached checkpoint")


def attacks_of(rs: Sequence[Result]) -> list[str]:
    return list(dict.fromkeys(r.attack for r in rs if r.attack))


def pick(rs: Sequence[Result], attack: str, mode: str) -> Result | None:
    """The cell of one attack and mode for a per-attack column: at the common eps if run there, else at
    the attack's own default budget (a cell without `eps`), else the smallest budget run."""
    mine = [r for r in rs if r.attack == attack and r.mode == mode]
    if not mine:
        return None
    for test in (lambda r: r.eps is not None and abs(r.eps - COMMON_EPS) < 1e-12, lambda r: r.record["cell"].get("eps") is None):
        hit = [r for r in mine if test(r)]
        if hit:
            return hit[0]
    return min(mine, key=lambda r: r.eps or 0.0)


Kept = tuple[dict[int, WorstCase], str, bool]  # seed -> worst case summarised, the note, whether only an upper bound


def measured_worsts(groups: dict[tuple[str, str, str], dict[int, list[Result]]]) -> dict[tuple[tuple[str, str, str], str], Kept]:
    """(row, headline measure) -> the worst cases per seed that the board summarises (`whole_seeds`), each row judged
    against every attack any row of its dataset was judged on for that measure."""
    worsts = {(key, col): {seed: worst_case([r for r in part if r.mode == mode], COMMON_EPS, kinds) for seed, part in seeds.items()}
              for key, seeds in groups.items() for col, (mode, kinds, _) in MEASURES.items()}
    judged: dict[tuple[str, str], set[str]] = {}
    for ((dataset, _, _), col), per_seed in worsts.items():
        judged.setdefault((dataset, col), set()).update(a for w in per_seed.values() if w is not None for a in w.attacks)
    return {(key, col): whole_seeds(per_seed, judged[(key[0], col)]) for (key, col), per_seed in worsts.items()}


def whole_seeds(per_seed: dict[int, WorstCase | None], judged: set[str]) -> Kept:
    """The worst cases a row's measure summarises (by seed), a note where some attack has not scored yet, and whether
    what is left is only an upper bound.

    A worst case over fewer attacks than the board's others were judged on is only an upper bound (a partial run, a
    model evaluated with fewer attacks), so a seed missing some is left out while another seed has them all; where
    none has, the row keeps its upper bound and the note says which attacks it lacks."""
    ran = {s: w for s, w in per_seed.items() if w is not None}
    whole = {s: w for s, w in ran.items() if set(w.attacks) >= judged}
    if len(whole) == len(ran):
        return ran, "", False
    if whole:
        left = ", ".join(str(s) for s in ran if s not in whole)
        return whole, f"seed {left} left out (not every attack scored yet)", False
    least = min(ran.values(), key=lambda w: len(w.attacks))
    missing = ", ".join(sorted(judged - set(least.attacks)))
    return ran, f"over {len(least.attacks)} of {len(judged)} attacks (no {missing}): an upper bound", True


def _summ(prefix: str, parts: list[np.ndarray], row: dict) -> None:
    s = metrics.seed_summary(parts)
    row[prefix] = s["mean"] if parts else np.nan
    row[f"{prefix} sd"], row[f"{prefix} lo"], row[f"{prefix} hi"] = s["sd"], s["lo"], s["hi"]
    row[f"{prefix} n"] = s["n"]


def leaderboard(cells: list[dict], model_metrics: Callable[[list[dict]], dict] | None = None) -> pd.DataFrame:
    """Models as rows, every column: clean and headline measures (mean, sd over seeds, 95 % bootstrap interval,
    beats), each attack x mode (mean over seeds, at the column's eps), the older worst-case columns; ranked
    by the white-box worst case at eps 0.01, models flagged as not converged last."""
    rs = results(cells)
    attacks = attacks_of(rs)
    groups = row_groups(rs)
    worsts = measured_worsts(groups)
    rows = []
    for (dataset, model, training), seeds in groups.items():
        for seed, part in seeds.items():
            one_model((dataset, model, training), seed, part)
        flat = [r for part in seeds.values() for r in part]
        clean = [r for r in flat if r.mode == "clean"]
        n_classes = len(classes_of(cells, dataset))
        row: dict[str, Any] = {"dataset": dataset, "model": model, "training": "paper defence" if training == "defence" else "clean",
                               "params": next((r.record["train"].get("n_params") for r in sorted(flat, key=lambda r: r.mode != "clean")
                                          if r.record.get("train")), None),
                               "seeds": ",".join(str(s) for s in seeds), "val_balanced_accuracy": np.nan}
        scores = [validation_score(r) for r in clean]
        row["val_balanced_accuracy"] = float(np.nanmean(scores)) if scores else np.nan
        row["converged"] = not not_converged(scores, n_classes)
        _summ("clean", [r.correct for r in clean], row)
        notes = []
        for col in MEASURES:
            kept, partial, row[f"{col} upper bound"] = worsts[((dataset, model, training), col)]
            worst = list(kept.values())
            _summ(col, [w.correct for w in worst], row)
            said = [f"over the {len(worst[0].beats)} beats every attack scored"] if any(w.intersected for w in worst) else []
            said += [partial] if partial else []
            if said:
                notes.append(f"{col}: " + "; ".join(said))
        checked = [f for f in (row_flags(part) for part in seeds.values()) if f is not None]
        raised = sorted({f for part_flags in checked for f in part_flags})
        row["flags"] = ", ".join(raised) if raised else "none" if checked else "not checked"
        if raised:
            notes.append(explain(raised))
        row["notes"] = "; ".join(notes)
        for a in attacks:
            for mode in MODES:
                picked = [pick(part, a, mode) for part in seeds.values()]
                picked = [p for p in picked if p is not None]
                if picked:
                    row[f"{a} {mode}"] = float(np.mean([p.record.get("system_accuracy", p.accuracy) for p in picked]))
        for col, mode, eps in (("worst adaptive", "adaptive", np.inf), ("worst adaptive eps<=0.01", "adaptive", COMMON_EPS),
                               ("worst adaptive-detect", "adaptive-detect", np.inf)):
            worst = [worst_case([r for r in part if r.mode == mode], eps) for part in seeds.values()]
            worst = [w.accuracy for w in worst if w is not None]
            if worst or col != "worst adaptive-detect":
                row[col] = float(np.mean(worst)) if worst else np.nan
        if model_metrics is not None:
            row.update(model_metrics([r.record for r in flat]))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["_rank"] = df["converged"].map({True: 0, False: 1})
    df = df.sort_values(["dataset", "_rank", RANK_BY, "clean"], ascending=[True, True, False, False], na_position="last")
    return df.drop(columns="_rank").reset_index(drop=True)


def _fmt(row: pd.Series, col: str, interval: bool = True) -> str:
    """`70.8 [67.9, 73.7]`, or `70.8 ± 1.2 [67.9, 73.7]` over several seeds, `≤ 70.8 [...]` for an upper bound (a
    worst case without every attack); `—` where nothing ran."""
    v = row.get(col)
    if v is None or pd.isna(v):
        return "—"
    bound = row.get(f"{col} upper bound")
    text = ("≤ " if isinstance(bound, (bool, np.bool_)) and bound else "") + f"{v * 100:.1f}"
    if not pd.isna(row.get(f"{col} sd", np.nan)):
        text += f" ± {row[f'{col} sd'] * 100:.1f}"
    if interval and not pd.isna(row.get(f"{col} lo", np.nan)):
        text += f" [{row[f'{col} lo'] * 100:.1f}, {row[f'{col} hi'] * 100:.1f}]"
    return text


def row_key(r: pd.Series | dict) -> tuple[str, str, str]:
    """A board row's key in `row_groups`: (dataset, model, training), the board's `paper defence` back to `defence`."""
    return str(r["dataset"]), str(r["model"]), "defence" if r.get("training") == "paper defence" else "clean"


def row_name(r: pd.Series | dict[str, Any]) -> str:
    """A board row (or an exported entry) as a reader sees it: the model, or the model with the paper's defence."""
    return f"{r['model']} + paper defence" if r.get("training") == "paper defence" else str(r["model"])


def headline(board: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The compact table for one dataset: at most ten columns, strings as shown to a reader."""
    part = board[board["dataset"] == dataset]
    rows, rank = [], 0
    for _, r in part.iterrows():
        rank += bool(r["converged"])
        row = {"rank": str(rank) if r["converged"] else "—",
               "model": row_name(r) if r["converged"] else f"{row_name(r)} (not converged)",
               "params": f"{int(r['params']):,}" if not pd.isna(r.get("params")) else "—",
               "clean": _fmt(r, "clean")}
        for col, (_, _, label) in MEASURES.items():
            if col != RANK_BY and (col not in part or part[col].isna().all()):
                continue  # e.g. no model with a detector, or a run without static cells
            row[label] = _fmt(r, col)
        row["beats"] = str(int(r["clean n"])) if not pd.isna(r.get("clean n")) else "—"
        row["flags"] = r.get("flags") or "—"
        rows.append(row)
    return pd.DataFrame(rows)


def mode_table(board: pd.DataFrame, cells: list[dict], dataset: str, mode: str) -> pd.DataFrame:
    """An adaptive mode: rows as in the headline (one trained model each), attacks as columns (mean over seeds, %),
    then the row's worst case. (The static mode is the paper's protocol: `layouts.protocol_table`.)"""
    if mode == "static":
        return pd.DataFrame()
    rs = [r for r in results(cells) if r.dataset == dataset and r.mode == mode and r.in_row]
    part = board[board["dataset"] == dataset]
    cols = []
    if mode == "adaptive-detect":  # only models that have a detector
        part = part[part[[c for c in part.columns if c.endswith(" adaptive-detect")]].notna().any(axis=1)]
    for a in attacks_of(rs):
        if f"{a} {mode}" in part and part[f"{a} {mode}"].notna().any():
            cols.append((f"{a} {mode}", column_label(rs, a, mode)))
    if not cols:
        return pd.DataFrame()
    worst = {"adaptive": f"worst white-box {E}", "adaptive-detect": f"worst with detector {E}"}[mode]
    rows = []
    for _, r in part.iterrows():
        row = {"model": row_name(r) if r["converged"] else f"{row_name(r)} (not converged)", "clean": _fmt(r, "clean", interval=False)}
        row.update({label: "—" if pd.isna(r.get(col)) else f"{r[col] * 100:.1f}" for col, label in cols})
        row[f"worst ({E})"] = _fmt(r, worst, interval=False)
        rows.append(row)
    return pd.DataFrame(rows)


def column_label(rs: Sequence[Result], attack: str, mode: str) -> str:
    picked = pick(rs, attack, mode)
    eps = picked.eps if picked is not None else None
    label = attack if eps is None or abs(eps - COMMON_EPS) < 1e-12 else f"{attack} (eps {eps:g})"
    if picked is not None and picked.index is not None:  # a costly attack run on a stratified subset
        label += f" [{len(picked.index)} beats]"
    return label


def attack_details(cells: list[dict], cell_metrics: Callable[[dict], dict] | None = None) -> pd.DataFrame:
    """Per attack, model, mode, seed and eps: success rate, perturbation size and SNR, budget and detection figures."""
    rows = []
    for r in results(cells) + [r for r in results(cells, microvolts=True) if r.attack]:
        if not r.attack:
            continue
        c = r.record
        uv = (c.get("units") or {}).get("uV")
        row = {"dataset": r.dataset, "model": r.model, "attack": r.attack, "kind": r.kind, "mode": r.mode,
               "seed": r.seed, "eps": r.eps, "eps_uv": r.eps_uv, "uV_median": uv and uv["median"], "beats": len(r.correct),
               "accuracy": c["metrics"]["accuracy"], "system_accuracy": c.get("system_accuracy"),
               "success_rate": c.get("success_rate"), **c.get("perturbation", {})}
        row.update({f"budget_{k}": v for k, v in c.get("budget", {}).items()})
        if "detection" in c:
            row["detection_accuracy"] = c["detection"].get("accuracy")
            row["flagged_attacked"] = c["detection"]["flagged_eval"]
        row["params"] = json.dumps({k: v for k, v in c.get("attack", {}).items() if k not in ("name",)}, sort_keys=True)
        if cell_metrics is not None:
            row.update(cell_metrics(c))
        rows.append(row)
    return pd.DataFrame(rows)


def pct(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracies and rates as percentages with one decimal, for markdown only (CSV and JSON keep floats)."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype.kind == "f" and not col.startswith(("linf", "l2", "snr", "mse", "nrmse", "budget_linf", "eps", "params", "uV")):
            out[col] = (out[col] * 100).round(1)
    return out


HEADLINE_NOTE = (
    "Each row is one trained model: a model trained on clean beats, or (runs with the static mode) the paper's defence, "
    "the model trained on clean beats plus every attack's static set (3.1, E'x = Ex + Exadv); its clean accuracy and "
    "every number beside it are measured on that model. Robust accuracy (%) at L-inf eps 0.01 on the [0, 1] beat "
    "scale (paper 2.3). **white-box worst**: a beat counts only if it survives every adaptive attack (AutoAttack's "
    "rule); the ranking. **black-box worst**: decision- and score-based attacks only, what an attacker without the "
    "weights achieves. **with detector**: the model and its attack detector attacked as one; a beat counts if "
    "classified correctly or flagged. The paper's own protocol (per attack, a model trained on that attack's static "
    "set, tested on its static test set) is the static table below, with no worst case across its models. Brackets: "
    "95 % bootstrap interval over test beats; `±`: standard deviation over seeds where the run has several. A model "
    "whose validation balanced accuracy closes less than a third of the gap from chance (1/K) to 1 is marked not "
    "converged and not ranked. **flags**: AutoAttack's sanity checks (zero-gradients, randomised, probabilities, "
    "black-box-stronger; explained under the table where raised): a flagged row keeps its numbers, which may "
    "overstate its robustness; `not checked`: cells computed before the checks existed."
)


AUC_NOTE = ("Trapezoid rule on log10(eps) over the run's budgets, divided by the log-eps range: 100 = robust at every "
            "budget. See `curves-<dataset>.md` and `robust-curves-<dataset>.png`.")


def auc_table(cells: list[dict], dataset: str) -> pd.DataFrame:
    """The area-under-curve table of one dataset (empty without several budgets)."""
    from ecgbench.report.curves import curve_tables

    return curve_tables(cells).get(dataset, (pd.DataFrame(), pd.DataFrame()))[1]
