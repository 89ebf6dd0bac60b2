"""Filling a model zoo (`ecgbench.store.zoo`) from a finished run: `ecgbench zoo add RUN`.

For each row trained on clean beats, the checkpoint its cells scored goes in, taken from the cache only
when its checksum equals the `weights` every cell of the row records, with the run's command and
machine, the training record, the row's clean and adaptive accuracies, and its sanity flags (checked now
on the run's test beats, so rows computed before the checks existed are checked too).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ecgbench.contracts.registry import Registry, registry as default_registry
from ecgbench.engine.sanity import check_model
from ecgbench.report.results import COMMON_EPS, results, worst_case
from ecgbench.report.trained import row_checkpoint, run_data
from ecgbench.store.io import atomic_write, read_json
from ecgbench.store.zoo import entries, write_index, zoo_dir

__all__ = ["add_run"]


def add_run(run: Path, cache: Path, data_dir: Path, folder: str | Path | None = None,
            reg: Registry | None = None) -> list[dict[str, Any]]:
    """Add `run`'s rows trained on clean beats to the zoo at `folder`; returns the entries added."""
    reg = reg or default_registry
    run, out = Path(run), zoo_dir(folder)
    manifest, profile, catalog = run_data(run, cache, data_dir, reg)
    cells = [read_json(f) for f in sorted((run / "cells").rglob("*.json"))]
    index = {e["name"]: e for e in entries(out)}
    added = []
    for (dataset, model, seed), part in sorted(_rows(cells).items()):
        payload, sha, key = _checkpoint(run, cache, dataset, model, seed, part)
        name = f"{model}-{dataset}-{manifest['split']}-{profile.name}-seed{seed}"
        clean = next(c for c in part if c["cell"]["mode"] == "clean")
        test = catalog.data(dataset, seed).splits.test
        net = reg.get("models", model)(len(clean["classes"]), test.x.shape[1])
        net.load_state_dict(torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True))
        worst = worst_case([r for r in results(part) if r.mode == "adaptive"], COMMON_EPS)
        atomic_write(out / f"{name}.pt", lambda f, b=payload: f.write(b))
        index[name] = {
            "name": name, "model": model, "dataset": dataset, "split": manifest["split"], "seed": seed,
            "profile": profile.name, "file": f"{name}.pt", "sha256": sha, "bytes": len(payload),
            "classes": clean["classes"], "window": int(test.x.shape[1]),
            "training": {"key": key, "profile": manifest["profile"], **{k: v for k, v in clean["train"].items() if k != "curve"}},
            "accuracy": {"clean": clean["metrics"]["accuracy"],
                         "adaptive": {c["cell"]["attack"]: c["metrics"]["accuracy"] for c in part
                                      if c["cell"]["mode"] == "adaptive" and c["cell"].get("eps") is None},
                         "white-box worst eps=0.01": None if worst is None else worst.accuracy},
            "flags": check_model(net, test.x, test.y, torch.device("cpu"))["flags"],
            "run": {"folder": str(run), "command": manifest.get("command"), "machine": manifest.get("machine")},
        }
        added.append(index[name])
    write_index(list(index.values()), out)
    return added


def _rows(cells: list[dict]) -> dict[tuple[str, str, int], list[dict]]:
    """(dataset, model, seed) -> the ok cells of each row trained on clean beats (not outside models)."""
    rows: dict[tuple[str, str, int], list[dict]] = {}
    for c in cells:
        cell = c["cell"]
        if c.get("status") == "ok" and cell.get("training", "clean") == "clean" and cell["mode"] != "static" \
                and "outside" not in c:
            rows.setdefault((cell["dataset"], cell["model"], int(cell.get("seed") or 0)), []).append(c)
    return rows


def _checkpoint(run: Path, cache: Path, dataset: str, model: str, seed: int, part: list[dict]) -> tuple[bytes, str, str]:
    """The row's checkpoint from the cache (payload, SHA-256, training key), if it holds the weights its cells scored."""
    weights = {c.get("weights") for c in part}
    keys = {c.get("checkpoint") for c in part}
    if len(weights) != 1 or len(keys) != 1 or None in weights:
        raise ValueError(f"{run}: the {dataset} row {model} (seed {seed}) mixes weights {sorted(map(str, weights))}; "
                         "rerun its command before adding it to the zoo")
    key = keys.pop()
    payload, meta = row_checkpoint(cache, model, key, weights.pop())
    return payload, meta["sha256"], key

