"""On-disk state: content-addressed cache keys, atomic durable writes, and verified reads.

Everything the program reads back it verifies: cache entries (beats, checkpoints, attacked sets) are
written as a payload plus a small `.meta.json` holding the payload's SHA-256, written last; a payload
without its meta, or whose bytes do not match, is damaged. A damaged entry is reported in one line,
deleted and recomputed (`Damaged`). Writes go through a temporary file that is fsynced, renamed, and
the folder fsynced, so a crash or power cut never leaves a partial file under a final name.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = [
    "cache_key", "atomic_write", "write_json", "read_json", "save_arrays", "load_arrays",
    "Damaged", "save_entry", "load_entry", "written", "discard", "read_cell", "meta_path", "verified", "warn_damaged",
]


class Damaged(ValueError):
    """A file on disk that cannot be trusted: truncated, unparsable, or not what its checksum says."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path, self.why = Path(path), why


def cache_key(*parts: Any) -> str:
    """Hash of the canonical JSON of everything that changes the answer (lm-evaluation-harness style)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Write through a temporary file in the same folder, fsync it, rename, fsync the folder.

    Readers never see half a file, and after a power cut the final name holds the old file or the
    whole new one, never an empty one. The file gets the user's umask, as `open()` would give it, so a
    results folder or a group's shared cache stays readable to those it is shared with.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the mode open() would give it
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_json(path: Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def read_json(path: Path) -> Any:
    """A JSON file; `Damaged` (a ValueError) if it does not parse."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Damaged(path, f"not valid JSON ({exc})") from exc


def read_cell(path: Path) -> dict:
    """A cell file, verified: valid JSON holding the fields every cell has; else `Damaged`."""
    record = read_json(path)
    if not isinstance(record, dict) or not {"cell", "key", "status"} <= set(record):
        raise Damaged(path, "not a cell record (missing cell, key or status)")
    return record


# -- verified cache entries -----------------------------------------------------------------------
def meta_path(path: Path) -> Path:
    """An entry's checksum file, written last: `<name>.meta.json` beside it."""
    return path.with_name(path.name + ".meta.json")


def written(path: Path) -> bool:
    """Whether an entry's payload and its meta (written last) are both on disk; not verified (`load_entry` does that)."""
    return path.exists() and meta_path(path).exists()


def save_entry(path: Path, payload: bytes, **meta: Any) -> Path:
    """Write `payload` atomically, then its meta (SHA-256, size, `meta`): the meta marks the entry complete."""
    atomic_write(path, lambda fh: fh.write(payload))
    write_json(meta_path(path), {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload), **meta})
    return path


def load_entry(path: Path) -> tuple[bytes, dict] | None:
    """The payload and meta of a complete entry, None if there is none; `Damaged` if it fails its check."""
    path, meta_file = Path(path), meta_path(Path(path))
    if not meta_file.exists():
        if path.exists():
            raise Damaged(path, "no checksum file (an interrupted or foreign write)")
        return None
    meta = read_json(meta_file)
    try:
        payload = path.read_bytes()
    except FileNotFoundError as exc:
        raise Damaged(path, "payload missing beside its checksum file") from exc
    if len(payload) != meta.get("bytes") or hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
        raise Damaged(path, f"checksum mismatch ({len(payload)} bytes, {meta.get('bytes')} written)")
    return payload, meta


def discard(path: Path) -> None:
    """Delete an entry and its meta (a damaged one, before recomputing it)."""
    for p in (Path(path), meta_path(Path(path))):
        p.unlink(missing_ok=True)


def save_arrays(path: Path, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return save_entry(path, buf.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """Arrays of a verified entry (pickles refused), None if absent; `Damaged` if it fails its check."""
    found = load_entry(path)
    if found is None:
        return None
    try:
        with np.load(io.BytesIO(found[0]), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001 - a payload that passed its checksum but does not load is still damaged
        raise Damaged(path, f"unreadable arrays ({type(exc).__name__}: {exc})") from exc


def verified(load: Callable[[Path], Any], path: Path) -> Any:
    """`load(path)`, or None when the entry is absent or damaged; a damaged one is reported and deleted."""
    try:
        return load(path)
    except Damaged as exc:
        warn_damaged(exc)
        discard(path)
        return None


def warn_damaged(exc: Damaged, then: str = "recomputing") -> None:
    """The one line a user sees when a damaged file is thrown away."""
    print(f"ecgbench: {exc.path} is damaged ({exc.why}); deleted, {then}", file=sys.stderr)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
