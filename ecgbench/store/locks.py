"""Locks: one run per results folder, and one writer per cache entry (filelock)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from ecgbench.store.io import write_json

__all__ = ["RunLocked", "run_lock", "entry_lock", "LOCK"]

LOCK = ".ecgbench.lock"


class RunLocked(RuntimeError):
    """Another run holds this results folder."""


@contextlib.contextmanager
def entry_lock(path: Path, timeout: float = -1) -> Iterator[None]:
    """Hold the lock of one cache entry, so concurrent runs that need it compute it once.

    The second run waits, then finds the entry written by the first and loads it.
    """
    from filelock import FileLock

    lock = Path(path).with_name(f".{Path(path).name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock, timeout=timeout):
        yield


class run_lock:
    """One run per results folder: a lock held for the run's lifetime (filelock), naming its holder.

    A second run on the same folder stops with a one-line error naming the process that holds it,
    or waits for it with `wait=True`.
    """

    def __init__(self, out: Path, command: str, wait: bool) -> None:
        from filelock import FileLock

        self.out, self.command, self.wait = out, command, wait
        self.lock = FileLock(out / LOCK, timeout=-1 if wait else 0)
        self.holder = out / (LOCK + ".json")

    def __enter__(self) -> "run_lock":
        from filelock import Timeout

        try:
            self.lock.acquire()
        except Timeout:
            who = {}
            try:
                who = json.loads(self.holder.read_text())
            except (OSError, ValueError):
                pass
            held = (f"pid {who.get('pid')} on {who.get('host')} since {who.get('started')} ({who.get('command')})"
                    if who else "another process")
            raise RunLocked(f"results folder {self.out} is in use by {held}; wait for it to finish, "
                            "or pass --wait to queue behind it") from None
        write_json(self.holder, {"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": self.command})
        return self

    def __exit__(self, *exc: Any) -> None:
        self.holder.unlink(missing_ok=True)
        self.lock.release()
