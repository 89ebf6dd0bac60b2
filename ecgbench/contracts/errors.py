"""Errors as one line that names the plugin at fault and its distribution."""
from __future__ import annotations

from ecgbench.contracts.base import PluginError
from ecgbench.contracts.registry import Registry, RegistryError, attack_name

__all__ = ["Known", "one_line"]


class Known(Exception):
    """A failure already put in one line (a plugin that did not load, a task this one needed that failed)."""


def one_line(exc: BaseException, reg: Registry, *, dataset: str | None = None, model: str | None = None,
             attack: str | None = None) -> str:
    """The error in one line, naming the plugin at fault (of those the failed work ran) and its distribution."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (RegistryError, Known)):
        return msg
    for kind, name in (("models", model), ("attacks", attack_name(attack)), ("datasets", dataset)):
        if name is None:
            continue
        try:
            entry = reg.entry(kind, name)
        except RegistryError:
            continue
        if isinstance(exc, PluginError) and msg.startswith((f"{kind[:-1]} '{name}'", f"{kind[:-1]} {name!r}")):
            return f"{msg} (from {entry.dist} {entry.version})"
        if not isinstance(exc, PluginError) and _raised_in(exc, entry.value.split(":")[0]):
            return f"{kind[:-1]} plugin {name!r} from {entry.dist} {entry.version} raised {type(exc).__name__}: {msg}"
    return msg if isinstance(exc, PluginError) else f"{type(exc).__name__}: {msg}"


def _raised_in(exc: BaseException, module: str) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith(module):
            return True
        tb = tb.tb_next
    return False
