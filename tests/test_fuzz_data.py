"""Property-based tests (hypothesis) of the record reader and the beat cutter on damaged data.

Whatever is done to a record's header, signal or annotation file, loading it either gives beats that
pass the harness's own checks (`check_beats`), or raises our `PluginError`: one line that starts with
the path of the file at fault. Nothing else escapes (no IndexError from wfdb, no broadcasting error
from numpy). The records are small copies of real ones (the first 60 s of MIT-BIH 100 and 114, the
latter with MLII in channel 1; one PTB-XL ECG) in a temporary folder.

The examples are drawn the same way on every run (`derandomize`), so the suite passes or fails
alike on every machine; `ECGBENCH_FUZZ=2000 pytest tests/test_fuzz_data.py` draws that many fresh
random examples per test instead, for a longer hunt.
"""
from __future__ import annotations

import os
import shutil
import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ecgbench.contracts import PluginError
from ecgbench.contracts.checks import check_beats
from ecgbench.data.beats import cut_windows, minmax
from ecgbench.plugins.datasets._beats import detect_and_cut, read_lead
from ecgbench.plugins.datasets.mitbih import MitBih

RECORDS = ("100", "114")
SECONDS = 60
N = 360 * SECONDS  # samples per signal of the small copies
EXAMPLES = int(os.environ.get("ECGBENCH_FUZZ", "0"))
FUZZ = settings(max_examples=EXAMPLES or 40, derandomize=not EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def small_copy(src: Path, dst: Path, name: str, n: int) -> None:
    """The first `n` samples of record `src/name` and its annotations, written by wfdb as a new record."""
    rec = wfdb.rdrecord(str(src / name), sampto=n, physical=False)
    wfdb.wrsamp(name, fs=rec.fs, units=rec.units, sig_name=rec.sig_name, d_signal=rec.d_signal, fmt=rec.fmt,
                adc_gain=rec.adc_gain, baseline=rec.baseline, comments=rec.comments, write_dir=str(dst))
    ann = wfdb.rdann(str(src / name), "atr", sampto=n - 1)
    wfdb.wrann(name, "atr", ann.sample, ann.symbol, subtype=ann.subtype, chan=ann.chan, num=ann.num,
               aux_note=ann.aux_note, write_dir=str(dst))


@pytest.fixture(scope="module")
def pristine(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose `mitdb/` holds the small copies and a RECORDS file listing them."""
    data = tmp_path_factory.mktemp("fuzz")
    root = data / "mitdb"
    root.mkdir()
    for name in RECORDS:
        small_copy(data_dir / "mitdb", root, name, N)
    (root / "RECORDS").write_text("".join(f"{name}\n" for name in RECORDS))
    return data


@contextmanager
def copy_of(pristine: Path) -> Iterator[Path]:
    """A fresh copy of the pristine data folder for one example to damage."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        shutil.copytree(pristine, data)
        yield data


def assert_beats_or_one_line(data: Path, name: str) -> None:
    """Loading record `name` gives valid beats, or a one-line PluginError naming one of its files."""
    root = data / "mitdb"
    try:
        beats = MitBih(data, records=[name]).load()
    except PluginError as exc:
        message = str(exc)
        assert "\n" not in message, message
        files = tuple(f"{root / name}.{ext}: " for ext in ("hea", "dat", "atr"))
        no_beat = (f"mitbih: no MLII lead in the selected records of {root} ({name})",
                   f"mitbih: no N, S, V or F beat in the selected records of {root}")
        assert message.startswith(files) or message in no_beat, message
        return
    check_beats(beats, "mitbih", MitBih.window, len(MitBih.classes), MitBih.value_range)
    assert set(beats.groups) == {name}


def test_pristine_copies_load(pristine: Path) -> None:
    """The undamaged copies give beats, so the properties below are not met by failing on everything."""
    beats = MitBih(pristine).load()
    check_beats(beats, "mitbih", 280, 4, (0.0, 1.0))
    assert set(beats.groups) == set(RECORDS) and len(beats) > 100


# -- headers -----------------------------------------------------------------------------------
ANY_TOKEN = st.one_of(
    st.sampled_from(["", "0", "-1", "abc", "nan", "inf", "-inf", "1e400", "1e-320", "9" * 25, "#", "/", "+", ":"]),
    st.integers(-2**40, 2**40).map(str),
    st.text(string.ascii_letters + string.digits + "._-+:/()#", max_size=10),
)
RECORD_TOKENS = {  # field of the record line -> edits worth trying
    1: st.sampled_from(["0", "1", "2", "3", "4"]),  # number of signals
    2: st.sampled_from(["360", "250", "0", "-360", "360.5", "360/2", "1e-9", "1e9"]),  # sampling frequency
    3: st.sampled_from([str(N), str(N - 1), str(N + 1), "0", str(2 * N), str(N // 2), str(N * 2 // 3), "-5"]),
}
SIGNAL_TOKENS = {  # field of a signal line -> edits worth trying
    0: st.sampled_from(["100.dat", "114.dat", "101.dat", "x.dat", "100.hea", "100.atr", "~"]),
    1: st.sampled_from(["8", "16", "24", "32", "61", "80", "160", "212", "310", "311", "508", "999",
                        "212x2", "212:3", "212+3", "16+100", "212+1"]),  # format (+ frame, skew, offset)
    2: st.sampled_from(["200", "0", "-200", "1e-320", "1e-300", "1e400", "200(0)/mV", "200(-1024)/mV", "nan",
                        "0.001", "1e300"]),  # gain
    3: st.sampled_from(["11", "0", "16", "64"]),  # resolution
    4: st.sampled_from(["1024", "0", "-99999"]),  # ADC zero
    5: st.integers(-2048, 2047).map(str),  # initial value
    6: st.integers(-70000, 70000).map(str),  # checksum
    8: st.sampled_from(["MLII", "V5", "V1", "ML II", "mlii", "", "MLII MLII"]),  # description (lead name)
}


@st.composite
def header_edit(draw: st.DrawFn, lines: list[str]) -> tuple[str, int, int, str]:
    """One edit of a header: replace a field, or delete, duplicate or cut a line."""
    kind = draw(st.sampled_from(["field", "field", "field", "delete", "duplicate", "cut"]))
    described = st.integers(0, min(2, len(lines) - 1))  # the record line and the two signal lines
    line = draw(st.one_of(described, described, described, st.integers(0, len(lines) - 1)))
    n_fields = len(lines[line].split())
    field = draw(st.integers(0, n_fields))  # one past the end appends a field
    tokens = (RECORD_TOKENS if line == 0 else SIGNAL_TOKENS).get(field)
    token = draw(st.one_of(tokens, tokens, tokens, ANY_TOKEN) if tokens is not None else ANY_TOKEN)
    if kind == "cut":
        return kind, line, draw(st.integers(0, len(lines[line]))), ""
    return kind, line, field, token


def apply_edit(lines: list[str], edit: tuple[str, int, int, str]) -> list[str]:
    kind, line, field, token = edit
    lines = list(lines)
    if kind == "delete":
        del lines[line]
    elif kind == "duplicate":
        lines.insert(line, lines[line])
    elif kind == "cut":
        lines[line] = lines[line][:field]
    else:
        fields = lines[line].split()
        fields[field:field + 1] = [token] if token else []
        lines[line] = " ".join(fields)
    return lines


@FUZZ
@given(name=st.sampled_from(RECORDS), data=st.data())
def test_mutated_headers_give_beats_or_one_line(pristine: Path, name: str, data: st.DataObject) -> None:
    with copy_of(pristine) as copy:
        hea = copy / "mitdb" / f"{name}.hea"
        lines = hea.read_text().splitlines()
        for _ in range(data.draw(st.integers(1, 3), label="edits")):
            if lines:
                lines = apply_edit(lines, data.draw(header_edit(lines), label="edit"))
        hea.write_text("\n".join(lines) + "\n")
        assert_beats_or_one_line(copy, name)


@FUZZ
@given(name=st.sampled_from(RECORDS), junk=st.binary(max_size=300), cut=st.integers(0, 400))
def test_garbage_or_truncated_headers_give_beats_or_one_line(pristine: Path, name: str, junk: bytes, cut: int) -> None:
    with copy_of(pristine) as copy:
        hea = copy / "mitdb" / f"{name}.hea"
        hea.write_bytes(hea.read_bytes()[:cut] + junk)
        assert_beats_or_one_line(copy, name)


# -- signals -----------------------------------------------------------------------------------
@FUZZ
@given(name=st.sampled_from(RECORDS), how=st.sampled_from(["truncate", "extend", "overwrite", "replace"]),
       at=st.floats(0, 1), junk=st.binary(min_size=1, max_size=5000))
def test_damaged_signals_give_beats_or_one_line(pristine: Path, name: str, how: str, at: float, junk: bytes) -> None:
    with copy_of(pristine) as copy:
        dat = copy / "mitdb" / f"{name}.dat"
        raw = dat.read_bytes()
        i = int(at * len(raw))
        damaged = {"truncate": raw[:i], "extend": raw + junk, "overwrite": raw[:i] + junk + raw[i + len(junk):],
                   "replace": np.random.default_rng(len(junk)).bytes(len(raw))}[how]
        dat.write_bytes(damaged)
        assert_beats_or_one_line(copy, name)


def test_garbage_signal_of_the_right_size_is_caught_by_the_checksum(pristine: Path) -> None:
    with copy_of(pristine) as copy:
        dat = copy / "mitdb" / "100.dat"
        dat.write_bytes(np.random.default_rng(0).bytes(dat.stat().st_size))
        with pytest.raises(PluginError, match=r"100\.dat: lead MLII (starts at|does not match its checksum)"):
            MitBih(copy).load()


# -- annotations -------------------------------------------------------------------------------
@FUZZ
@given(name=st.sampled_from(RECORDS), how=st.sampled_from(["truncate", "random", "terminated", "flip", "append"]),
       at=st.floats(0, 1), junk=st.binary(max_size=3000), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                                        min_size=1, max_size=20))
def test_damaged_annotations_give_beats_or_one_line(pristine: Path, name: str, how: str, at: float, junk: bytes,
                                                   flips: list[tuple[float, int]]) -> None:
    with copy_of(pristine) as copy:
        atr = copy / "mitdb" / f"{name}.atr"
        raw = bytearray(atr.read_bytes())
        if how == "truncate":
            raw = raw[:int(at * len(raw))]
        elif how == "random":
            raw = bytearray(junk)
        elif how == "terminated":  # random annotations that end as a whole annotation file does
            raw = bytearray(junk[:len(junk) // 2 * 2] + b"\0\0")
        elif how == "append":
            raw += junk
        else:
            for where, value in flips:
                raw[min(int(where * len(raw)), len(raw) - 1)] = value
        atr.write_bytes(bytes(raw))
        assert_beats_or_one_line(copy, name)


# -- the PTB-XL reader and the detector (fs, format and gain reach the resampler) -----------------
PTBXL = Path(os.environ.get("ECGBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "ptbxl"
PTBXL_RECORD = PTBXL / "records500" / "00000" / "00001_hr"


@pytest.mark.skipif(not PTBXL_RECORD.with_name("00001_hr.hea").exists(), reason=f"no PTB-XL data in {PTBXL}")
@FUZZ
@given(data=st.data())
def test_mutated_ptbxl_headers_give_beats_or_one_line(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PTBXL_RECORD.name
        for suffix in (".hea", ".dat"):
            shutil.copy(PTBXL_RECORD.with_name(PTBXL_RECORD.name + suffix), Path(tmp))
        hea = path.with_name(path.name + ".hea")
        lines = hea.read_text().splitlines()
        for _ in range(data.draw(st.integers(1, 3), label="edits")):
            if lines:
                lines = apply_edit(lines, data.draw(ptbxl_header_edit(lines), label="edit"))
        hea.write_text("\n".join(lines) + "\n")
        try:
            lead = read_lead(path, "II")
        except PluginError as exc:
            assert "\n" not in str(exc) and str(exc).startswith((f"{path}.hea: ", f"{path}.dat: ")), str(exc)
            return
        if lead is not None:
            beats, peaks = detect_and_cut(*lead, 280)
            assert beats.dtype == np.float32 and beats.shape == (len(peaks), 280)
            assert np.isfinite(beats).all() and beats.min(initial=0) >= 0 and beats.max(initial=1) <= 1


@st.composite
def ptbxl_header_edit(draw: st.DrawFn, lines: list[str]) -> tuple[str, int, int, str]:
    """PTB-XL's fields: the sampling frequency and sample count (record line), format and gain (signals)."""
    line = draw(st.integers(0, len(lines) - 1))
    if line == 0:
        field = draw(st.sampled_from([2, 3]))
        token = draw(st.sampled_from(["500", "1000", "250", "360", "499.999", "1", "0.5", "1e6", "4999", "5001",
                                      "2500", "0"]))
    else:
        field = draw(st.sampled_from([1, 2, 8]))
        token = draw({1: st.sampled_from(["16", "212", "8", "32", "80"]),
                      2: st.sampled_from(["1000.0(0)/mV", "1e-300(0)/mV", "-1000(0)/mV", "0(0)/mV", "1e400"]),
                      8: st.sampled_from(["II", "ii", "I", "V1"])}[field])
    return draw(st.sampled_from(["field", "field", "field", "delete"])), line, field, token


# -- the beat cutter on arbitrary signals and peaks ----------------------------------------------
@settings(max_examples=EXAMPLES or 200, derandomize=not EXAMPLES, deadline=None, database=None)
@given(signal=hnp.arrays(np.float64, st.integers(0, 3000), elements=st.floats(-1e6, 1e6)),
       peaks=hnp.arrays(np.int64, st.integers(0, 50), elements=st.integers(-4000, 7000)),
       window=st.integers(1, 600))
def test_cut_windows_stay_within_the_record(signal: np.ndarray, peaks: np.ndarray, window: int) -> None:
    windows, kept = cut_windows(signal, peaks, window)
    assert kept.shape == peaks.shape and windows.shape == (int(kept.sum()), window)
    starts = peaks - window // 2
    inside = (starts >= 0) & (starts + window <= len(signal))
    np.testing.assert_array_equal(kept, inside)  # exactly the windows that fit are kept
    for row, start in zip(windows, starts[kept]):
        np.testing.assert_array_equal(row, signal[start:start + window])


@settings(max_examples=EXAMPLES or 200, derandomize=not EXAMPLES, deadline=None, database=None)
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(0, 20), st.integers(1, 300)),
                    elements=st.floats(-1e300, 1e300, allow_subnormal=True)))
def test_minmax_scales_each_beat_into_the_unit_interval(x: np.ndarray) -> None:
    out = minmax(x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and ((out >= 0) & (out <= 1)).all()
    flat = x.min(axis=1, initial=np.inf) == x.max(axis=1, initial=-np.inf)
    assert not out[flat].any()  # a flat beat is all zeros
    varied = out[~flat]
    if len(varied):
        assert (varied.min(axis=1) == 0).all() and (varied.max(axis=1) == 1).all()


@settings(max_examples=EXAMPLES or 100, derandomize=not EXAMPLES, deadline=None, database=None)
@given(signal=hnp.arrays(np.float64, st.integers(0, 20_000), elements=st.floats(-1e6, 1e6)),
       peaks=hnp.arrays(np.int64, st.integers(0, 40), elements=st.integers(-1000, 21_000)))
def test_cut_then_minmax_gives_valid_beats(signal: np.ndarray, peaks: np.ndarray) -> None:
    windows, kept = cut_windows(signal, peaks, 280)
    beats = minmax(windows)
    assert beats.shape == (int(kept.sum()), 280) and beats.dtype == np.float32
    assert np.isfinite(beats).all() and ((beats >= 0) & (beats <= 1)).all()
