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
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ecgbench import metrics
from ecgbench.config.run import MODES
from ecgbench.report.results import (BLACK_BOX, COMMON_EPS, Result, classes_of, load_cells, not_converged, results,
                            validation_score, worst_case)

__all__ = ["load_cells", "leaderboard", "headline", "mode_table", "table1", "table2", "table3", "attack_details",
           "per_class_worst", "auc_table", "pick", "pct", "MODES", "MEASURES", "HEADLINE_NOTE", "AUC_NOTE"]

E = f"eps={COMMON_EPS:g}"
# Headline measures: column name -> (mode, attack kinds or None for all, label in the markdown table).
MEASURES: dict[str, tuple[str, tuple[str, ...] | None, str]] = {
    f"worst white-box {E}": ("adaptive", None, "white-box worst"),
    f"worst black-box {E}": ("adaptive", BLACK_BOX, "black-box worst"),
    f"worst static {E}": ("static", None, "static worst (paper)"),
    f"worst with detector {E}": ("adaptive-detect", None, "with detector"),
}
RANK_BY = f"worst white-box {E}"


def _groups(rs: Sequence[Result]) -> dict[tuple[str, str], dict[int, list[Result]]]:
    """(dataset, model) -> seed -> that seed's results, in first-seen order."""
    out: dict[tuple[str, str], dict[int, list[Result]]] = {}
    for r in rs:
        out.setdefault((r.dataset, r.model), {}).setdefault(r.seed, []).append(r)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def _attacks(rs: Sequence[Result]) -> list[str]:
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
    attacks = _attacks(rs)
    rows = []
    for (dataset, model), seeds in _groups(rs).items():
        flat = [r for part in seeds.values() for r in part]
        clean = [r for r in flat if r.mode == "clean"]
        n_classes = len(classes_of(cells, dataset))
        row: dict[str, Any] = {"dataset": dataset, "model": model,
                               "params": next((r.record["train"].get("n_params") for r in sorted(flat, key=lambda r: r.mode != "clean")
                                          if r.record.get("train")), None),
                               "seeds": ",".join(str(s) for s in seeds), "val_balanced_accuracy": np.nan}
        scores = [validation_score(r) for r in clean]
        row["val_balanced_accuracy"] = float(np.nanmean(scores)) if scores else np.nan
        row["converged"] = not not_converged(scores, n_classes)
        _summ("clean", [r.correct for r in clean], row)
        notes = []
        for col, (mode, kinds, _) in MEASURES.items():
            worst = [worst_case([r for r in part if r.mode == mode], COMMON_EPS, kinds) for part in seeds.values()]
            worst = [w for w in worst if w is not None]
            _summ(col, [w.correct for w in worst], row)
            if any(w.intersected for w in worst):
                notes.append(f"{col}: over the {len(worst[0].beats)} beats every attack scored")
        row["notes"] = "; ".join(notes)
        for a in attacks:
            for mode in MODES:
                picked = [pick(part, a, mode) for part in seeds.values()]
                picked = [p for p in picked if p is not None]
                if picked:
                    row[f"{a} {mode}"] = float(np.mean([p.record.get("system_accuracy", p.accuracy) for p in picked]))
        for col, mode, eps in (("worst static", "static", np.inf), ("worst adaptive", "adaptive", np.inf),
                               ("worst adaptive eps<=0.01", "adaptive", COMMON_EPS), ("worst adaptive-detect", "adaptive-detect", np.inf)):
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
    """`70.8 [67.9, 73.7]`, or `70.8 ± 1.2 [67.9, 73.7]` over several seeds; `—` where nothing ran."""
    v = row.get(col)
    if v is None or pd.isna(v):
        return "—"
    text = f"{v * 100:.1f}"
    if not pd.isna(row.get(f"{col} sd", np.nan)):
        text += f" ± {row[f'{col} sd'] * 100:.1f}"
    if interval and not pd.isna(row.get(f"{col} lo", np.nan)):
        text += f" [{row[f'{col} lo'] * 100:.1f}, {row[f'{col} hi'] * 100:.1f}]"
    return text


def headline(board: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The compact table for one dataset: at most ten columns, strings as shown to a reader."""
    part = board[board["dataset"] == dataset]
    rows, rank = [], 0
    for _, r in part.iterrows():
        rank += bool(r["converged"])
        row = {"rank": str(rank) if r["converged"] else "—",
               "model": r["model"] if r["converged"] else f"{r['model']} (not converged)",
               "params": f"{int(r['params']):,}" if not pd.isna(r.get("params")) else "—",
               "clean": _fmt(r, "clean")}
        for col, (_, _, label) in MEASURES.items():
            if col != RANK_BY and (col not in part or part[col].isna().all()):
                continue  # e.g. no model with a detector, or a run without static cells
            row[label] = _fmt(r, col)
        row["beats"] = str(int(r["clean n"])) if not pd.isna(r.get("clean n")) else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def mode_table(board: pd.DataFrame, cells: list[dict], dataset: str, mode: str) -> pd.DataFrame:
    """One mode: models as rows (headline order), attacks as columns (mean over seeds, %), then the worst case."""
    rs = [r for r in results(cells) if r.dataset == dataset and r.mode == mode]
    part = board[board["dataset"] == dataset]
    cols = []
    if mode == "adaptive-detect":  # only models that have a detector
        part = part[part[[c for c in part.columns if c.endswith(" adaptive-detect")]].notna().any(axis=1)]
    for a in _attacks(rs):
        if f"{a} {mode}" in part and part[f"{a} {mode}"].notna().any():
            picked = pick(rs, a, mode)
            eps = picked.eps if picked is not None else None
            label = a if eps is None or abs(eps - COMMON_EPS) < 1e-12 else f"{a} (eps {eps:g})"
            if picked is not None and picked.index is not None:  # a costly attack run on a stratified subset
                label += f" [{len(picked.index)} beats]"
            cols.append((f"{a} {mode}", label))
    if not cols:
        return pd.DataFrame()
    worst = {"static": f"worst static {E}", "adaptive": f"worst white-box {E}", "adaptive-detect": f"worst with detector {E}"}[mode]
    rows = []
    for _, r in part.iterrows():
        row = {"model": r["model"] if r["converged"] else f"{r['model']} (not converged)", "clean": _fmt(r, "clean", interval=False)}
        row.update({label: "—" if pd.isna(r.get(col)) else f"{r[col] * 100:.1f}" for col, label in cols})
        row[f"worst ({E})"] = _fmt(r, worst, interval=False)
        rows.append(row)
    return pd.DataFrame(rows)


def _by_eps(rs: Sequence[Result], mode: str) -> list[Result]:
    """Per model, seed and attack, the one cell a per-class table shows (see `_pick`)."""
    out = []
    for seeds in _groups(rs).values():
        for mine in seeds.values():
            out += [r for r in mine if r.mode == "clean"]
            out += [p for a in _attacks(mine) if (p := pick(mine, a, mode)) is not None]
    return out


def table1(cells: list[dict], dataset: str, mode: str = "static") -> pd.DataFrame:
    """Paper Table 1 layout: per attack and model, accuracy and each class's sensitivity and specificity
    (mean over seeds; each attack at the column eps of `_pick`)."""
    rs = _by_eps([r for r in results(cells) if r.dataset == dataset and r.mode in ("clean", mode)], mode)
    rows = []
    for r in rs:
        m = r.record["metrics"]
        row = {"attack": r.attack or "No Attack", "model": r.model, "beats": len(r.correct), "accuracy": m["accuracy"]}
        row.update({k: v for k, v in m.items() if k.startswith(("sensitivity_", "specificity_"))})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    classes = classes_of(cells, dataset)
    df = df[["attack", "model", "beats", "accuracy"] + [f"{m}_{c}" for c in classes for m in ("sensitivity", "specificity")]]
    df = df.groupby(["attack", "model"], sort=False, as_index=False).mean()
    df["beats"] = df["beats"].round().astype(int)  # test beats each number is over (a subset for costly attacks)
    attack_order = ["No Attack"] + _attacks(results(cells))
    df["_a"] = df["attack"].map(attack_order.index)
    return df.sort_values(["_a", "accuracy"], ascending=[True, False]).drop(columns="_a").reset_index(drop=True)


def table2(cells: list[dict], dataset: str, positive: str, mode: str = "static") -> pd.DataFrame:
    """Paper Table 2 layout: accuracy, sensitivity and specificity (of `positive`, e.g. MI) per model and attack."""
    t1 = table1(cells, dataset, mode)
    if t1.empty:
        return t1
    long = t1.rename(columns={"accuracy": "Accuracy", f"sensitivity_{positive}": "Sensitivity", f"specificity_{positive}": "Specificity"})
    long = long.melt(id_vars=["attack", "model"], value_vars=["Accuracy", "Sensitivity", "Specificity"], var_name="metric")
    wide = long.pivot_table(index=["metric", "model"], columns="attack", values="value", sort=False)
    cols = [a for a in ["No Attack"] + _attacks(results(cells)) if a in wide.columns]
    return wide[cols].reset_index()


def _labels(rs: Sequence[Result]) -> dict[int, int]:
    """Test-beat index -> class, from cells that store the labels of the beats they scored (`record["y"]`:
    a string of class digits or a list, aligned with `correct`)."""
    out: dict[int, int] = {}
    for r in rs:
        y = r.record.get("y")
        if y is not None and len(y) == len(r.correct):
            out.update(zip(r.beats.tolist(), [int(c) for c in y]))
    return out


def per_class_worst(cells: list[dict], dataset: str) -> tuple[pd.DataFrame, str]:
    """Per model and class, robust accuracy under the adaptive (white-box) worst case at eps 0.01.

    Exact where cells store the labels of the beats they scored (`record["y"]`): the worst case's robust
    beats of each class. Older cells store only per-class sensitivities, so there it is each class's sensitivity
    under the strongest single attack: an upper bound on the per-class worst case. Returns the table
    (fractions) and a sentence saying which.
    """
    rs = [r for r in results(cells) if r.dataset == dataset]
    classes = classes_of(cells, dataset)
    rows, exact = [], True
    for (_, model), seeds in _groups(rs).items():
        per_seed = []
        for part in seeds.values():
            adaptive = [r for r in part if r.mode == "adaptive"]
            w = worst_case(adaptive, COMMON_EPS)
            if w is None:
                continue
            labels = _labels(part)
            if all(int(b) in labels for b in w.beats):
                y = np.array([labels[int(b)] for b in w.beats])
                per_seed.append([float(w.correct[y == i].mean()) if (y == i).any() else np.nan for i in range(len(classes))])
            else:
                exact = False
                admissible = [r for r in adaptive if r.eps is not None and r.eps <= COMMON_EPS + 1e-9]
                per_seed.append([min(r.record["metrics"].get(f"sensitivity_{c}", np.nan) for r in admissible) for c in classes])
        if per_seed:
            with warnings.catch_warnings():  # a class absent from every seed's beats stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(np.array(per_seed, dtype=float), axis=0)
            rows.append({"model": model, **dict(zip(classes, mean))})
    note = ("Exact: the beats of each class that survive every adaptive attack at eps 0.01." if exact else
            "Each class's sensitivity under the strongest single adaptive attack at eps 0.01 (these cells do not store "
            "test labels, so this is an upper bound on the per-class worst case).")
    return pd.DataFrame(rows), note


def table3(cells: list[dict]) -> pd.DataFrame:
    """Paper Table 3: similarity of the generator's output to the clean beat, per attack and dataset."""
    rows = []
    for c in cells:
        if c.get("status") == "ok" and "similarity" in c and c["cell"]["mode"] in ("clean", "static"):
            rows.append({"dataset": c["cell"]["dataset"], "model": c["cell"]["model"],
                         "attack": c["cell"]["attack"] or "No Attack", **c["similarity"]})
    return pd.DataFrame(rows)


def attack_details(cells: list[dict], cell_metrics: Callable[[dict], dict] | None = None) -> pd.DataFrame:
    """Per attack, model, mode, seed and eps: success rate, perturbation size and SNR, budget and detection figures."""
    rows = []
    for r in results(cells):
        if not r.attack:
            continue
        c = r.record
        row = {"dataset": r.dataset, "model": r.model, "attack": r.attack, "kind": r.kind, "mode": r.mode,
               "seed": r.seed, "eps": r.eps, "beats": len(r.correct),
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
        if out[col].dtype.kind == "f" and not col.startswith(("linf", "l2", "snr", "mse", "nrmse", "budget_linf", "eps", "params")):
            out[col] = (out[col] * 100).round(1)
    return out


HEADLINE_NOTE = (
    "Robust accuracy (%) at L-inf eps 0.01 on the [0, 1] beat scale (paper 2.3). **white-box worst**: a beat counts "
    "only if it survives every adaptive attack (AutoAttack's rule); the ranking. **black-box worst**: decision- and "
    "score-based attacks only, what an attacker without the weights achieves. **static worst**: the paper's "
    "protocol (3.1), attacks made once against the source model. **with detector**: the model and its attack "
    "detector attacked as one; a beat counts if classified correctly or flagged. Brackets: 95 % bootstrap interval "
    "over test beats; `±`: standard deviation over seeds where the run has several. A model whose validation "
    "balanced accuracy closes less than a third of the gap from chance (1/K) to 1 is marked not converged and not ranked."
)


AUC_NOTE = ("Trapezoid rule on log10(eps) over the run's budgets, divided by the log-eps range: 100 = robust at every "
            "budget. See `curves-<dataset>.md` and `robust-curves-<dataset>.png`.")


def auc_table(cells: list[dict], dataset: str) -> pd.DataFrame:
    """The area-under-curve table of one dataset (empty without several budgets)."""
    from ecgbench.report.curves import curve_tables

    return curve_tables(cells).get(dataset, (pd.DataFrame(), pd.DataFrame()))[1]
