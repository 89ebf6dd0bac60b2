#!/usr/bin/env bash
# One time-boxed slice of an ecgbench run on a borrowed GPU machine without network (docs/gpu-recipe.md).
# Run from the repository root, with .carry/ filled by scripts/gpu/prepare.sh:
#
#   bash scripts/gpu/slice.sh --minutes 9 -- --dataset mitbih --profile standard --models all \
#        --attacks all --modes adaptive --device cuda
#
# Steps: check .carry/SHA256SUMS; install the carried wheels into a folder on PYTHONPATH (the machine's
# torch stays in use); unpack the data; unbundle .carry/bundle.tar.gz if there; a smoke run (own time
# limit); the main run with --time-limit = what is left of --minutes minus --margin; `ecgbench bundle`.
# Writes OUT/bundle.tar.gz (split into bundle.tar.gz.0, .1 ... of 15 MiB when $OUT is the device tool's and
# it is over 16 MiB), OUT/slice.log (everything printed) and OUT/summary.txt (each step's exit code and
# seconds, versions, GPU). OUT is --out, else $OUT, else ./slice-out.
#
# Options (before --):
#   --minutes N        the whole slice, install to bundle (default 9)
#   --margin S         seconds kept after the main run for bundling (default 45)
#   --out DIR          where the bundle, log and summary go
#   --carry DIR        the carried folder (default .carry)
#   --work DIR         scratch for the install, data, run folder and cache (default: a temp folder, removed)
#   --data-dir DIR     use this data root instead of unpacking CARRY/data
#   --smoke "OPTIONS"  appended to the run arguments for the smoke run
#                      (default "--profile smoke --models all --attacks fgsm --modes adaptive")
#   --smoke-seconds S  the smoke run's time limit (default 60); --no-smoke skips it
#   --skip-install     use the ecgbench importable by $PYTHON as it is (CPU tests)
#   --check            only check CARRY against its SHA256SUMS
# env: PYTHON (default python3), ECGBENCH_PLUGINS (default ecgbench-atk: the built-ins only)
#
# Exit code: the main run's (0 all done, 1 some cells failed, 2 error, 3 time limit with work left) when
# the bundle was written; 4 when no bundle could be written; 2 when the slice itself failed before the
# main run (bad checksums, install, data, unbundle), with one line saying why.
set -euo pipefail

START=${SLICE_START:-$(date +%s)}
MINUTES=9
MARGIN=45
OUT_DIR=${OUT:-$PWD/slice-out}
CARRY=.carry
WORK=""
DATA_DIR=""
SMOKE="--profile smoke --models all --attacks fgsm --modes adaptive"
SMOKE_SECONDS=60
NO_SMOKE=0
SKIP_INSTALL=0
CHECK_ONLY=0
PY=${PYTHON:-python3}
ARGS=()
ORIG_ARGS=("$@")

usage() { sed -n '2,31p' "$0"; }
while [ $# -gt 0 ]; do
    case $1 in
        --minutes) MINUTES=$2; shift 2 ;;
        --margin) MARGIN=$2; shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        --carry) CARRY=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --data-dir) DATA_DIR=$2; shift 2 ;;
        --smoke) SMOKE=$2; shift 2 ;;
        --smoke-seconds) SMOKE_SECONDS=$2; shift 2 ;;
        --no-smoke) NO_SMOKE=1; shift ;;
        --skip-install) SKIP_INSTALL=1; shift ;;
        --check) CHECK_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; ARGS=("$@"); break ;;
        *) echo "slice: unknown option $1 (ecgbench run arguments go after --)" >&2; exit 2 ;;
    esac
done
for n in "$MINUTES" "$MARGIN" "$SMOKE_SECONDS"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "slice: --minutes, --margin and --smoke-seconds take whole numbers, not $n" >&2; exit 2; }
done
for a in "${ARGS[@]}"; do
    case $a in
        --time-limit*|--out|--out=*|--cache-dir*|--data-dir*|--from-bundle*)
            echo "slice: $a is set by slice.sh; leave it out of the run arguments" >&2; exit 2 ;;
    esac
done

# --- checksums: before anything is installed or run -------------------------------------------------------
verify_carry() {
    [ -f "$CARRY/SHA256SUMS" ] || { echo "slice: no $CARRY/SHA256SUMS; run scripts/gpu/prepare.sh first" >&2; return 1; }
    local bad extra
    bad=$(cd "$CARRY" && sha256sum -c SHA256SUMS 2>/dev/null | grep -v ': OK$' | cut -d: -f1 | tr '\n' ' ' || true)
    extra=$(cd "$CARRY" && comm -23 <(find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort) \
                                    <(sed 's/^[0-9a-f]*  //' SHA256SUMS | LC_ALL=C sort) | tr '\n' ' ')
    if [ -n "$bad$extra" ]; then
        echo "slice: $CARRY does not match its SHA256SUMS (${bad:+changed or missing: $bad}${extra:+not listed: $extra}); rerun scripts/gpu/prepare.sh" >&2
        return 1
    fi
}
if [ "$CHECK_ONLY" = 1 ]; then
    verify_carry && echo "slice: $CARRY matches its SHA256SUMS"
    exit
fi

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SUMMARY=$OUT_DIR/summary.txt
if [ -z "${SLICE_LOGGING:-}" ]; then
    # a .carry that does not match is refused here, in one line, before anything is installed or run
    if ! verify_carry 2> "$OUT_DIR/slice.log"; then
        cat "$OUT_DIR/slice.log" >&2
        printf 'checksums  1\nresult: slice refused: %s\n' "$(cat "$OUT_DIR/slice.log")" > "$SUMMARY"
        exit 2
    fi
    # everything below is also written to OUT/slice.log
    set +e
    SLICE_LOGGING=1 SLICE_START=$START bash "$0" "${ORIG_ARGS[@]}" 2>&1 | tee "$OUT_DIR/slice.log"
    exit "${PIPESTATUS[0]}"
fi

printf '%-10s %4s %7s  %s\n' step rc seconds note > "$SUMMARY"
T0=$START
step() {  # step NAME RC [NOTE]: one summary line, seconds since the previous step
    local now; now=$(date +%s)
    printf '%-10s %4s %7s  %s\n' "$1" "$2" "$((now - T0))" "${3:-}" >> "$SUMMARY"
    echo "slice: --- $1: exit $2 after $((now - T0)) s${3:+ ($3)}"
    T0=$now
}
fail() {  # fail STEP RC MESSAGE: the slice cannot go on
    step "$1" "$2" "$3"
    echo "result: slice failed at $1: $3" >> "$SUMMARY"
    echo "slice: $3" >&2
    exit 2
}
left() { echo $((MINUTES * 60 - ($(date +%s) - START))); }

if [ -z "$WORK" ]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/ecgbench-slice.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RUN=$WORK/run
CACHE=$WORK/cache
export ECGBENCH_PLUGINS=${ECGBENCH_PLUGINS:-ecgbench-atk}
export ECGBENCH_CACHE=$CACHE
export PYTHONUNBUFFERED=1
export PYTHONSAFEPATH=1           # `python -m ecgbench` must not import the checkout's ecgbench/ folder
export MPLBACKEND=Agg
export GIT_PYTHON_REFRESH=quiet   # foolbox imports GitPython, which wants a git program otherwise
echo "slice: $(date -u '+%F %T') UTC, $MINUTES min, out $OUT_DIR, work $WORK, plugins $ECGBENCH_PLUGINS"

step checksums 0  # checked before this log began

# --- install: wheels into WORK/site, first on PYTHONPATH ----------------------------------------------------
# Not a venv: on the H200 image python3 is itself a venv, whose torch a new venv would not see.
install_wheels() {
    local site=$WORK/site kind a b wheels=()
    mkdir -p "$site"
    # called as `install_wheels || ...`, where set -e is off: each failure returns by hand
    [ -f "$CARRY/wheels/MANIFEST" ] || { echo "slice: no $CARRY/wheels/MANIFEST" >&2; return 1; }
    while read -r kind a b; do
        case $kind in
            always) wheels+=("$CARRY/wheels/$a") ;;
            if-missing)  # only where the machine lacks it
                if "$PY" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$a" 2>/dev/null; then
                    echo "slice: $a is there already"
                else
                    wheels+=("$CARRY/wheels/$b")
                fi ;;
        esac
    done < "$CARRY/wheels/MANIFEST"
    if "$PY" -m pip --version >/dev/null 2>&1; then
        # this machine's pip settings (indexes, constraints) do not apply: everything comes from CARRY
        env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT -u PIP_REQUIRE_VIRTUALENV \
            PIP_CONFIG_FILE=/dev/null "$PY" -m pip install -q --no-index --no-deps --no-cache-dir \
            --disable-pip-version-check --no-warn-script-location --target "$site" "${wheels[@]}" || return $?
    else  # no pip there: a wheel is a zip, and these need nothing more than unpacking
        echo "slice: no pip beside $PY; unpacking the wheels"
        for a in "${wheels[@]}"; do "$PY" -m zipfile -e "$a" "$site" || return $?; done
    fi
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
}
if [ "$SKIP_INSTALL" = 1 ]; then
    step install - "skipped: the ecgbench beside $PY"
else
    rc=0; install_wheels || rc=$?
    [ "$rc" = 0 ] || fail install "$rc" "installing the carried wheels failed"
    "$PY" -m pip check 2>/dev/null | sed 's/^/slice: pip check: /' || true
    step install 0
fi
ECG=("$PY" -m ecgbench)
VERSIONS=$("$PY" - <<'EOF' 2>&1
import platform, sys
import wfdb, soundfile, imblearn, art, foolbox  # everything the plugins import
import ecgbench, ecgbench.cli.main
from importlib.metadata import version
import torch
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"available {cuda}{', ' + torch.cuda.get_device_name(0) if cuda else ''}")
print(f"ecgbench-atk {version('ecgbench-atk')} from {ecgbench.__path__[0]}; " + ", ".join(f"{d} {version(d)}" for d in (
    "wfdb", "soundfile", "imbalanced-learn", "adversarial-robustness-toolbox", "foolbox", "numpy", "scipy")))
EOF
) || fail imports 1 "the installed packages do not import: $(echo "$VERSIONS" | tail -1)"
echo "$VERSIONS"
step imports 0

# --- data ---------------------------------------------------------------------------------------------------
if [ -z "$DATA_DIR" ]; then
    DATA_DIR=$WORK/data
    mkdir -p "$DATA_DIR"
    shopt -s nullglob
    archives=("$CARRY"/data/*.tar.xz)
    shopt -u nullglob
    [ ${#archives[@]} -gt 0 ] || fail data 1 "no data in $CARRY/data (prepare.sh --data DB) and no --data-dir"
    for a in "${archives[@]}"; do
        rc=0; tar -xJf "$a" -C "$DATA_DIR" || rc=$?
        [ "$rc" = 0 ] || fail data "$rc" "could not unpack $a"
    done
    cat "$DATA_DIR"/*/TRANSPORT.txt 2>/dev/null | sed 's/^/slice: data: /' || true
    step data 0 "$(cd "$DATA_DIR" && echo *)"
else
    step data - "--data-dir $DATA_DIR"
fi
export ECGBENCH_DATA=$DATA_DIR

# --- unbundle: the state of earlier slices or of a CPU run ------------------------------------------------
if [ -f "$CARRY/bundle.tar.gz" ]; then
    rc=0; "${ECG[@]}" unbundle "$CARRY/bundle.tar.gz" --out "$RUN" --cache-dir "$CACHE" || rc=$?
    [ "$rc" = 0 ] || fail unbundle "$rc" "ecgbench unbundle $CARRY/bundle.tar.gz failed"
    step unbundle 0
else
    step unbundle - "no bundle carried: a fresh run"
fi

# --- smoke run: every code path the main run takes first, in a minute ---------------------------------------
SMOKE_RC=-
if [ "$NO_SMOKE" = 0 ]; then
    read -r -a smoke_opts <<< "$SMOKE"
    cmd=("${ECG[@]}" run "${ARGS[@]}" "${smoke_opts[@]}" --out "$WORK/smoke" --cache-dir "$CACHE"
         --data-dir "$DATA_DIR" --time-limit "${SMOKE_SECONDS}s" --no-progress)
    echo "slice: smoke: ${cmd[*]}"
    SMOKE_RC=0; timeout -k 10 "$((SMOKE_SECONDS + 30))" "${cmd[@]}" || SMOKE_RC=$?
    case $SMOKE_RC in
        0|3) step smoke "$SMOKE_RC" ;;
        *) step smoke "$SMOKE_RC" "SMOKE RUN FAILED: see slice.log; the main run goes on" ;;
    esac
fi

# --- main run: what is left of the slice, less the margin for bundling --------------------------------------
LIMIT=$(( $(left) - MARGIN ))
if [ "$LIMIT" -lt 20 ]; then
    MAIN_RC=3
    step main 3 "not started: ${LIMIT}s left after the margin"
else
    cmd=("${ECG[@]}" run "${ARGS[@]}" --out "$RUN" --cache-dir "$CACHE" --data-dir "$DATA_DIR"
         --time-limit "${LIMIT}s" --no-progress)
    echo "slice: main: ${cmd[*]}"
    # the run ends itself by the limit; timeout is the guard that keeps the margin for the bundle
    MAIN_RC=0; timeout -k 10 "$((LIMIT + MARGIN / 3))" "${cmd[@]}" || MAIN_RC=$?
    step main "$MAIN_RC" "--time-limit ${LIMIT}s"
fi
if [ -f "$RUN/leaderboard.md" ]; then head -40 "$RUN/leaderboard.md"; fi

# --- bundle: always, whatever the main run's exit code -----------------------------------------------------
BUNDLE=$OUT_DIR/bundle.tar.gz
rm -f "$BUNDLE" "$BUNDLE".?
rc=0; "${ECG[@]}" bundle "$RUN" -o "$BUNDLE" --cache-dir "$CACHE" --data-dir "$DATA_DIR" || rc=$?
if [ "$rc" = 0 ] && [ -f "$BUNDLE" ]; then
    size=$(stat -c %s "$BUNDLE")
    note="$size bytes"
    # the device tool returns files of at most 16 MiB: split a larger bundle (join: cat bundle.tar.gz.? > bundle.tar.gz)
    if [ -n "${OUT:-}" ] && [ "$OUT_DIR" = "$(cd "$OUT" 2>/dev/null && pwd)" ] && [ "$size" -gt $((16 << 20)) ]; then
        split -b 15M -d -a 1 "$BUNDLE" "$BUNDLE." && rm "$BUNDLE"
        note="$note, split into $(cd "$OUT_DIR" && echo bundle.tar.gz.?): cat bundle.tar.gz.? > bundle.tar.gz"
    fi
    step bundle 0 "$note"
    RC=$MAIN_RC
else
    step bundle "$rc" "NO BUNDLE"
    RC=4
fi

{
    echo "result: exit $RC (main run $MAIN_RC, smoke $SMOKE_RC; 3 = stopped by the time limit, rerun to continue)"
    echo "command: ecgbench run ${ARGS[*]}"
    echo "slice: $MINUTES min, $(( $(date +%s) - START )) s used"
    echo "$VERSIONS"
    if command -v nvidia-smi >/dev/null; then nvidia-smi -L 2>&1; else echo "nvidia-smi: not here"; fi
} >> "$SUMMARY"
cat "$SUMMARY"
exit "$RC"
