#!/usr/bin/env bash
# Fill .carry/ on the CPU machine for scripts/gpu/slice.sh on a GPU machine without network
# (see docs/gpu-recipe.md):
#   .carry/wheels/        the packages the GPU machine lacks, pinned to this venv's versions, and ecgbench
#   .carry/data/DB.tar.xz one database (mitdb: the MLII lead only, see below)
#   .carry/bundle.tar.gz  an optional run bundle to continue (`ecgbench bundle`)
#   .carry/SHA256SUMS     checked by slice.sh before it installs anything
# The device tool carries the working tree plus .carry, 64 MiB together; this script fails if they do not fit.
#
# usage: scripts/gpu/prepare.sh [--data mitdb|ptbxl|none] [--bundle FILE] [--full-data] [--all-deps]
#                               [--carry DIR] [--check-only]
#   --full-data   pack the database as it is (mitdb: 44 MiB instead of 20; too big beside this tree)
#   --all-deps    also carry requests, six, packaging ... (the H200 image has them)
#   --check-only  only rewrite SHA256SUMS and check the size of an existing .carry
# env: ECGBENCH_DATA (data root, default /work/shared/data), PYTHON (the venv whose versions are pinned,
#      default .venv/bin/python), GPU_PYTHON_VERSION (default 3.12), CARRY_LIMIT_MIB (default 64)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CARRY=$REPO/.carry
DB=mitdb
BUNDLE=""
FULL_DATA=0
ALL_DEPS=0
CHECK_ONLY=0
SRC=${ECGBENCH_DATA:-/work/shared/data}
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
GPU_PY=${GPU_PYTHON_VERSION:-3.12}
LIMIT_MIB=${CARRY_LIMIT_MIB:-64}

# What the GPU machine lacks (docs: /work/shared/docs/gpu-machine.md). cffi, pycparser and sklearn-compat
# are needs of soundfile and imbalanced-learn that the H200 image lacks too; they are installed there
# only if missing. --all-deps adds the rest of what our imports need, for a barer machine.
REQUIRED=(wfdb soundfile imbalanced-learn adversarial-robustness-toolbox foolbox eagerpy GitPython gitdb smmap)
DEPS=(cffi pycparser sklearn-compat)
MORE_DEPS=(six packaging requests urllib3 idna certifi charset-normalizer)

die() { echo "prepare: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --data) DB=${2:?--data needs a database folder name or none}; shift 2 ;;
        --bundle) BUNDLE=${2:?--bundle needs a file}; shift 2 ;;
        --full-data) FULL_DATA=1; shift ;;
        --all-deps) ALL_DEPS=1; shift ;;
        --carry) CARRY=${2:?--carry needs a folder}; shift 2 ;;
        --check-only) CHECK_ONLY=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
if [ -n "$BUNDLE" ]; then  # checked first, before minutes of downloading and compressing
    [ -f "$BUNDLE" ] || die "no bundle $BUNDLE"
    gzip -t "$BUNDLE" 2>/dev/null || die "$BUNDLE is not a whole .tar.gz (split? join the parts: cat FILE.? > FILE)"
fi
mkdir -p "$CARRY"
CARRY=$(cd "$CARRY" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# --- wheels ----------------------------------------------------------------------------------------------
# pip download: wheels for the GPU machine's Python, whatever Python runs here; a package without a
# matching wheel is built from its sdist with `pip wheel --no-deps` (right for pure-Python packages only).
quiet() {  # run a command, showing its output only if it fails
    "$@" > "$TMP/log" 2>&1 || { local rc=$?; cat "$TMP/log" >&2; return $rc; }
}

fetch() {  # fetch NAME==VERSION DIR
    local plat=(--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64)
    quiet "$PY" -m pip download --no-deps --only-binary=:all: --python-version "$GPU_PY" --implementation cp \
        --abi "cp${GPU_PY/./}" "${plat[@]}" -d "$2" "$1" \
    || { echo "prepare: no $GPU_PY manylinux wheel for $1; building it from source (pure Python only)"
         quiet "$PY" -m pip wheel --no-deps -w "$2" "$1"; } \
    || die "could not get a wheel for $1"
}

pins() {  # NAME... -> NAME==VERSION as installed beside $PY (the GPU machine must run the same versions)
    "$PY" - "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"prepare: {name} is not installed beside {sys.executable}, so its version cannot be pinned")
EOF
}

build_wheels() {
    local w=$CARRY/wheels pin name f required optional deps=("${DEPS[@]}")
    if [ "$ALL_DEPS" = 1 ]; then deps+=("${MORE_DEPS[@]}"); fi
    required=$(pins "${REQUIRED[@]}") || exit 1
    optional=$(pins "${deps[@]}") || exit 1
    rm -rf "$w"; mkdir -p "$w"
    : > "$w/MANIFEST"  # lines: "always FILE" or "if-missing DIST FILE"; read by slice.sh
    for pin in $required; do
        mkdir "$TMP/one"; fetch "$pin" "$TMP/one"
        for f in "$TMP"/one/*.whl; do mv "$f" "$w/"; echo "always $(basename "$f")" >> "$w/MANIFEST"; done
        rmdir "$TMP/one"
    done
    for pin in $optional; do
        name=${pin%%==*}
        mkdir "$TMP/one"; fetch "$pin" "$TMP/one"
        for f in "$TMP"/one/*.whl; do mv "$f" "$w/"; echo "if-missing $name $(basename "$f")" >> "$w/MANIFEST"; done
        rmdir "$TMP/one"
    done
    # ecgbench itself, from a clean copy of the working tree (tracked and untracked-not-ignored files), so
    # no stale build/ folder of the checkout leaks into the wheel
    mkdir "$TMP/src"
    (cd "$REPO" && git ls-files -z -co --exclude-standard -- pyproject.toml README.md 'LICENSE*' ecgbench baselines plugins \
        | while IFS= read -r -d '' f; do if [ -f "$f" ]; then printf '%s\0' "$f"; fi; done \
        | tar --null -T - -cf -) | tar -xf - -C "$TMP/src"
    mkdir "$TMP/own"
    quiet "$PY" -m pip wheel --no-deps --no-build-isolation -w "$TMP/own" "$TMP/src" \
        || quiet "$PY" -m pip wheel --no-deps -w "$TMP/own" "$TMP/src" || die "pip wheel of ecgbench failed"
    for f in "$TMP"/own/*.whl; do mv "$f" "$w/"; echo "always $(basename "$f")" >> "$w/MANIFEST"; done
    echo "prepare: $(grep -c . "$w/MANIFEST") wheels in $w"
}

# --- data ------------------------------------------------------------------------------------------------
# mitdb: ecgbench reads only the MLII lead, so the other channel of each format-212 signal file is zeroed
# before compression (xz -9: about 20 MiB instead of 44). Headers and annotations stay byte-identical, and
# the beats cut from the copy are checked to be those cut from the original (same content digest, which
# is what checkpoints and cells are keyed on), so a run there continues one from here and back.
reduce_mitdb() {  # reduce_mitdb SRC_ROOT DEST_ROOT
    "$PY" - "$1" "$2" <<'EOF'
import hashlib, shutil, sys
from pathlib import Path
import numpy as np
import wfdb
from ecgbench.data.catalog import beats_digest
from ecgbench.plugins.datasets.mitbih import LEAD, MitBih

src, dest = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src / "mitdb", dest / "mitdb")
root = dest / "mitdb"
for name in (root / "RECORDS").read_text().split():
    h = wfdb.rdheader(str(root / name))
    if h.n_sig != 2 or list(h.fmt) != ["212", "212"] or len(set(h.file_name)) != 1 or any(h.byte_offset or []):
        continue  # not the plain two-channel 212 layout: keep it whole
    dat = root / h.file_name[0]
    b = np.frombuffer(dat.read_bytes(), dtype=np.uint8).copy()
    if len(b) % 3:
        continue
    frames = b.reshape(-1, 3)  # per frame: channel 0 low byte, both high nibbles, channel 1 low byte
    if h.sig_name[0] != LEAD:
        frames[:, 0] = 0; frames[:, 1] &= 0xF0
    if h.sig_name[1] != LEAD:
        frames[:, 2] = 0; frames[:, 1] &= 0x0F
    dat.write_bytes(frames.tobytes())
a, b = MitBih(src).load(), MitBih(dest).load()
if beats_digest(a) != beats_digest(b) or len(a.y) != len(b.y):
    sys.exit("prepare: the reduced mitdb gives other beats than the original; use --full-data")
sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(root.iterdir())
        if p.is_file() and p.name not in ("SHA256SUMS", "TRANSPORT.txt")]
(root / "SHA256SUMS").write_text("".join(sums))
(root / "TRANSPORT.txt").write_text(
    f"Copy for transport: in each signal file every channel but {LEAD} is zeroed (ecgbench reads only {LEAD}).\n"
    f"Headers and annotations are the originals. Beats: {len(b.y)}, content digest {beats_digest(b)}, "
    f"the same as from the original records.\n")
print(f"prepare: mitdb reduced to its {LEAD} lead; {len(b.y)} beats, digest {beats_digest(b)} as the original's")
EOF
}

pack_data() {
    local d=$CARRY/data out stamp
    mkdir -p "$d"
    if [ "$DB" = none ]; then rm -rf "$d"; return; fi
    [ -d "$SRC/$DB" ] || die "no $SRC/$DB (set ECGBENCH_DATA to the folder holding $DB/)"
    out=$d/$DB.tar.xz
    # reuse the archive when the source files (names, sizes, times), the mode and this script are unchanged
    stamp=$( { echo "full=$FULL_DATA"; sha256sum < "$0"; find "$SRC/$DB" -type f -printf '%P %s %T@\n' | LC_ALL=C sort; } | sha256sum | cut -c1-16)
    if [ -f "$out" ] && [ "$(cat "$d/$DB.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "prepare: $out is up to date"
    else
        find "$d" -mindepth 1 -delete  # one database at a time
        if [ "$DB" = mitdb ] && [ "$FULL_DATA" = 0 ]; then
            reduce_mitdb "$SRC" "$TMP/data"
            root=$TMP/data
        else
            root=$SRC
        fi
        echo "prepare: compressing $DB (xz -9, about a minute)"
        XZ_OPT=-9 tar --sort=name --owner=0 --group=0 -C "$root" -cJf "$out.part" "$DB"
        mv "$out.part" "$out"
        echo "$stamp" > "$d/$DB.stamp"
    fi
    find "$d" -mindepth 1 -maxdepth 1 ! -name "$DB.tar.xz" ! -name "$DB.stamp" -exec rm -rf {} +
}

# --- bundle, checksums, size -----------------------------------------------------------------------------
place_bundle() {
    if [ -n "$BUNDLE" ]; then
        cp "$BUNDLE" "$CARRY/bundle.tar.gz"
    else
        rm -f "$CARRY/bundle.tar.gz"  # never let an old bundle travel by mistake
    fi
}

write_sums() {
    (cd "$CARRY" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | tr '\n' '\0' \
        | xargs -0 -r sha256sum > "$TMP/sums") && mv "$TMP/sums" "$CARRY/SHA256SUMS"
}

check_size() {
    "$PY" - "$REPO" "$CARRY" "$LIMIT_MIB" <<'EOF'
import os, subprocess, sys
from pathlib import Path
repo, carry, limit = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
MiB = 1 << 20
def size(p):
    return os.lstat(p).st_size if os.path.lexists(p) else 0
def folder(p):
    return sum(size(f) for f in p.rglob("*") if f.is_file() or f.is_symlink())
listed = subprocess.run(["git", "-C", repo, "ls-files", "-z", "-co", "--exclude-standard"],
                        capture_output=True, check=True).stdout.split(b"\0")
tree = sum(size(repo / os.fsdecode(f)) for f in listed if f)
parts = {name: folder(carry / name) if (carry / name).is_dir() else size(carry / name)
         for name in ("wheels", "data", "bundle.tar.gz")}
total = folder(carry)
fmt = lambda n: f"{n / MiB:.1f} MiB"
detail = ", ".join(f"{k} {fmt(v)}" for k, v in parts.items())
if tree + total > limit * MiB:
    sys.exit(f"prepare: too big: {carry} {fmt(total)} ({detail}) + working tree {fmt(tree)} = "
             f"{fmt(tree + total)} > {limit:g} MiB, the most the device tool carries; carry less "
             f"(a bundle made with --leave-out-under, --data none) or shrink the tree")
print(f"prepare: {carry} holds {fmt(total)} ({detail}); with the working tree ({fmt(tree)}) "
      f"{fmt(tree + total)} of {limit:g} MiB; {fmt(limit * MiB - tree - total)} to spare")
EOF
}

if [ "$CHECK_ONLY" = 0 ]; then
    build_wheels
    pack_data
    place_bundle
fi
write_sums
check_size
