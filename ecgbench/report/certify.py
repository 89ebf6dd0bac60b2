"""`ecgbench certify RUN`: certified accuracy of each row trained on clean beats, by randomized smoothing.

A separate table, never mixed into the empirical worst case: a certified number is a guarantee about the
smoothed classifier (`ecgbench.engine.smoothing`), not a measurement of the model under attack. Run on a
fixed stratified subset of the run's test beats (`beats`), with the row's own checkpoint from the cache
(verified: the weights every cell of the row scored). Radii are L2 on the [0, 1] beat scale; the table
states sigma, the sample counts and alpha beside it.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from ecgbench.contracts.registry import Registry, registry as default_registry
from ecgbench.data.catalog import stratified_subset
from ecgbench.engine.smoothing import ABSTAIN, certify
from ecgbench.report.trained import row_checkpoint, run_data
from ecgbench.store.io import atomic_write, read_json, write_json

__all__ = ["certified_table", "write_certified"]


def certified_table(run: Path, cache: Path, data_dir: Path, *, sigma: float, radii: Sequence[float], beats: int = 200,
                    n0: int = 100, n: int = 1000, alpha: float = 0.001, reg: Registry | None = None) -> pd.DataFrame:
    """One row per (dataset, model, seed) trained on clean beats: smoothed accuracy and certified accuracy at `radii`."""
    reg = reg or default_registry
    _, profile, catalog = run_data(run, cache, data_dir, reg)
    rows: list[dict[str, Any]] = []
    for f in sorted((run / "cells").rglob("none.clean*.json")):
        rec = read_json(f)
        cell = rec["cell"]
        if rec.get("status") != "ok" or cell.get("training", "clean") != "clean" or "outside" in rec:
            continue
        payload, _ = row_checkpoint(cache, cell["model"], rec["checkpoint"], rec["weights"])
        test = catalog.data(cell["dataset"], int(cell.get("seed") or 0)).splits.test
        idx = stratified_subset(test.y, beats, profile.seed)
        net = reg.get("models", cell["model"])(len(rec["classes"]), test.x.shape[1])
        net.load_state_dict(torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True))
        pred, radius = certify(net, torch.as_tensor(test.x[idx])[:, None], len(rec["classes"]), sigma=sigma, n0=n0, n=n,
                               alpha=alpha, seed=profile.seed)
        right = pred == test.y[idx]
        row = {"dataset": cell["dataset"], "model": cell["model"], "seed": int(cell.get("seed") or 0), "beats": len(idx),
               "abstained": float((pred == ABSTAIN).mean()), "smoothed accuracy": float(right.mean())}
        row.update({f"certified r={r:g}": float((right & (radius >= r)).mean()) for r in radii})
        rows.append(row)
    return pd.DataFrame(rows)


def write_certified(run: Path, table: pd.DataFrame, settings: dict[str, Any]) -> list[Path]:
    """certified.md / .csv / .json in the run folder, the settings stated above the table."""
    shown = table.copy()
    for col in shown.columns:
        if col == "abstained" or col.startswith(("certified", "smoothed")):
            shown[col] = (shown[col] * 100).round(1)
    head = ("# Certified accuracy (%), randomized smoothing (Cohen et al. 2019)\n\n"
            f"sigma {settings['sigma']:g}, n0 {settings['n0']}, n {settings['n']}, alpha {settings['alpha']:g}, "
            f"{settings['beats']} test beats per row (a fixed stratified subset); L2 radii on the [0, 1] beat scale. "
            "`certified r=R`: the share of beats the smoothed classifier gets right with a certified radius of at "
            "least R; `abstained`: beats it could not certify at all. Not comparable with the leaderboard's "
            "empirical (L-inf) robust accuracy.\n\n")
    return [atomic_write(run / "certified.md", lambda fh: fh.write((head + shown.to_markdown(index=False) + "\n").encode())),
            atomic_write(run / "certified.csv", lambda fh: fh.write(table.to_csv(index=False).encode())),
            write_json(run / "certified.json", {"settings": settings, "rows": table.to_dict(orient="records")})]
