"""Content keys: every task is named by a hash of what changes its answer.

Pure functions of their inputs: the data's settings and content digest, the profile, each
plugin's identity (registered name, distribution, version and the hash of its source text) and
the attack's parameters. Not where a module sits: moving a plugin's file keeps its results valid.
Equal keys are one task, and a cached output with another key is never served.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from ecgbench.config.profiles import Profile
from ecgbench.config.run import RunConfig
from ecgbench.contracts.defended import split
from ecgbench.contracts.registry import Registry, RegistryError
from ecgbench.store.io import cache_key

__all__ = ["code_hash", "identity", "identities", "train_key", "static_key", "cell_key"]


def code_hash(obj: Any) -> str:
    """Hash of the source text that defines a plugin, so editing a plugin invalidates its cached results."""
    try:
        return cache_key(Path(inspect.getsourcefile(obj) or "").read_text())
    except (OSError, TypeError):
        return "unknown"


def identity(reg: Registry, kind: str, name: str) -> list:
    """What names a plugin's code: registered name, distribution, version and source hash ("unloadable" if it fails).

    A defended model's adds the parameters its defence trains with under `reg` (a run's registry carries
    its profile's `defence_params`, see `Registry.with_defence_params`): the effective ones, so a profile
    that states the defaults keeps the keys of one that states nothing, and a changed eps changes them.
    """
    base, defence = split(name) if kind == "models" else (name, None)
    if defence is not None:  # a defended model: the model's identity, the defence's, and its parameters
        try:
            params = reg.get(kind, name).defence
        except Exception:  # noqa: BLE001 - a combination that cannot be built fails its own cells
            params = "unbuildable"
        return [name, identity(reg, "models", base), identity(reg, "defences", defence), params]
    try:
        entry = reg.entry(kind, name)
        return [name, entry.dist.lower().replace("_", "-"), entry.version, code_hash(reg.get(kind, name))]
    except RegistryError:
        return [name, "unloadable"]


def identities(reg: Registry, cfg: RunConfig) -> dict[str, list]:
    """`kind/name` -> identity of every plugin the run uses (what a bundle and the Ray probe compare between machines)."""
    reg = reg.with_defence_params(cfg.profile.defence_params)
    return {f"{kind}/{name}": identity(reg, kind, name) for kind, name in cfg.plugins()}


def _train_profile(p: Profile) -> list:
    extra = [p.patience] if p.patience is not None else []
    return [p.epochs, p.batch_size, p.smote_target, *extra]


def train_key(data: dict, model: list, static: list[str] | None, p: Profile) -> str:
    """A training: the data it sees (`data`: settings and digest), the model's identity, the static sets it adds, the profile."""
    return cache_key("model", data, model, static, *_train_profile(p))


def static_key(data: dict, source: str, attack: dict, attack_code: list, p: Profile, costly: bool) -> str:
    """A static set: the data, the source model's training key, the attack's parameters and identity, the caps."""
    subset = [p.costly_test_cap] if p.costly_test_cap and costly else []
    return cache_key("static", data, source, attack, attack_code, p.static_train_cap, *subset)


def _cell_profile(p: Profile) -> dict[str, Any]:
    """The profile as a cell's key holds it: without `defence_params`, which reach a cell through its defended
    model's identity (the parameters in effect), so the cells of undefended models keep their keys."""
    d = p.as_dict()
    d.pop("defence_params", None)
    return d


def cell_key(cell: dict, split: str, p: Profile, plugins: list[list], digest: str | None, defended: bool) -> str:
    """A cell: the cell itself, the split, the profile, every plugin it runs (and the static source where it
    trains on static sets), the data's digest, and whether its model is the paper's defence."""
    return cache_key("cell", cell, split, _cell_profile(p), plugins, digest, "defended" if defended else "trained on clean beats")
