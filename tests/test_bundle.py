"""Run bundles are input from elsewhere (issue 18): a crafted or damaged bundle, one made with other plugin code or
for another configuration is refused in one line naming what is wrong, before any file lands."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from ecgbench.contracts.registry import registry
from ecgbench.execute.bundles import unbundle
from ecgbench.plan.keys import identity
from ecgbench.store.bundle import FORMAT, BundleError, write_bundle
from ecgbench.store.io import write_json

CELL = "results/cells/mitbih/kachuee/fgsm.adaptive.json"
ENTRY = "cache/checkpoints/kachuee-0123456789abcdef.pt"
RUN = {"datasets": ["mitbih"], "split": "random", "profile": {"name": "smoke", "epochs": 3}, "seeds": [0], "eps": [],
       "source": None, "invocations": [{"started": "2026-12-05T00:00:00", "command": "ecgbench run"}]}


def files(tmp_path: Path) -> dict[str, Path]:
    src = Path(tempfile.mkdtemp(dir=tmp_path))
    made = {"results/run.json": json.dumps(RUN).encode(), CELL: b'{"cell": {}, "key": "k", "status": "ok"}',
            ENTRY: os.urandom(4096), ENTRY + ".meta.json": b'{"sha256": "x"}'}
    out = {}
    for i, (name, blob) in enumerate(made.items()):
        (src / str(i)).write_bytes(blob)
        out[name] = src / str(i)
    return out


def good(tmp_path: Path, **manifest) -> Path:
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "good.tar.gz"
    write_bundle(path, files(tmp_path), {"configuration": {k: RUN[k] for k in ("datasets", "split", "profile", "seeds", "eps", "source")},
                                         "plugins": {}, **manifest})
    return path


def crafted(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], listed: list[dict] | None = None,
            manifest_first: bool = True) -> Path:
    """A bundle written by hand: `members` as given, the manifest listing `listed` (default: the members, truthfully)."""
    if listed is None:
        listed = [{"name": i.name, "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for i, b in members]
    blob = json.dumps({"format": FORMAT, "files": listed, "plugins": {}, "configuration": {}}).encode()
    info = tarfile.TarInfo("MANIFEST.json")
    info.size = len(blob)
    entries = [(info, blob)] + members if manifest_first else members + [(info, blob)]
    path = tmp_path / "crafted.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for i, b in entries:
            tar.addfile(i, io.BytesIO(b) if i.isreg() else None)
    return path


def member(name: str, blob: bytes = b"{}", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(blob) if kind == tarfile.REGTYPE else 0
    return info, blob


def landed(*folders: Path) -> list[Path]:
    return [p for f in folders if f.exists() for p in f.rglob("*") if p.is_file() or p.is_symlink()]


def test_a_bundle_lands_whole_and_twice_changes_nothing(tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    placed = unbundle(good(tmp_path), out, cache)
    assert placed.written == 4 and placed.kept == 0
    assert json.loads((out / "cells/mitbih/kachuee/fgsm.adaptive.json").read_text())["key"] == "k"
    assert (cache / "checkpoints/kachuee-0123456789abcdef.pt").stat().st_size == 4096
    again = unbundle(good(tmp_path), out, cache)
    assert again.kept == 1 and again.same == 2  # another random payload under the same name: the file here is kept
    assert not [p for p in cache.iterdir() if p.name.startswith(".unbundle-")]  # the staging folder is gone


@pytest.mark.parametrize("members, listed, says", [
    ([member("/etc/ecgbench.json")], None, "refused member name '/etc/ecgbench.json'"),
    ([member("results/cells/../../../../tmp/evil.json")], None, "refused member name"),
    ([member("results/evil.sh")], None, "refused member name 'results/evil.sh'"),
    ([member(ENTRY, b"", tarfile.SYMTYPE, "/etc/passwd")], [{"name": ENTRY, "bytes": 0, "sha256": "0"}], "a link, not a plain file"),
    ([member(ENTRY, b"", tarfile.LNKTYPE, "results/run.json")], [{"name": ENTRY, "bytes": 0, "sha256": "0"}], "a link"),
    ([member(ENTRY, b"", tarfile.CHRTYPE)], [{"name": ENTRY, "bytes": 0, "sha256": "0"}], "a device, not a plain file"),
    ([member(CELL, b'{"a": 1}')], [{"name": CELL, "bytes": 8, "sha256": hashlib.sha256(b'{"a": 2}').hexdigest()}],
     "fails its checksum"),
    ([member(CELL), member(ENTRY)], [{"name": CELL, "bytes": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}],
     f"member '{ENTRY}' is not in its manifest"),
    ([member(CELL)], [{"name": CELL, "bytes": 2, "sha256": hashlib.sha256(b"{}").hexdigest()},
                      {"name": ENTRY, "bytes": 2, "sha256": "0"}], "1 file(s) of its manifest are missing"),
])
def test_a_crafted_bundle_is_refused_before_any_file_lands(tmp_path: Path, members, listed, says) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    with pytest.raises(BundleError, match=None) as err:
        unbundle(crafted(tmp_path, members, listed), out, cache)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert landed(out, cache) == [] and not (tmp_path / "etc").exists()


def test_a_bundle_must_start_with_its_manifest_and_be_a_tar(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="first member must be MANIFEST.json"):
        unbundle(crafted(tmp_path, [member(CELL)], manifest_first=False), tmp_path / "o", tmp_path / "c")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(BundleError, match="not a readable bundle"):
        unbundle(junk, tmp_path / "o", tmp_path / "c")
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(good(tmp_path).read_bytes()[:-900])
    with pytest.raises(BundleError):
        unbundle(truncated, tmp_path / "o", tmp_path / "c")
    assert landed(tmp_path / "o", tmp_path / "c") == []


def test_a_bundle_made_with_another_version_of_a_plugin_is_refused_naming_it(tmp_path: Path) -> None:
    here = identity(registry, "models", "kachuee")
    other = [here[0], here[1], "0.0.1", here[3]]
    with pytest.raises(BundleError) as err:
        unbundle(good(tmp_path, plugins={"models/kachuee": other}), tmp_path / "o", tmp_path / "c")
    assert f"plugin models/kachuee differs: the bundle's is {here[1]} 0.0.1 (source {here[3]}), here {here[1]} {here[2]}" in str(err.value)
    assert landed(tmp_path / "o", tmp_path / "c") == []
    unbundle(good(tmp_path, plugins={"models/kachuee": here}), tmp_path / "o", tmp_path / "c")  # the same one lands


def test_a_bundle_for_another_configuration_is_refused_naming_the_difference(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_json(out / "run.json", {**RUN, "profile": {"name": "smoke", "epochs": 20}})
    with pytest.raises(BundleError) as err:
        unbundle(good(tmp_path), out, tmp_path / "c")
    assert f"made for another configuration than the run in {out}: profile.epochs: 3 vs 20" in str(err.value)
    assert landed(tmp_path / "c") == [] and [p.name for p in landed(out)] == ["run.json"]


def test_the_cli_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    bad = crafted(tmp_path, [member("/etc/ecgbench.json")])
    res = subprocess.run([sys.executable, "-m", "ecgbench", "unbundle", str(bad), "--out", str(tmp_path / "o"),
                          "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"ecgbench: error: {bad}: refused member name '/etc/ecgbench.json' "
                                       "(only plain relative names under results/ and cache/)"]
