"""Reading WFDB records so that every fault in the data is one line naming the file and what is wrong.

wfdb reads a truncated or padded signal without complaint (numpy then fails to broadcast it), parses
random annotation bytes into an IndexError, and raises whatever its parsers hit on a damaged header.
So every raw file a dataset reads goes through here: the data folder and each listed file must
exist; a header must describe its signals consistently; the signal file must hold exactly the
samples the header announces and match the header's initial values and checksums; annotations must
be a whole WFDB annotation file, in time order, within the signal. Whatever wfdb raises past those
checks is translated at this boundary (the original stays chained for `--debug`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ecgbench.contracts import PluginError

if TYPE_CHECKING:
    import wfdb  # imported where used: it is slow to import

__all__ = [
    "find_records", "listed_records", "require_files", "record_files", "read_header", "check_rate",
    "read_channel", "read_annotations",
]

# Bytes per sample of the WFDB signal formats (PhysioNet's signal(5) manual page). The FLAC formats
# 508/516/524 are left out: their size says nothing about their sample count, so they cannot be checked.
BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2, "212": 1.5, "310": 4 / 3,
                    "311": 4 / 3}
PADDED = {"310", "311"}  # may end in a partly filled 4-byte group: up to 2 samples more than announced
# Largest physical value accepted: far beyond any ECG in any unit, small enough that the squares the
# detectors and the scaling compute stay finite.
MAX_ABS = 1e100
EOF_MARKER = b"\x00\x00"  # the last two bytes of every WFDB annotation file


def find_records(data_dir: Path, folder: str, marker: str) -> Path:
    """The dataset folder under `data_dir` (or `data_dir` itself); a one-line error says how to get it."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise PluginError(
            f"--data-dir {data_dir}: no such folder (set --data-dir or ECGBENCH_DATA to the folder holding "
            f"{folder}/, or fetch it with `ecgbench data download {folder} --to {data_dir}`)"
        )
    for candidate in (data_dir / folder, data_dir):
        if (candidate / marker).is_file():
            return candidate
    raise PluginError(
        f"no {folder} data in {data_dir} (looked for {data_dir / folder / marker}); "
        f"set --data-dir or ECGBENCH_DATA, or fetch it with `ecgbench data download {folder} --to {data_dir}`"
    )


def listed_records(root: Path, wanted: Sequence[str] | None, dataset: str) -> list[str]:
    """The records named in `root/RECORDS`, narrowed to `wanted`; a name not listed is an error."""
    listing = root / "RECORDS"
    try:
        names = listing.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise PluginError(f"{listing}: unreadable: not a text list of record names") from exc
    if not names:
        raise PluginError(f"{listing} lists no records")
    if wanted is None:
        return names
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise PluginError(f"{dataset}: record(s) {', '.join(missing)} not in {listing}")
    return [n for n in names if n in wanted]


def require_files(paths: Iterable[Path], what: str, listing: Path) -> list[Path]:
    """`paths` if every one is a file; else the one-line error naming `what` (`record 105`), its listing and the file."""
    paths = list(paths)
    for path in paths:
        if not path.is_file():
            raise PluginError(f"{what} listed in {listing} but {path} is missing")
    return paths


def record_files(root: Path, name: str, listing: Path, suffixes: Sequence[str] = (".hea", ".dat")) -> list[Path]:
    """The files of record `name` (`root/name.hea`, ...), each checked to exist; no content is read."""
    return require_files([_with_suffix(root / name, s) for s in suffixes], f"record {name}", listing)


def read_header(path: Path) -> wfdb.Record:
    """The header of record `path` (no suffix), checked to describe its signals consistently."""
    import wfdb

    hea = _with_suffix(path, ".hea")
    try:
        header = wfdb.rdheader(str(path))
    except Exception as exc:  # wfdb's parsers raise anything from ValueError to IndexError
        raise PluginError(f"{hea}: header unreadable: not a WFDB header") from exc
    if isinstance(header, wfdb.MultiRecord):
        raise PluginError(f"{hea}: header unreadable: a multi-segment record, which ecgbench does not read")
    if header.record_name != path.name:
        raise PluginError(f"{hea}: header names record {header.record_name!r}, expected {path.name!r}")
    described = len(header.file_name or [])
    if header.n_sig != described:
        raise PluginError(f"{hea}: header unreadable: it declares {header.n_sig} signals but describes {described}")
    if described == 0:
        raise PluginError(f"{hea}: header describes no signal")
    if not (isinstance(header.fs, (int, float)) and math.isfinite(header.fs) and header.fs > 0):
        raise PluginError(f"{hea}: sampling frequency {header.fs} is not a positive number")
    return header


def check_rate(header: wfdb.Record, path: Path, fs: float) -> None:
    """A database recorded at one rate (MIT-BIH: 360 Hz) rejects a header that says another."""
    if header.fs != fs:
        raise PluginError(f"{_with_suffix(path, '.hea')}: sampling frequency {header.fs:g} Hz, expected {fs:g} Hz")


def read_channel(path: Path, header: wfdb.Record, channel: int) -> np.ndarray:
    """One signal of record `path` in physical units (float64; NaN where a sample is marked invalid).

    Before reading: the signal must lie in `<record>.dat` (the file a dataset's `files()` lists), in a
    format whose size can be checked, and that file must hold exactly the samples the header says.
    After: its first sample and checksum must match the header's, where the header gives them.
    """
    import wfdb

    hea, dat = _with_suffix(path, ".hea"), _with_suffix(path, ".dat")
    lead = header.sig_name[channel] if header.sig_name and header.sig_name[channel] else f"#{channel}"
    if header.file_name[channel] != dat.name:
        raise PluginError(f"{hea}: lead {lead} is stored in {header.file_name[channel]!r}, expected {dat.name!r}")
    _check_size(header, channel, hea, dat)
    gain = header.adc_gain[channel]
    if not (math.isfinite(gain) and gain != 0):
        raise PluginError(f"{hea}: gain {gain} of lead {lead} is not a finite, non-zero number")
    try:
        record = wfdb.rdrecord(str(path), channels=[channel], physical=False)
        digital = np.asarray(record.d_signal[:, 0], dtype=np.int64)
    except Exception as exc:  # past the size check, wfdb may still trip on what the bytes hold
        raise PluginError(f"{dat}: signal unreadable (format {header.fmt[channel]})") from exc
    if len(digital) != header.sig_len:
        raise PluginError(f"{dat}: truncated signal: header says {header.sig_len} samples, {len(digital)} could be read")
    first, checksum = header.init_value[channel], header.checksum[channel]
    if first is not None and len(digital) and digital[0] != first:
        raise PluginError(f"{dat}: lead {lead} starts at {digital[0]}, {hea.name} says {first} (damaged file or wrong format)")
    if checksum is not None and (int(digital.sum()) - checksum) % 65536:
        raise PluginError(f"{dat}: lead {lead} does not match its checksum in {hea.name} (damaged file or wrong format)")
    with np.errstate(over="ignore", invalid="ignore"):  # an absurd gain is said in one line, not as warnings
        physical = np.asarray(record.dac(), dtype=np.float64)[:, 0]
        if np.nanmax(np.abs(physical), initial=0.0) > MAX_ABS:
            raise PluginError(f"{hea}: gain {gain} of lead {lead} gives values too large to compute with")
    return physical


def read_annotations(path: Path, extension: str, n_samples: int) -> tuple[np.ndarray, list[str]]:
    """Sample positions (int64) and symbols of `<record>.<extension>`, checked against a signal of `n_samples`."""
    import wfdb

    ann_path = _with_suffix(path, f".{extension}")
    unreadable = f"{ann_path}: annotation file unreadable"
    try:
        raw = ann_path.read_bytes()
    except OSError as exc:
        raise PluginError(f"{unreadable}: {exc.strerror or 'cannot open it'}") from exc
    if len(raw) % 2 or not raw.endswith(EOF_MARKER):
        raise PluginError(f"{unreadable}: truncated (it does not end with the end-of-file marker)")
    try:
        ann = wfdb.rdann(str(path), extension)
        samples = np.asarray(ann.sample, dtype=np.int64)
        symbols = list(ann.symbol)
    except Exception as exc:  # wfdb's decoder fails with IndexError, ValueError, ... on damaged bytes
        raise PluginError(f"{unreadable}: not a WFDB annotation file") from exc
    if len(symbols) != len(samples):
        raise PluginError(f"{unreadable}: {len(samples)} annotation times but {len(symbols)} symbols")
    if len(samples):
        back = np.flatnonzero(np.diff(samples) < 0)
        if len(back):
            i = int(back[0]) + 1
            raise PluginError(f"{unreadable}: annotation {i} at sample {samples[i]} comes before the one at {samples[i - 1]}")
        if samples[0] < 0:
            raise PluginError(f"{unreadable}: annotation at sample {samples[0]}, before the signal starts")
        if samples[-1] >= n_samples:
            raise PluginError(f"{ann_path}: annotation at sample {samples[-1]} lies beyond the signal's {n_samples} samples")
    return samples, symbols


def _check_size(header: wfdb.Record, channel: int, hea: Path, dat: Path) -> None:
    """The signal file holds the header's sample count of every signal stored in it, no more, no less."""
    in_file = [c for c, name in enumerate(header.file_name) if name == header.file_name[channel]]
    for c in in_file:
        lead = header.sig_name[c] if header.sig_name and header.sig_name[c] else f"#{c}"
        if header.fmt[c] not in BYTES_PER_SAMPLE:
            raise PluginError(f"{hea}: signal format {header.fmt[c]!r} of lead {lead} is not one ecgbench reads "
                              f"({', '.join(BYTES_PER_SAMPLE)})")
        if (header.samps_per_frame[c] or 1) != 1:
            raise PluginError(f"{hea}: lead {lead} has {header.samps_per_frame[c]} samples per frame; ecgbench reads 1")
        if header.skew and header.skew[c]:
            raise PluginError(f"{hea}: lead {lead} is skewed by {header.skew[c]} samples; ecgbench reads unskewed signals")
    offsets = {header.byte_offset[c] or 0 for c in in_file}
    if len(offsets) != 1:
        raise PluginError(f"{hea}: the signals stored in {dat.name} give different byte offsets")
    try:
        size = dat.stat().st_size
    except OSError as exc:
        raise PluginError(f"{dat}: missing (its header {hea.name} names it)") from exc
    frame = sum(BYTES_PER_SAMPLE[header.fmt[c]] for c in in_file)
    held = math.floor(max(size - offsets.pop(), 0) / frame + 1e-9)
    expected = header.sig_len
    if expected is None:  # the header may leave the count out; then the file says it
        header.sig_len = held
        return
    if held < expected:
        raise PluginError(f"{dat}: truncated signal: header says {expected} samples of {len(in_file)} channels, "
                          f"the file holds {held}")
    if held > expected + (2 if PADDED & {header.fmt[c] for c in in_file} else 0):
        raise PluginError(f"{hea}: header says {expected} samples of {len(in_file)} channels but {dat.name} holds "
                          f"{held}: wrong sample count or format")


def _with_suffix(path: Path, suffix: str) -> Path:
    """`path` with `suffix` appended (record names may hold dots or look like suffixes)."""
    return path.with_name(path.name + suffix)
