"""The paper's table layouts, from cell files: Table 1 (accuracy and per-class sensitivity and specificity),
Table 2 (a binary task's positive class), Table 3 (the generator's similarity), the static protocol
table (3.1: a model per attack) and the per-class worst case.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from ecgbench.report.results import COMMON_EPS, Result, classes_of, results, worst_case
from ecgbench.report.tables import attacks_of, column_label, pick, row_groups

__all__ = ["table1", "table2", "table3", "protocol_table", "per_class_worst"]


def _protocol_groups(rs: Sequence[Result]) -> dict[tuple[str, str], dict[int, list[Result]]]:
    """(dataset, model) -> seed -> the paper's static protocol: the clean-trained model's clean cell and the static cells."""
    out: dict[tuple[str, str], dict[int, list[Result]]] = {}
    for r in rs:
        if r.mode == "static" or (r.mode == "clean" and r.training == "clean"):
            out.setdefault((r.dataset, r.model), {}).setdefault(r.seed, []).append(r)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def protocol_table(cells: list[dict], dataset: str) -> pd.DataFrame:
    """The paper's protocol (3.1): per model and attack, the model trained on clean beats plus that attack's static
    set, scored on that attack's static test set (mean over seeds, %). Each column is another trained model, so the
    table has no worst case across them; `clean` is the model trained on clean beats alone."""
    rs = [r for r in results(cells) if r.dataset == dataset]
    attacks = attacks_of([r for r in rs if r.mode == "static"])
    if not attacks:
        return pd.DataFrame()
    rows = []
    for (_, model), seeds in _protocol_groups(rs).items():
        row = {"model": model}
        clean = [r.accuracy for part in seeds.values() for r in part if r.mode == "clean"]
        row["clean"] = f"{np.mean(clean) * 100:.1f}" if clean else "—"
        for a in attacks:
            got = [r.accuracy for part in seeds.values() for r in part if r.mode == "static" and r.attack == a]
            row[column_label([r for r in rs if r.mode == "static"], a, "static")] = f"{np.mean(got) * 100:.1f}" if got else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def _by_eps(rs: Sequence[Result], mode: str) -> list[tuple[str, Result]]:
    """Per row (or, for the static protocol, per model), seed and attack, the one cell a per-class table shows
    (see `pick`), with the name its table gives it."""
    out = []
    if mode == "static":
        for (_, model), seeds in _protocol_groups(rs).items():
            for mine in seeds.values():
                out += [(model, r) for r in mine if r.mode == "clean"]
                out += [(model, p) for a in attacks_of(mine) if (p := pick(mine, a, mode)) is not None]
        return out
    for (_, model, training), seeds in row_groups(rs).items():
        name = model if training == "clean" else f"{model} + paper defence"
        for mine in seeds.values():
            out += [(name, r) for r in mine if r.mode == "clean"]
            out += [(name, p) for a in attacks_of(mine) if (p := pick(mine, a, mode)) is not None]
    return out


def table1(cells: list[dict], dataset: str, mode: str = "static") -> pd.DataFrame:
    """Paper Table 1 layout: per attack and model, accuracy and each class's sensitivity and specificity
    (mean over seeds; each attack at the column eps of `pick`). `static`: the paper's protocol, a model per
    attack; otherwise one row (trained model) per model name, attacked adaptively."""
    rs = _by_eps([r for r in results(cells) if r.dataset == dataset and r.mode in ("clean", mode)], mode)
    rows = []
    for name, r in rs:
        m = r.record["metrics"]
        row = {"attack": r.attack or "No Attack", "model": name, "beats": len(r.correct), "accuracy": m["accuracy"]}
        row.update({k: v for k, v in m.items() if k.startswith(("sensitivity_", "specificity_"))})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    classes = classes_of(cells, dataset)
    df = df[["attack", "model", "beats", "accuracy"] + [f"{m}_{c}" for c in classes for m in ("sensitivity", "specificity")]]
    df = df.groupby(["attack", "model"], sort=False, as_index=False).mean()
    df["beats"] = df["beats"].round().astype(int)  # test beats each number is over (a subset for costly attacks)
    attack_order = ["No Attack"] + attacks_of(results(cells))
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
    cols = [a for a in ["No Attack"] + attacks_of(results(cells)) if a in wide.columns]
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
    for (_, model, training), seeds in row_groups(rs).items():
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
            rows.append({"model": model if training == "clean" else f"{model} + paper defence", **dict(zip(classes, mean))})
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
