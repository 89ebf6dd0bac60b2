"""scripts/gpu/prepare.sh and slice.sh, the recipe for a borrowed GPU machine without network (docs/gpu-recipe.md).

On this CPU machine: the scripts parse; prepare.sh writes SHA256SUMS and refuses a .carry over the size
limit in one line; slice.sh refuses a .carry that does not match its checksums before it installs or runs
anything; its control flow (install list, time limit, smoke before main, a bundle whatever the main run's
exit code, the split for the device tool) against a stub Python; and a real slice on the CPU on MIT-BIH,
followed by a second slice that continues from the first one's bundle.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PREPARE = REPO / "scripts" / "gpu" / "prepare.sh"
SLICE = REPO / "scripts" / "gpu" / "slice.sh"
MiB = 1 << 20

# A stand-in for the GPU machine's python3: logs every call, acts as pip and as `python -m ecgbench`.
STUB = r"""#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
if [ "$1" = - ]; then cat > /dev/null; echo "stub python 3.12, torch stub"; exit 0; fi
if [ "$1" = -c ]; then case " $STUB_PRESENT " in *" $3 "*) exit 0 ;; *) exit 1 ;; esac; fi
if [ "$1" = -m ] && [ "$2" = pip ]; then
    case $3 in
        --version) exit 0 ;;
        install) for a; do [ "$prev" = --target ] && mkdir -p "$a"; prev=$a; done; exit "${STUB_PIP_RC:-0}" ;;
        *) exit 0 ;;
    esac
fi
if [ "$1" = -m ] && [ "$2" = ecgbench ]; then
    shift 2
    case $1 in
        run) for a; do [ "$prev" = --out ] && out=$a; prev=$a; done
             mkdir -p "$out"
             case $out in */smoke) exit "${STUB_SMOKE_RC:-0}" ;; *) exit "${STUB_MAIN_RC:-0}" ;; esac ;;
        bundle) for a; do [ "$prev" = -o ] && o=$a; prev=$a; done
                [ "${STUB_BUNDLE_RC:-0}" = 0 ] || exit "$STUB_BUNDLE_RC"
                head -c "${STUB_BUNDLE_BYTES:-1000}" /dev/urandom > "$o"; exit 0 ;;
        unbundle) exit 0 ;;
    esac
fi
echo "stub: unexpected call: $*" >&2; exit 99
"""


def bash(*args: object, env: dict | None = None, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "CARRY_LIMIT_MIB": "1000", **(env or {})})


def make_carry(path: Path, bundle: Path | None = None, data: bool = False) -> Path:
    """A small .carry as prepare.sh lays it out: wheels and their MANIFEST, optional data and bundle, SHA256SUMS."""
    wheels = path / "wheels"
    wheels.mkdir(parents=True)
    for name in ("wfdb-4.3.1-py3-none-any.whl", "cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.whl",
                 "ecgbench_atk-0.2.0-py3-none-any.whl"):
        (wheels / name).write_bytes(name.encode() * 100)
    (wheels / "MANIFEST").write_text("always wfdb-4.3.1-py3-none-any.whl\n"
                                     "if-missing cffi cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.whl\n"
                                     "always ecgbench_atk-0.2.0-py3-none-any.whl\n")
    if data:
        (path / "data").mkdir()
        src = path.parent / "datasrc" / "fakedb"
        src.mkdir(parents=True)
        (src / "RECORDS").write_text("1\n")
        with tarfile.open(path / "data" / "fakedb.tar.xz", "w:xz") as tar:
            tar.add(src, arcname="fakedb")
    if bundle is not None:
        shutil.copy(bundle, path / "bundle.tar.gz")
    r = bash(PREPARE, "--carry", path, "--check-only")
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def stub(tmp_path: Path) -> dict:
    py = tmp_path / "stubpython"
    py.write_text(STUB)
    py.chmod(0o755)
    return {"PYTHON": str(py), "STUB_LOG": str(tmp_path / "stub.log"), "STUB_PRESENT": ""}


def stub_calls(env: dict) -> list[str]:
    log = Path(env["STUB_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def summary_rows(out: Path) -> dict[str, list[str]]:
    rows = {}
    for line in (out / "summary.txt").read_text().splitlines()[1:]:
        parts = line.split(None, 3)
        if len(parts) >= 3 and parts[2].isdigit():
            rows[parts[0]] = parts[1:]
    return rows


def test_scripts_parse() -> None:
    for script in (PREPARE, SLICE):
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert os.access(script, os.X_OK), f"{script} is not executable"


def test_prepare_writes_checksums_that_slice_accepts(tmp_path: Path) -> None:
    carry = make_carry(tmp_path / "carry", data=True)
    lines = (carry / "SHA256SUMS").read_text().splitlines()
    listed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}
    files = {p.relative_to(carry).as_posix() for p in carry.rglob("*") if p.is_file() and p.name != "SHA256SUMS"}
    assert set(listed) == files and "data/fakedb.tar.xz" in listed
    for name, digest in listed.items():
        assert hashlib.sha256((carry / name).read_bytes()).hexdigest() == digest
    r = bash(SLICE, "--carry", carry, "--check")
    assert r.returncode == 0 and "matches" in r.stdout, r.stderr


def test_prepare_refuses_a_carry_over_the_limit_in_one_line(tmp_path: Path) -> None:
    carry = tmp_path / "carry"
    (carry / "data").mkdir(parents=True)
    (carry / "data" / "big.tar.xz").write_bytes(os.urandom(2 * MiB))
    r = bash(PREPARE, "--carry", carry, "--check-only", env={"CARRY_LIMIT_MIB": "1"})
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "too big" in r.stderr and "> 1 MiB" in r.stderr and "working tree" in r.stderr
    r = bash(PREPARE, "--carry", carry, "--check-only", env={"CARRY_LIMIT_MIB": "1000"})
    assert r.returncode == 0 and re.search(r"holds 2\.0 MiB .*data 2\.0 MiB", r.stdout), r.stdout + r.stderr


def test_prepare_refuses_a_bundle_that_is_not_a_whole_tar_gz_before_downloading(tmp_path: Path, stub: dict) -> None:
    part = tmp_path / "bundle.tar.gz.0"
    part.write_bytes(b"\x1f\x8b" + os.urandom(100))
    r = bash(PREPARE, "--carry", tmp_path / "carry", "--bundle", part, env=stub)
    assert r.returncode == 1 and "not a whole .tar.gz" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert stub_calls(stub) == []  # no pip download was started


@pytest.mark.parametrize("damage", ["changed", "missing", "not listed"])
def test_slice_refuses_a_carry_that_does_not_match_before_installing(tmp_path: Path, stub: dict, damage: str) -> None:
    carry = make_carry(tmp_path / "carry")
    wheel = carry / "wheels" / "wfdb-4.3.1-py3-none-any.whl"
    if damage == "changed":
        wheel.write_bytes(b"tampered")
    elif damage == "missing":
        wheel.unlink()
    else:
        (carry / "bundle.tar.gz").write_bytes(b"slipped in after prepare.sh")
    out, work = tmp_path / "out", tmp_path / "work"
    r = bash(SLICE, "--carry", carry, "--out", out, "--work", work, "--", "--device", "cpu", env=stub)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    name = "bundle.tar.gz" if damage == "not listed" else "wheels/wfdb-4.3.1-py3-none-any.whl"
    assert "does not match its SHA256SUMS" in r.stderr and name in r.stderr
    assert stub_calls(stub) == [] and not work.exists()  # nothing installed, unpacked or run
    assert "refused" in (out / "summary.txt").read_text()


def test_slice_refuses_options_it_sets_itself(tmp_path: Path, stub: dict) -> None:
    carry = make_carry(tmp_path / "carry")
    for opt in ("--time-limit", "--out", "--cache-dir=x", "--data-dir", "--from-bundle"):
        r = bash(SLICE, "--carry", carry, "--out", tmp_path / "out", "--", "--device", "cpu", opt, "x", env=stub)
        assert r.returncode == 2 and "set by slice.sh" in r.stderr, (opt, r.stderr)
    assert stub_calls(stub) == []


@pytest.mark.parametrize("main_rc", [0, 1, 2, 3])
def test_slice_bundles_whatever_the_main_run_returns(tmp_path: Path, stub: dict, main_rc: int) -> None:
    carry = make_carry(tmp_path / "carry", data=True)
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**stub, "STUB_MAIN_RC": str(main_rc), "STUB_SMOKE_RC": "2", "STUB_PRESENT": "cffi"}
    r = bash(SLICE, "--minutes", 2, "--margin", 30, "--carry", carry, "--out", out, "--work", work,
             "--", "--dataset", "fakedb", "--models", "all", "--device", "cuda", env=env)
    assert r.returncode == main_rc, r.stdout + r.stderr
    assert (out / "bundle.tar.gz").stat().st_size == 1000
    rows = summary_rows(out)
    assert rows["main"][0] == str(main_rc) and rows["bundle"][0] == "0" and rows["smoke"][0] == "2"
    assert "SMOKE RUN FAILED" in (out / "summary.txt").read_text()
    assert "slice: --- bundle: exit 0" in (out / "slice.log").read_text()  # the log holds everything printed

    calls = stub_calls(env)
    install = next(c for c in calls if c.startswith("-m pip install"))
    assert "--no-index" in install and "--no-deps" in install and f"--target {work}/site" in install
    assert "wfdb-4.3.1" in install and "ecgbench_atk-0.2.0" in install
    assert "cffi" not in install  # if-missing, and the stub machine has it
    runs = [c for c in calls if c.startswith("-m ecgbench run")]
    smoke, main = runs
    # the smoke run comes first, with the run's own arguments and the smoke options after them (they win)
    assert smoke.index("--models all") < smoke.index("--models all --attacks fgsm") and "--time-limit 60s" in smoke
    assert f"--out {work}/smoke" in smoke and f"--data-dir {work}/data" in smoke
    limit = int(re.search(r"--time-limit (\d+)s", main).group(1))
    assert 120 - 30 - 10 <= limit <= 120 - 30  # what is left of 2 minutes, less the margin
    assert f"--out {work}/run" in main and f"--cache-dir {work}/cache" in main and "--device cuda" in main
    assert (work / "data" / "fakedb" / "RECORDS").exists()
    bundle = next(c for c in calls if c.startswith("-m ecgbench bundle"))
    assert f"{work}/run -o {out}/bundle.tar.gz --cache-dir {work}/cache" in bundle


def test_slice_installs_what_the_machine_lacks_and_stops_on_an_install_failure(tmp_path: Path, stub: dict) -> None:
    carry = make_carry(tmp_path / "carry", data=True)
    out = tmp_path / "out"
    r = bash(SLICE, "--carry", carry, "--out", out, "--no-smoke", "--", "--device", "cuda",
             env={**stub, "STUB_PIP_RC": "1"})
    assert r.returncode == 2 and "slice: installing the carried wheels failed" in r.stdout  # stderr goes to the log too
    assert "cffi-2.1.1" in next(c for c in stub_calls(stub) if c.startswith("-m pip install"))
    assert not any(c.startswith("-m ecgbench") for c in stub_calls(stub))
    assert summary_rows(out)["install"][0] == "1"


def test_slice_without_a_bundle_says_so_in_its_exit_code(tmp_path: Path, stub: dict) -> None:
    carry = make_carry(tmp_path / "carry", data=True)
    r = bash(SLICE, "--carry", carry, "--out", tmp_path / "out", "--no-smoke", "--", "--device", "cuda",
             env={**stub, "STUB_MAIN_RC": "3", "STUB_BUNDLE_RC": "2"})
    assert r.returncode == 4
    assert "NO BUNDLE" in (tmp_path / "out" / "summary.txt").read_text()


def test_slice_splits_a_large_bundle_for_the_device_tool(tmp_path: Path, stub: dict) -> None:
    carry = make_carry(tmp_path / "carry", data=True)
    out = tmp_path / "devout"
    out.mkdir()
    env = {**stub, "OUT": str(out), "STUB_BUNDLE_BYTES": str(17 * MiB)}
    r = bash(SLICE, "--carry", carry, "--no-smoke", "--", "--device", "cuda", env=env)
    assert r.returncode == 0, r.stderr
    parts = sorted(out.glob("bundle.tar.gz.*"))
    assert [p.name for p in parts] == ["bundle.tar.gz.0", "bundle.tar.gz.1"] and not (out / "bundle.tar.gz").exists()
    assert parts[0].stat().st_size == 15 * MiB and sum(p.stat().st_size for p in parts) == 17 * MiB
    assert (out / "slice.log").exists() and (out / "summary.txt").exists()


@pytest.fixture(scope="module")
def real_data() -> Path:
    path = Path(os.environ.get("ECGBENCH_DATA") or REPO.parent / "shared" / "data")
    if not (path / "mitdb" / "RECORDS").exists():
        pytest.skip(f"no MIT-BIH at {path / 'mitdb'} (set ECGBENCH_DATA)")
    return path


def test_slice_end_to_end_on_the_cpu_and_continued_from_its_bundle(tmp_path: Path, real_data: Path) -> None:
    """A real slice on MIT-BIH (smoke profile, one small model), then a second slice from its bundle."""
    if subprocess.run([sys.executable, "-m", "ecgbench", "bundle", "--help"], capture_output=True).returncode:
        pytest.skip("this ecgbench has no `bundle` command yet")
    env = {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "OUT": ""}
    run_args = ["--dataset", "mitbih", "--profile", "smoke", "--models", "acharya", "--attacks", "fgsm",
                "--modes", "adaptive", "--device", "cpu"]
    first, work = tmp_path / "first", tmp_path / "work1"
    r = bash(SLICE, "--minutes", 2, "--margin", 20, "--carry", make_carry(tmp_path / "carry1"), "--out", first,
             "--work", work, "--skip-install", "--data-dir", real_data, "--smoke-seconds", 30,
             "--smoke", "--profile smoke --models acharya --attacks fgsm --modes adaptive", "--", *run_args,
             env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    rows = summary_rows(first)
    assert [rows[s][0] for s in ("checksums", "install", "imports", "data", "unbundle", "smoke", "main", "bundle")] == \
        ["0", "-", "0", "-", "-", "0", "0", "0"]
    assert "torch" in (first / "summary.txt").read_text() and "result: exit 0" in (first / "summary.txt").read_text()
    assert len(list((work / "run" / "cells").rglob("*.json"))) == 2  # clean and fgsm cells of acharya
    with tarfile.open(first / "bundle.tar.gz") as tar:
        assert any(n.endswith("run.json") for n in tar.getnames())

    # the second slice carries the first one's bundle: unbundled, the main run finds its cells done
    second = tmp_path / "second"
    carry2 = make_carry(tmp_path / "carry2", bundle=first / "bundle.tar.gz")
    r = bash(SLICE, "--minutes", 2, "--margin", 20, "--carry", carry2, "--out", second, "--work", tmp_path / "work2",
             "--skip-install", "--data-dir", real_data, "--no-smoke", "--", *run_args, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    rows = summary_rows(second)
    assert rows["unbundle"][0] == "0" and rows["main"][0] == "0" and rows["bundle"][0] == "0"
    assert re.search(r"(\d+) cells planned, \1 already done", (second / "slice.log").read_text())


@pytest.mark.slow
def test_prepare_then_slice_installs_the_carried_wheels(tmp_path: Path, real_data: Path) -> None:
    """prepare.sh for real (wheels from the package registry, ecgbench's own wheel; no data), then a slice that
    installs them with pip --no-index and runs from them: the whole path but the GPU and the data archive."""
    carry = tmp_path / "carry"
    r = bash(PREPARE, "--carry", carry, "--data", "none", env={"PYTHON": sys.executable}, timeout=600)
    if r.returncode and "could not get a wheel" in r.stderr:
        pytest.skip(f"no package registry here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = (carry / "wheels" / "MANIFEST").read_text().split("\n")
    names = {line.split()[-1].split("-")[0].lower() for line in manifest if line}
    assert {"wfdb", "soundfile", "imbalanced_learn", "adversarial_robustness_toolbox", "foolbox", "eagerpy",
            "gitpython", "gitdb", "smmap", "ecgbench_atk", "cffi", "sklearn_compat"} <= names
    from importlib.metadata import version
    assert f"always wfdb-{version('wfdb')}-" in "\n".join(manifest)  # pinned to this environment's versions
    assert "soundfile" in "".join(m for m in manifest if "manylinux" in m)  # the wheel with libsndfile inside

    out, work = tmp_path / "out", tmp_path / "work"
    r = bash(SLICE, "--minutes", 2, "--margin", 20, "--carry", carry, "--out", out, "--work", work,
             "--data-dir", real_data, "--no-smoke", "--", "--dataset", "mitbih", "--profile", "smoke",
             "--models", "acharya", "--attacks", "fgsm", "--modes", "adaptive", "--device", "cpu",
             env={"PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "OUT": ""}, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert summary_rows(out)["install"][0] == "0"
    assert f"ecgbench-atk 0.2.0 from {work}/site/ecgbench" in (out / "summary.txt").read_text()
    assert (out / "bundle.tar.gz").stat().st_size > 0
