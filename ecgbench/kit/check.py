"""`ecgbench check KIND NAME`: the contract checks of `ecgbench.kit.testing`, run on one registered plugin.

A plugin author runs this before publishing; it prints one line per passed check and stops at the
first failure with a `PluginError` naming the plugin, its distribution and what was expected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ecgbench.contracts.base import PluginError
from ecgbench.contracts.registry import Registry, RegistryError, registry as default_registry

__all__ = ["check_plugin", "KINDS"]

KINDS = {"dataset": "datasets", "model": "models", "attack": "attacks", "defence": "defences"}


def check_plugin(kind: str, name: str, data_dir: Path, reg: Registry | None = None,
                 cache: Path | None = None) -> Iterator[str]:
    """Yield a line per passed check of the `kind` plugin `name`; raise PluginError on the first failure.

    Datasets load their `smoke_records`; models are checked on synthetic beats (windows 280 and 187,
    2 and 4 classes); attacks run every back-end with the smoke profile's budgets against a small
    Kachuee CNN on a few MIT-BIH beats from `data_dir`. `cache` defaults to ECGBENCH_CACHE.
    """
    from ecgbench.kit import testing

    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r}; choose one of {', '.join(KINDS)}")
    reg = reg or default_registry
    try:
        entry = reg.entry(KINDS[kind], name)
        cls = reg.get(KINDS[kind], name)
    except RegistryError as exc:
        raise PluginError(str(exc)) from exc
    yield f"{kind} {name!r} from {entry.dist} {entry.version} loads ({entry.value})"

    if kind == "dataset":
        checks = testing.dataset_checks(cls, data_dir)
    elif kind == "model":
        checks = testing.model_checks(cls, name=name)
    elif kind == "defence":  # its parameters, then the model checks (its step included) of a small CNN under it
        checks = testing.defence_checks(cls, name)
    else:
        from ecgbench.config.profiles import PROFILES
        from ecgbench.store.layout import cache_dir

        import torch

        model, x, y, value_range = testing.reference_setup(data_dir, cache_dir(cache))
        with torch.no_grad():
            correct = int((model(x).argmax(1) == y).sum())
        yield f"reference: a Kachuee CNN trained briefly on MIT-BIH smoke beats, {correct} of {len(x)} test beats correct"
        checks = testing.attack_checks(cls, model, x, y, value_range, PROFILES["smoke"].attack_params.get(name, {}))
    try:
        yield from checks
    except PluginError as exc:
        raise PluginError(f"{kind} plugin {name!r} from {entry.dist} {entry.version} failed its check: {exc}") from exc
