"""Run bundles on disk: one compressed tar holding a manifest and files, each with its checksum.

A bundle is input from elsewhere, so reading one trusts nothing in it: every member must be a plain
file under `results/` or `cache/checkpoints|attacked/`, with a plain relative name listed once in the
manifest (no absolute path, no `..`, no link or device), of the size and SHA-256 the manifest gives.
All of it is checked, in a staging folder inside the target cache, before the first file lands; then
each file is moved into place atomically. Nothing is unpickled: the manifest is JSON and the files
are copied as bytes (checkpoints are later read with `torch.load(weights_only=True)`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ecgbench.store.io import atomic_write

__all__ = ["FORMAT", "BundleError", "write_bundle", "read_bundle", "Staged", "difference"]

FORMAT = "ecgbench-bundle/1"
MANIFEST = "MANIFEST.json"
MAX_MANIFEST = 64 << 20
# results/run.json, results/cells/<dataset>/<model>/<file>.json, cache/checkpoints|attacked/<file>
NAME = re.compile(r"(results/run\.json|results/cells(/[A-Za-z0-9_.+@=-]+){3}\.json|cache/(checkpoints|attacked)/[A-Za-z0-9_.+@=-]+)")


class BundleError(ValueError):
    """A bundle that cannot be used: damaged, crafted, or made for another configuration."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(f"{path}: {why}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_bundle(dest: Path, files: dict[str, Path], manifest: dict[str, Any]) -> dict[str, Any]:
    """Pack `files` (bundle name -> file on disk) with `manifest` (plus each file's size and SHA-256) into
    `dest`, gzip-compressed, written atomically; returns the manifest as written."""
    for name in files:
        if not _safe(name):
            raise ValueError(f"not a bundle member name: {name!r}")
    listed = [{"name": n, "bytes": p.stat().st_size, "sha256": _sha256(p)} for n, p in sorted(files.items())]
    manifest = {**manifest, "format": FORMAT, "files": listed}
    blob = json.dumps(manifest, indent=1, sort_keys=True).encode()

    def write(fh: io.BufferedWriter) -> None:
        with tarfile.open(fileobj=fh, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST, io.BytesIO(blob), len(blob))
            for entry in listed:
                with open(files[entry["name"]], "rb") as src:
                    _add(tar, entry["name"], src, entry["bytes"])

    atomic_write(dest, write)
    return manifest


def _add(tar: tarfile.TarFile, name: str, fh: Any, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar.addfile(info, fh)


def _safe(name: str) -> bool:
    parts = name.split("/")
    return bool(NAME.fullmatch(name)) and ".." not in parts and "." not in parts and not name.startswith("/")


class Staged:
    """A bundle's manifest and its files, verified, waiting in a staging folder to be placed."""

    def __init__(self, manifest: dict[str, Any], folder: Path) -> None:
        self.manifest, self.folder = manifest, folder

    def path(self, name: str) -> Path:
        return self.folder / name

    def names(self) -> list[str]:
        return [f["name"] for f in self.manifest["files"]]

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def read_bundle(path: Path, staging_parent: Path) -> Staged:
    """Check every member of the bundle at `path` against its manifest into a staging folder under
    `staging_parent`; `BundleError` (one line, naming the member) if anything is wrong, nothing staged left."""
    path = Path(path)
    staging_parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".unbundle-", dir=staging_parent))
    try:
        manifest = _stage(path, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Staged(manifest, folder)


def _stage(path: Path, folder: Path) -> dict[str, Any]:
    try:
        tar = tarfile.open(path, mode="r:*")
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BundleError(path, f"not a readable bundle ({type(exc).__name__}: {exc})") from None
    with tar:
        try:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isreg() or first.size > MAX_MANIFEST:
                raise BundleError(path, f"its first member must be {MANIFEST} (an ecgbench bundle starts with it)")
            manifest = _manifest(path, tar.extractfile(first).read())  # type: ignore[union-attr]
            expected = {f["name"]: f for f in manifest["files"]}
            seen: set[str] = set()
            for member in iter(tar.next, None):
                _check_member(path, member, expected, seen)
                _copy_checked(path, tar, member, expected[member.name], folder / member.name)
                seen.add(member.name)
        except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError) as exc:
            raise BundleError(path, f"damaged ({type(exc).__name__}: {exc})") from None
    missing = sorted(set(expected) - seen)
    if missing:
        raise BundleError(path, f"{len(missing)} file(s) of its manifest are missing, first {missing[0]}")
    return manifest


def _manifest(path: Path, blob: bytes) -> dict[str, Any]:
    manifest = json.loads(blob)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(path, f"format {found!r}, expected {FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and {"name", "bytes", "sha256"} <= set(f) for f in files):
        raise BundleError(path, "its manifest lists no files with name, bytes and sha256")
    names = [f["name"] for f in files]
    bad = [n for n in names if not isinstance(n, str) or not _safe(n)]
    if bad:
        raise BundleError(path, f"refused member name {bad[0]!r} (only plain relative names under results/ and cache/)")
    if len(set(names)) != len(names):
        raise BundleError(path, "its manifest lists a file twice")
    return manifest


def _check_member(path: Path, member: tarfile.TarInfo, expected: dict[str, dict], seen: set[str]) -> None:
    if not member.isreg():
        what = "link" if member.issym() or member.islnk() else "device" if member.isdev() else "folder" if member.isdir() else "special file"
        raise BundleError(path, f"refused member {member.name!r}: a {what}, not a plain file")
    if not _safe(member.name):
        raise BundleError(path, f"refused member name {member.name!r} (only plain relative names under results/ and cache/)")
    if member.name not in expected:
        raise BundleError(path, f"member {member.name!r} is not in its manifest")
    if member.name in seen:
        raise BundleError(path, f"member {member.name!r} appears twice")
    if member.size != expected[member.name]["bytes"]:
        raise BundleError(path, f"member {member.name!r} has {member.size} bytes, its manifest says {expected[member.name]['bytes']}")


def _copy_checked(path: Path, tar: tarfile.TarFile, member: tarfile.TarInfo, entry: dict, dest: Path) -> None:
    src = tar.extractfile(member)
    assert src is not None  # a regular file
    dest.parent.mkdir(parents=True, exist_ok=True)
    h, n = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            n += len(block)
            if n > entry["bytes"]:
                break
            h.update(block)
            out.write(block)
    if n != entry["bytes"] or h.hexdigest() != entry["sha256"]:
        raise BundleError(path, f"member {member.name!r} fails its checksum (damaged or altered)")
    os.chmod(dest, 0o644)


def difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first setting that differs between two JSON-like values, as `profile.epochs: 3 vs 20`; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    return None if a == b else f"{path}: {json.dumps(a, default=str)} vs {json.dumps(b, default=str)}"
