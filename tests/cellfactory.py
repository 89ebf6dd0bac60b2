"""Cell records as the runner writes them (the fields reporting reads), for the report, HTML, export and hook tests.

Per-beat outcomes are given explicitly, so a test knows every worst case and interval it asserts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ecgbench.store.io import write_json

CLASSES = ("N", "S", "V", "F")
KINDS = {"boundary": "decision", "hsj": "decision", "square": "score"}


def bits(values: Sequence[bool] | np.ndarray) -> str:
    return "".join("1" if v else "0" for v in values)


def cell(model: str, attack: str | None, mode: str, correct: Sequence[bool] | np.ndarray, *, dataset: str = "mitbih",
         seed: int | None = None, eps: float | None = None, attack_eps: float = 0.01, y: Sequence[int] | None = None,
         val: float = 0.8, n_params: int = 1000, new_format: bool = True, eval_index: Sequence[int] | None = None,
         linf_found: Sequence[float | None] | None = None, classes: Sequence[str] = CLASSES, training: str | None = None,
         weights: str | None = None) -> dict:
    """One ok cell record; `new_format=False` leaves out `seed`, `eps`, `attack_kind` and `training` as cells before them did.
    `training` defaults to the paper's protocol for static cells and to clean beats otherwise."""
    correct = np.asarray(correct, dtype=bool)
    y = np.arange(len(correct)) % len(classes) if y is None else np.asarray(y)
    metrics = {"accuracy": float(correct.mean()), "n": int(len(correct))}
    for i, c in enumerate(classes):
        metrics[f"sensitivity_{c}"] = float(correct[y == i].mean()) if (y == i).any() else float("nan")
        metrics[f"specificity_{c}"] = 0.9
    record = {"cell": {"dataset": dataset, "model": model, "attack": attack, "mode": mode}, "key": f"k-{model}-{attack}-{mode}-{seed}-{eps}",
              "status": "ok", "metrics": metrics, "classes": list(classes), "correct": bits(correct), "clean_accuracy": 0.8,
              "train": {"n_params": n_params, "val_balanced_accuracy": val}, "seconds": 0.1,
              "examples": {"index": [0], "y": [0], "clean": [[0.1, 0.5, 0.2]], "evaluated": [[0.1, 0.52, 0.2]]}}
    if new_format:
        record["cell"].update(seed=seed or 0, eps=eps, training=training or ("static" if mode == "static" else "clean"))
        if weights is not None:
            record["weights"] = weights
        if attack:
            record["attack_kind"] = KINDS.get(attack.partition("@")[0], "gradient")
    elif seed is not None or eps is not None:
        raise ValueError("old-format cells have no seed or eps")
    if attack:
        record["attack"] = {"name": attack.partition("@")[0], "eps": attack_eps}
    if eval_index is not None:
        record["eval_index"] = list(eval_index)
    if linf_found is not None:
        record["linf_found"] = list(linf_found)
    return record


def write_cells(out: Path, records: Sequence[dict], run: dict | None = None) -> Path:
    """Write records where the runner would (`cells/<dataset>/<model>/<attack>.<mode>[.s<seed>][.e<eps>].json`)."""
    for r in records:
        c = r["cell"]
        name = f"{(c['attack'] or 'none').replace(':', '+')}.{c['mode']}" + (".defence" if c.get("training") == "defence" else "")
        if c.get("seed"):
            name += f".s{c['seed']}"
        if c.get("eps") is not None:
            name += f".e{c['eps']:g}"
        write_json(out / "cells" / c["dataset"] / c["model"] / f"{name}.json", r)
    write_json(out / "run.json", run or RUN)
    return out


RUN = {"command": "ecgbench run --profile quick", "split": "random", "source": "ecg-atk-gan",
       "profile": {"name": "quick", "epochs": 3, "seed": 0}, "machine": {"cpu_count": 2, "threads": 1, "platform": "Linux", "torch": "2.13.0", "python": "3.11.7"},
       "invocations": [{"wall_seconds": 60.0}], "datasets": ["mitbih"], "models": [], "attacks": [], "modes": ["static", "adaptive"]}
