"""Progress for people: tqdm bars on a terminal, plain timestamped lines in a log file.

A run's output piped to a file holds one line per event (a dataset loaded, a model trained, a cell
done, every 10th epoch), never tqdm's carriage-return frames. `--quiet` keeps only warnings and errors;
`--verbose` adds every epoch.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

__all__ = ["configure", "info", "detail", "bar", "interactive"]

T = TypeVar("T")
_LEVEL = {"quiet": 0, "normal": 1, "verbose": 2}
_state = {"level": 1, "bars": None}


def configure(*, quiet: bool = False, verbose: bool = False, progress: bool = True) -> None:
    """Set the level for this process (and the worker processes it starts, through the environment)."""
    level = "quiet" if quiet else "verbose" if verbose else "normal"
    os.environ["ECGBENCH_LOG"] = level
    _state["level"] = _LEVEL[level]
    _state["bars"] = progress and interactive()


def _level() -> int:
    return _LEVEL.get(os.environ.get("ECGBENCH_LOG", "normal"), 1)


def interactive() -> bool:
    """Bars only on a terminal: a log file gets lines."""
    return sys.stderr.isatty()


def _emit(msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    if _state["bars"]:
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


def info(msg: str) -> None:
    """A line at the normal level: a dataset loaded, a cell done."""
    if _level() >= 1:
        _emit(msg)


def detail(msg: str) -> None:
    """A line only with --verbose: each epoch, each task start."""
    if _level() >= 2:
        _emit(msg)


def bar(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """A tqdm bar on a terminal (not with --quiet); otherwise the items as they are."""
    if _state["bars"] and _level() >= 1:
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=desc, total=total, leave=False)
    else:
        yield from items
