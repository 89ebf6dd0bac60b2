"""Outside models: a classifier trained in someone else's pipeline, evaluated as it is (`ecgbench evaluate`).

An `Outside` names one: its class (`path/to/file.py:Class`, `package.module:Class`, or the class itself
in Python), its checkpoint (a state_dict file, loaded with `weights_only=True`) and that file's SHA-256,
and how its inputs relate to the dataset's beats. `expects` states the window, sampling rate and value
range it was trained on, checked against the dataset's (an error when they differ, never a silent
resample); `transform` adapts the dataset's beats to it (`zscore`: per-beat standardisation) inside the
evaluated module, so the attacks see it and budgets stay on the dataset's scale.

Registered beside the plugins as model `name` (`with_outside`), its "training" loads the checkpoint, and
its identity (so every key) carries the checkpoint's checksum and the class's source hash: another
checkpoint is never served a cached result. Nothing is retrained.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ecgbench.contracts.base import PluginError
from ecgbench.contracts.registry import Entry, Registry

__all__ = ["Outside", "outside", "with_outside", "outside_of", "load_class", "network", "load_into", "check_expects",
           "TRANSFORMS", "DIST"]

DIST = "outside"  # the distribution an outside model is listed under


class ZScore(nn.Module):
    """Each beat to zero mean and unit standard deviation (a model trained on z-scored beats)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-8)


TRANSFORMS: dict[str, Callable[[], nn.Module]] = {"none": nn.Identity, "zscore": ZScore}


@dataclass(frozen=True)
class Outside:
    """An outside model as the run configuration carries it (plain data: it pickles to any worker)."""

    name: str
    target: str  # `file.py:Class` or `module:Class`; `<python>` for a class given in Python
    checkpoint: str
    sha256: str  # of the checkpoint file
    transform: str = "none"
    expects: tuple[tuple[str, Any], ...] = ()  # (window | rate | value_range, value)
    cls: Any = field(default=None, compare=False, repr=False)  # the class itself when given in Python
    instance: Any = field(default=None, compare=False, repr=False)  # a module given in Python: copied, then loaded

    def load(self) -> type:
        return self.cls if self.cls is not None else load_class(self.target)

    def describe(self) -> dict[str, Any]:
        """What a cell records of it: where the model came from."""
        return {"class": self.target, "checkpoint": Path(self.checkpoint).name, "sha256": self.sha256,
                "transform": self.transform, "expects": dict(self.expects)}


def outside(model: str | type | nn.Module, checkpoint: str | Path, *, name: str | None = None, transform: str = "none",
            expects: dict[str, Any] | None = None) -> Outside:
    """Check and describe an outside model (a class path, a class, or a module whose architecture is copied): its
    class loads, its checkpoint exists, the transform is known, the expectations are ones we check."""
    instance = model if isinstance(model, nn.Module) else None
    cls = type(model) if instance is not None else model if isinstance(model, type) else load_class(model)
    target = model if isinstance(model, str) else f"{cls.__module__}:{cls.__qualname__}"
    path = Path(checkpoint)
    if not path.is_file():
        raise PluginError(f"--checkpoint {path}: no such file")
    if transform not in TRANSFORMS:
        raise PluginError(f"--transform {transform!r}: unknown; choose one of {', '.join(TRANSFORMS)}")
    declared = {**(getattr(cls, "expects", None) or {}), **(expects or {})}
    unknown = set(declared) - {"window", "rate", "value_range"}
    if unknown:
        raise PluginError(f"expects: unknown key(s) {', '.join(sorted(unknown))}; give window, rate and/or value_range")
    chosen = name or cls.__name__.lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", chosen):
        raise PluginError(f"--name {chosen!r}: use lower-case letters, digits, '.', '_' and '-' (it names files)")
    if "value_range" in declared:
        declared["value_range"] = tuple(float(v) for v in declared["value_range"])
    return Outside(chosen, target, str(path.resolve()), sha256(path), transform,
                   tuple(sorted(declared.items())), None if isinstance(model, str) else cls, instance)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_class(target: str) -> type:
    """`path/to/file.py:Class` or `package.module:Class` -> the class; a fault is one line naming `--model`."""
    where, _, qualname = target.rpartition(":")
    if not where or not qualname:
        raise PluginError(f"--model {target!r}: give path/to/file.py:Class or package.module:Class")
    try:
        if where.endswith(".py"):
            path = Path(where).resolve()
            if not path.is_file():
                raise PluginError(f"--model {target!r}: no such file {where}")
            module_name = f"ecgbench_outside_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
            module = sys.modules.get(module_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
                sys.modules[module_name] = module
                spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(where)
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module: name it and what went wrong
        raise PluginError(f"--model {target!r}: could not load it ({type(exc).__name__}: {exc})") from exc
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise PluginError(f"--model {target!r}: not a torch.nn.Module class")
    return obj


def build(cls: type, n_classes: int, window: int) -> nn.Module:
    """The user's class built as it declares: with `n_classes` and `window` if its constructor takes them, else bare."""
    params = inspect.signature(cls.__init__).parameters
    wanted = {k: v for k, v in (("n_classes", n_classes), ("window", window)) if k in params}
    required = [p for n, p in list(params.items())[1:] if p.default is p.empty and n not in wanted
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise PluginError(f"model class {cls.__qualname__} needs {', '.join(p.name for p in required)} to be built; "
                          "give a class that builds with no arguments (or with n_classes and window)")
    return cls(**wanted)


def network(spec: Outside, n_classes: int, window: int) -> nn.Module:
    """The outside network, untrained: a copy of the module given in Python, or its class built."""
    return copy.deepcopy(spec.instance) if spec.instance is not None else build(spec.load(), n_classes, window)


def load_into(spec: Outside, net: nn.Module) -> None:
    """The checkpoint loaded into the outside network; one line naming both where they disagree."""
    try:
        net.load_state_dict(read_state(spec))
    except RuntimeError as exc:  # missing, unexpected or misshapen tensors
        raise PluginError(f"--checkpoint {spec.checkpoint} does not fit --model {spec.target}: "
                          f"{' '.join(str(exc).split())[:300]}") from exc


def read_state(spec: Outside) -> dict[str, torch.Tensor]:
    """The checkpoint's state_dict, its checksum verified against the one recorded when the run was planned."""
    path = Path(spec.checkpoint)
    if sha256(path) != spec.sha256:
        raise PluginError(f"--checkpoint {path}: changed since the run started (SHA-256 differs); rerun the command")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - not a plain tensor checkpoint
        raise PluginError(f"--checkpoint {path}: not a loadable state_dict with weights_only=True "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    for key in ("state_dict", "model_state_dict", "model"):  # common wrappers of a state_dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PluginError(f"--checkpoint {path}: holds no state_dict (a dict of tensors)")
    return state


def check_expects(spec: Outside, dataset: Any) -> None:
    """The window, rate and value range the model declares against the dataset's: one line where they differ."""
    have = {"window": dataset.window, "rate": dataset.sampling_rate, "value_range": tuple(map(float, dataset.value_range))}
    for key, value in spec.expects:
        if value != have[key]:
            hint = " (a model trained on z-scored beats: --transform zscore)" if key == "value_range" else ""
            raise PluginError(f"model {spec.name} ({spec.target}) expects {key} {value}, but dataset {dataset.name!r} "
                              f"has {have[key]}; evaluate it on beats it was trained for{hint}")


class Evaluated(nn.Module):
    """The evaluated module: the declared transform, then the outside network (its state under `net.`)."""

    spec: Outside

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__()
        self.transform = TRANSFORMS[self.spec.transform]()
        self.net = network(self.spec, n_classes, window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.transform(x))


@dataclass(frozen=True)
class OutsideEntry(Entry):
    """A registry entry whose class is built from an `Outside`, not imported from an entry point."""

    spec: Outside = None  # type: ignore[assignment]

    def load(self) -> type:
        inner = self.spec.load()  # a class that does not load fails here, named
        attrs: dict[str, Any] = {"spec": self.spec, "__module__": __name__}
        if hasattr(inner, "detect"):  # an attack detector: scored, and attacked with the classifier (adaptive-detect)
            attrs["detect"] = lambda self, x: self.net.detect(self.transform(x))
        return type(f"Evaluated_{self.spec.name}", (Evaluated,), attrs)


def with_outside(reg: Registry, models: tuple[Outside, ...]) -> Registry:
    """`reg` plus the outside models; a name taken by a registered model is an error."""
    if not models:
        return reg
    have = {e.name: e for e in reg.entries if e.kind == "models"}
    extra = []
    for m in models:
        if m.name not in have:
            extra.append(OutsideEntry("models", m.name, m.target, DIST, _version(m), m))
        elif getattr(have[m.name], "spec", None) != m:
            raise PluginError(f"--name {m.name!r}: taken by a registered model; give the outside model another name")
    return Registry([*reg.entries, *extra]) if extra else reg


def _version(m: Outside) -> str:
    """What the outside model's identity holds (so its keys): checkpoint checksum, class source, transform."""
    try:
        code = hashlib.sha256(Path(inspect.getsourcefile(m.load()) or "").read_bytes()).hexdigest()[:16]
    except (OSError, TypeError):
        code = "unknown"
    return f"sha256 {m.sha256}, code {code}, transform {m.transform}"


def outside_of(models: tuple[Outside, ...], name: str) -> Outside | None:
    return next((m for m in models if m.name == name), None)
