"""The model zoo: the benchmark's trained checkpoints, each with its SHA-256, training and committed accuracies.

Where the files live, and why: in the package (`ecgbench/zoo/`: `index.json` and one `.pt` state_dict
per model), so `pip install ecgbench-atk` brings them and `load_model` works offline, on a GPU machine with
no network too. A zoo is a few MB (20 quick models: 11 MB); the `standard` models will add about as
much. Another folder (`--zoo-dir`, `ECGBENCH_ZOO`) holds a lab's own zoo, made the same way.

`ecgbench.report.zoo.add_run` fills a zoo from a finished run (`ecgbench zoo add`).
`read_state` verifies a file's SHA-256 against the index before `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

from ecgbench.store.io import Damaged, read_json, write_json

__all__ = ["ZOO_ENV", "zoo_dir", "entries", "find", "read_state", "write_index", "describe"]

ZOO_ENV = "ECGBENCH_ZOO"
PACKAGED = Path(__file__).resolve().parents[1] / "zoo"


def zoo_dir(folder: str | Path | None = None) -> Path:
    """`folder`, else $ECGBENCH_ZOO, else the zoo shipped in the package."""
    return Path(folder or os.environ.get(ZOO_ENV) or PACKAGED)


def entries(folder: str | Path | None = None) -> list[dict[str, Any]]:
    """Every model of the zoo, as its index lists them (an empty list for a zoo not yet made)."""
    index = zoo_dir(folder) / "index.json"
    return list(read_json(index)["models"]) if index.exists() else []


def find(model: str, *, dataset: str = "mitbih", split: str = "random", seed: int = 0, profile: str | None = None,
         folder: str | Path | None = None) -> dict[str, Any]:
    """The zoo entry of `model` trained on `dataset`/`split` with `seed` (and `profile`: the largest trained if None)."""
    found = [e for e in entries(folder) if (e["model"], e["dataset"], e["split"], e["seed"]) == (model, dataset, split, seed)
             and (profile is None or e["profile"] == profile)]
    if not found:
        have = ", ".join(sorted({e["name"] for e in entries(folder)})) or "(none)"
        raise LookupError(f"the zoo at {zoo_dir(folder)} has no {model} trained on {dataset} ({split} split, seed {seed}"
                          f"{'' if profile is None else f', profile {profile}'}); it has: {have}")
    order = {"smoke": 0, "quick": 1, "standard": 2, "paper": 3}
    return max(found, key=lambda e: order.get(e["profile"], -1))


def read_state(entry: dict[str, Any], folder: str | Path | None = None) -> dict:
    """The entry's state_dict, its file's SHA-256 checked against the index first."""
    import torch

    path = zoo_dir(folder) / entry["file"]
    if not path.exists():
        raise FileNotFoundError(f"{path}: the zoo's index lists it but the file is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise Damaged(path, "SHA-256 differs from the zoo's index")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def write_index(models: list[dict[str, Any]], folder: str | Path | None = None) -> Path:
    """The zoo's index, written atomically, its models sorted by name."""
    out = zoo_dir(folder)
    out.mkdir(parents=True, exist_ok=True)
    return write_json(out / "index.json", {"about": "ecgbench model zoo (ecgbench/store/zoo.py): trained checkpoints "
                                           "with their SHA-256, training and committed accuracies",
                                           "models": sorted(models, key=lambda e: e["name"])})


def describe(folder: str | Path | None = None) -> str:
    """The zoo as a table: what `ecgbench zoo` prints."""
    from tabulate import tabulate

    rows = [[e["name"], f"{e['training'].get('n_params', 0):,}", f"{e['accuracy']['clean'] * 100:.1f}",
             "—" if e["accuracy"]["white-box worst eps=0.01"] is None else f"{e['accuracy']['white-box worst eps=0.01'] * 100:.1f}",
             ", ".join(e["flags"]) if e.get("flags") else "none" if e.get("flags") is not None else "not checked",
             e["sha256"][:12], e["run"]["folder"]] for e in entries(folder)]
    if not rows:
        return f"the zoo at {zoo_dir(folder)} is empty"
    return tabulate(rows, headers=["name", "params", "clean %", "white-box worst %", "flags", "sha256", "from run"], disable_numparse=True) + \
        f"\n{len(rows)} models in {zoo_dir(folder)}; load one with ecgbench.load_model(name, dataset=..., split=..., seed=...)"
