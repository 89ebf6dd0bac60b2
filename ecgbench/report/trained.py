"""A finished run's trained rows, for the commands that reuse them (`ecgbench zoo add`, `ecgbench certify`): the
run's data as it saw it, and a row's checkpoint from the cache, only if it holds the weights the row's cells scored."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ecgbench.config.profiles import Profile, get_profile
from ecgbench.contracts.registry import Registry
from ecgbench.data.catalog import Catalog
from ecgbench.store.io import load_entry, read_json
from ecgbench.store.layout import checkpoint_path

__all__ = ["run_data", "row_checkpoint"]


def run_data(run: Path, cache: Path, data_dir: Path, reg: Registry) -> tuple[dict[str, Any], Profile, Catalog]:
    """The run's manifest, its profile (as run.json recorded it) and a catalog that splits the data as it did."""
    manifest = read_json(Path(run) / "run.json")
    profile = get_profile(manifest["profile"]["name"], {k: v for k, v in manifest["profile"].items() if k != "name"})
    return manifest, profile, Catalog(reg, Path(data_dir), Path(cache), profile, manifest["split"])


def row_checkpoint(cache: Path, model: str, key: str, weights: str) -> tuple[bytes, dict[str, Any]]:
    """The verified cache entry (payload, meta) of `model`'s checkpoint `key`, if its weights are `weights`."""
    path = checkpoint_path(cache, model, key)
    found = load_entry(path)
    if found is None:
        raise FileNotFoundError(f"{path}: the checkpoint of {model} is not in the cache {cache}; "
                                "rerun the run's command with this cache first")
    if found[1]["sha256"][:16] != weights:
        raise ValueError(f"{path}: weights {found[1]['sha256'][:16]}, but the cells of {model} scored {weights}; "
                         "rerun the run's command with this cache first")
    return found
