"""The on-disk layout, in one place: where the cache keeps beats, checkpoints and attacked sets, and
where a results folder keeps its cells; and the typed reads of what lies there.

Cache (`--cache-dir`, else ECGBENCH_CACHE, else ~/.cache/ecgbench):
`beats/<dataset>-<key>.npz`, `checkpoints/<model>-<key>.pt`, `attacked/<attack>-<key>.npz`, each with
its `.meta.json` checksum; while a training or an attacked set is unfinished, its saved state in two
slots beside it, `<name>.state0` and `<name>.state1` (the newer is continued; if it is damaged, the other). Results folder: `run.json`, `cells/<dataset>/<model>/<attack>.<mode>[.defence][.eps<e>][.seed<n>].json`,
and the report's tables and figures.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ecgbench.store.io import Damaged, discard, load_entry, meta_path, read_cell, read_json, save_entry, warn_damaged

__all__ = ["cache_dir", "beats_path", "checkpoint_path", "attacked_path", "cell_path", "read_checkpoint", "save_checkpoint",
           "weights_digest", "cell_answers", "is_done", "read_done", "partial_path", "state_paths", "save_state", "read_state", "drop_state"]


def cache_dir(explicit: str | Path | None = None) -> Path:
    """`--cache-dir`, else ECGBENCH_CACHE, else ~/.cache/ecgbench."""
    path = Path(explicit or os.environ.get("ECGBENCH_CACHE") or Path.home() / ".cache" / "ecgbench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def beats_path(cache: Path, dataset: str, key: str) -> Path:
    return cache / "beats" / f"{dataset}-{key}.npz"


def checkpoint_path(cache: Path, model: str, key: str) -> Path:
    """Where a training task's checkpoint lives in the cache."""
    return cache / "checkpoints" / f"{model}-{key}.pt"


def attacked_path(cache: Path, attack: str, key: str) -> Path:
    """Where a static task's attacked set lives in the cache."""
    return cache / "attacked" / f"{attack}-{key}.npz"


def partial_path(cache: Path, attack: str, key: str, part: str) -> Path:
    """The name of attacked beats still being made (`part`: "cell", or a static set's "train" or "test"): never
    written itself, only its state slots (`state_paths`), deleted once the beats are."""
    return cache / "attacked" / f"{attack}-{key}.{part}"


def cell_path(out: Path, dataset: str, model: str, attack: str | None, mode: str, eps: float | None, seed: int,
              training: str = "clean", eps_uv: float | None = None) -> Path:
    """`cells/<dataset>/<model>/<attack>.<mode>[.defence][.eps<e>|.eps<u>uV][.seed<n>].json`; the clean-trained row at
    seed 0 and the default eps keeps the short name."""
    name = (attack or "none").replace(":", "+")
    extra = (".defence" if training == "defence" else "") + (f".eps{eps:g}" if eps is not None else "")
    extra += (f".eps{eps_uv:g}uV" if eps_uv is not None else "") + (f".seed{seed}" if seed else "")
    return Path(out) / "cells" / dataset / model / f"{name}.{mode}{extra}.json"


def save_checkpoint(path: Path, state: dict, info: dict) -> str:
    """A state_dict and its training record, as one verified entry; returns the weights' digest (`weights_digest`)."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    save_entry(path, buf.getvalue(), info=info)
    return weights_digest(path) or ""


def read_checkpoint(path: Path) -> tuple[dict, dict, str] | None:
    """A verified checkpoint entry as (state_dict, info, weights digest), None if absent; loaded with `weights_only=True`."""
    import torch

    found = load_entry(path)
    if found is None:
        return None
    try:
        state = torch.load(io.BytesIO(found[0]), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a checkpoint that passed its checksum but does not load
        raise Damaged(path, f"not a loadable state_dict ({type(exc).__name__})") from exc
    return state, found[1]["info"], found[1]["sha256"][:16]


def state_paths(final: Path) -> tuple[Path, Path]:
    """The two slots where the unfinished work that will become the entry `final` keeps its state."""
    return final.with_name(final.name + ".state0"), final.with_name(final.name + ".state1")


def save_state(final: Path, state: dict) -> Path:
    """Save the state of unfinished work (plain tensors, numbers, lists) over the older of its two slots, so that
    the newer one stays whole whatever happens to this write; returns the slot written."""
    import torch

    slots = state_paths(final)
    seq = [_state_seq(p) for p in slots]
    slot = slots[0] if seq[0] <= seq[1] else slots[1]
    buf = io.BytesIO()
    torch.save(state, buf)
    return save_entry(slot, buf.getvalue(), seq=max(seq) + 1)


def read_state(final: Path) -> dict | None:
    """The newest state of unfinished work that passes its checks, None if there is none; a damaged slot is
    reported and deleted, and the other (older) one used. Loaded with `weights_only=True` (no pickle runs)."""
    import torch

    for slot in sorted(state_paths(final), key=_state_seq, reverse=True):
        try:
            found = load_entry(slot)
            if found is None:
                continue
            try:
                return torch.load(io.BytesIO(found[0]), map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - passed its checksum but does not load
                raise Damaged(slot, f"not a loadable training state ({type(exc).__name__})") from exc
        except Damaged as exc:
            warn_damaged(exc, "continuing from the previous state")
            discard(slot)
    return None


def drop_state(final: Path) -> None:
    """Delete the state slots of work that has finished (its entry is written)."""
    for slot in state_paths(final):
        discard(slot)


def _state_seq(slot: Path) -> int:
    """A slot's sequence number (0 if it has none or its checksum file is unreadable)."""
    try:
        return int(read_json(meta_path(slot)).get("seq", 0)) if meta_path(slot).exists() else 0
    except (Damaged, ValueError, TypeError, AttributeError):
        return 0


def weights_digest(path: Path) -> str | None:
    """What a checkpoint is, not how it was asked for: the first 16 hex digits of its payload's SHA-256, from its
    checksum file (None if there is none). Two trainings of one recipe on two machines share a key, not a digest."""
    try:
        return str(read_json(meta_path(path))["sha256"])[:16]
    except (FileNotFoundError, KeyError, TypeError, Damaged):
        return None


def cell_answers(record: dict, key: str, retry_failed: bool) -> bool:
    """A cell record answers `key` if computed under it (and, with `retry_failed`, did not fail)."""
    return record.get("key") == key and not (retry_failed and record.get("status") != "ok")


def is_done(path: Path, key: str, retry_failed: bool) -> bool:
    """Whether the cell file at `path` holds this key's answer; read-only (a damaged file is not done, and left alone)."""
    try:
        return cell_answers(read_cell(path), key, retry_failed) if path.exists() else False
    except Damaged:
        return False


def read_done(path: Path, key: str, retry_failed: bool) -> dict[str, Any] | None:
    """The cell file at `path` if it holds this key's answer (and is ok, with `retry_failed`); a damaged one is deleted."""
    if not path.exists():
        return None
    try:
        old = read_cell(path)
    except Damaged as exc:
        warn_damaged(exc)
        path.unlink(missing_ok=True)
        return None
    return old if cell_answers(old, key, retry_failed) else None
