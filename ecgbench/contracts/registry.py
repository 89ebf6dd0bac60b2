"""One registry of datasets, models and attacks, fed by Python entry points and loaded lazily.

Listing names reads package metadata only; a plugin's module is imported on first `get()`.
`ECGBENCH_PLUGINS` (comma-separated distribution names) limits which distributions load.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, distributions
from typing import Any, Iterable

from ecgbench.contracts.defended import SEPARATOR, defended, split

KINDS = ("datasets", "models", "attacks", "defences")
ENV_VAR = "ECGBENCH_PLUGINS"

__all__ = ["KINDS", "ENV_VAR", "Entry", "Registry", "RegistryError", "registry", "parse_attack", "attack_name"]


class RegistryError(LookupError):
    """An unknown, duplicate or unloadable plugin; the message names it and its distribution."""


@dataclass(frozen=True)
class Entry:
    """An entry point with the distribution that declared it, so errors and listings can name both."""

    kind: str
    name: str
    value: str
    dist: str
    version: str

    def load(self) -> Any:
        try:
            return EntryPoint(self.name, self.value, f"ecgbench.{self.kind}").load()
        except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, and is reported as such
            raise RegistryError(
                f"{self.kind[:-1]} plugin {self.name!r} from {self.dist} {self.version} failed to load "
                f"({self.value}): {type(exc).__name__}: {exc}"
            ) from exc

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "value": self.value, "dist": self.dist, "version": self.version}


def discover() -> list[Entry]:
    """Every `ecgbench.*` entry point of every installed distribution, allowed by ECGBENCH_PLUGINS."""
    allowed = os.environ.get(ENV_VAR)
    allow = None if allowed is None else {a.strip().lower().replace("_", "-") for a in allowed.split(",") if a.strip()}
    found, seen = [], set()
    for dist in distributions():
        dist_name = dist.metadata["Name"] or "?"
        key = dist_name.lower().replace("_", "-")
        if key in seen or (allow is not None and key not in allow):
            continue  # a distribution visible on two sys.path entries is one distribution
        seen.add(key)
        for ep in dist.entry_points:
            if ep.group.startswith("ecgbench.") and ep.group[len("ecgbench."):] in KINDS:
                found.append(Entry(ep.group[len("ecgbench."):], ep.name, ep.value, dist_name, dist.version))
    return found


def hook_entries() -> list[Entry]:
    """Every `ecgbench.hooks` entry point (pluggy hook modules, see ecgbench/hooks.py), allowed by ECGBENCH_PLUGINS."""
    allowed = os.environ.get(ENV_VAR)
    allow = None if allowed is None else {a.strip().lower().replace("_", "-") for a in allowed.split(",") if a.strip()}
    found, seen = [], set()
    for dist in distributions():
        key = (dist.metadata["Name"] or "?").lower().replace("_", "-")
        if key in seen or (allow is not None and key not in allow):
            continue
        seen.add(key)
        found += [Entry("hooks", ep.name, ep.value, dist.metadata["Name"], dist.version) for ep in dist.entry_points if ep.group == "ecgbench.hooks"]
    return found


class Registry:
    """Name -> plugin class, per kind. A name declared twice is an error naming both distributions.

    `defence_params` (defence -> parameter overrides, a profile's) are what its defended models train with;
    a defence not named there trains with its `defaults`.
    """

    def __init__(self, entries: Iterable[Entry] | None = None, defence_params: dict[str, dict[str, Any]] | None = None) -> None:
        self._entries = None if entries is None else list(entries)
        self._loaded: dict[tuple[str, str], Any] = {}
        self.defence_params: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (defence_params or {}).items()}
        self._derived: dict[str, Registry] = {}  # by parameters: a run's planner and workers share defended classes

    def with_defence_params(self, params: dict[str, dict[str, Any]]) -> "Registry":
        """This registry, its defended models training with `params` (a profile's `defence_params`).

        A run's planner (keys), its workers (training, cells) and `keys.identities` take their registry
        through this, so all see the parameters the profile states. What only loads trained weights
        (`ecgbench evaluate`, the zoo, certify, `api.load_model`) keeps the defaults: a defence changes how
        a model trains, not its forward pass, and the parameters it trained with are in the checkpoint's
        record (`train.defence`). Plain plugins already loaded are shared; `self` when nothing changes.
        """
        if params == self.defence_params:
            return self
        key = repr(sorted((name, sorted(values.items())) for name, values in params.items()))
        if key not in self._derived:
            out = Registry(self.entries, params)
            out._loaded = {k: v for k, v in self._loaded.items() if k[0] != "models" or split(k[1])[1] is None}
            self._derived[key] = out
        return self._derived[key]

    @property
    def entries(self) -> list[Entry]:
        if self._entries is None:
            self._entries = discover()
        return self._entries

    def _index(self, kind: str) -> dict[str, Entry]:
        if kind not in KINDS:
            raise RegistryError(f"unknown plugin kind {kind!r}; kinds are {', '.join(KINDS)}")
        index: dict[str, Entry] = {}
        for e in self.entries:
            if e.kind != kind:
                continue
            if e.name in index and index[e.name].value != e.value:
                raise RegistryError(
                    f"{kind[:-1]} name {e.name!r} is registered by two distributions: "
                    f"{index[e.name].dist} {index[e.name].version} ({index[e.name].value}) and {e.dist} {e.version} ({e.value})"
                )
            index[e.name] = e
        return index

    def names(self, kind: str) -> list[str]:
        return sorted(self._index(kind))

    def entry(self, kind: str, name: str) -> Entry:
        """The entry of `name` (for a defended model `kachuee+pgd-at`, the model's, once the defence is known)."""
        if kind == "models":
            name, defence = split(name)
            if defence is not None:
                self.entry("defences", defence)
        index = self._index(kind)
        if name not in index:
            known = ", ".join(sorted(index)) or "(none registered)"
            raise RegistryError(f"unknown {kind[:-1]} {name!r}; registered: {known}")
        return index[name]

    def get(self, kind: str, name: str) -> Any:
        key = (kind, name)
        if key not in self._loaded:
            base, defence = split(name) if kind == "models" else (name, None)
            if defence is None:
                self._loaded[key] = self.entry(kind, name).load()
            else:
                self._loaded[key] = defended(self.get("models", base), self.get("defences", defence), name,
                                             self.defence_params.get(defence, {}))
        return self._loaded[key]

    def select(self, kind: str, patterns: str | Iterable[str]) -> list[str]:
        """Expand `all`, comma lists and fnmatch globs (`'kach*'`) into registered names, in the order given."""
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",")]
        names, out = self.names(kind), []
        for pattern in (p.strip() for p in patterns):
            if not pattern:
                continue
            if kind == "models":  # `kach*+pgd-at`: every matching model under the defence
                base, defence = split(pattern)
                suffix = "" if defence is None else SEPARATOR + self.entry("defences", defence).name  # unknown: one line
            else:
                base, suffix = _split_suffix(pattern)
            matched = names if base == "all" else fnmatch.filter(names, base)
            if not matched:
                raise RegistryError(f"no {kind[:-1]} matches {base!r}; registered: {', '.join(names) or '(none)'}")
            out += [m + suffix for m in matched if m + suffix not in out]
        return out


def parse_attack(spec: str) -> tuple[str, str | None, str | None]:
    """An attack spec `pgd@foolbox:variant` -> (`pgd`, `foolbox`, `variant`): the one place specs are parsed."""
    head, _, variant = spec.partition(":")
    name, _, backend = head.partition("@")
    return name, backend or None, variant or None


def attack_name(spec: str | None) -> str | None:
    """The registered name in a spec (`pgd@foolbox` -> `pgd`), None for no attack."""
    return parse_attack(spec)[0] if spec else None


def _split_suffix(pattern: str) -> tuple[str, str]:
    """`pgd@foolbox:paper-reference` -> (`pgd`, `@foolbox:paper-reference`): back-end and variant ride along."""
    cut = min((i for i in (pattern.find("@"), pattern.find(":")) if i >= 0), default=len(pattern))
    return pattern[:cut], pattern[cut:]


registry = Registry()
