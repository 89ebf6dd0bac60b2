"""Beats from records without beat annotations (ptb, ptbxl): one lead, resampled, R peaks detected.

The beats must match MIT-BIH's (paper 3.1): 280 samples at 360 Hz centred on the R peak, min-max
scaled to [0, 1]. So each lead is resampled to 360 Hz first and the detector runs at 360 Hz, the
rate of MIT-BIH for which `xqrs` was tuned. This was measured on 50 PTB-XL ECGs: `xqrs` at 360 Hz
took ~10 ms per 10-s ECG, and found every beat that it found at 500 Hz. At 500 Hz it found no beat
at all in ECG 161. `gqrs` was as fast, but missed the first beat of most ECGs and marks the QRS
onset, not the R peak. Each detection is then moved to the R extremum of the lead within 50 ms, the
point where MIT-BIH's reference annotations lie. The lead is not filtered, as with MIT-BIH.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ecgbench.contracts import PluginError
from ecgbench.data.beats import amplitude_uv, cut_windows, minmax
from ecgbench.plugins.datasets._records import read_channel, read_header

if TYPE_CHECKING:
    import wfdb

__all__ = ["DETECTOR", "lead_index", "read_lead", "resample", "detect_r_peaks", "cut_lead", "detect_and_cut", "lead_beats"]

DETECTOR = "xqrs+correct_peaks(50ms)@360Hz"  # goes into each dataset's settings, so a change re-cuts the cache
SEARCH_S = 0.05  # R-peak search radius around a detection
SMOOTH_S = 0.15  # baseline subtracted before that search
# Rates a lead may have to be resampled from: below 100 Hz a QRS complex is a sample or two; above
# 10 kHz no ECG is recorded, and the resampling filter (10 taps per output sample of the larger
# rate) grows to millions of taps. A header outside the range is an error, not a minute of work.
RATE_RANGE = (100.0, 10_000.0)


def lead_index(sig_names: Sequence[str], lead: str) -> int | None:
    """Position of `lead` in a header's signal names, ignoring case (ptbdb writes `ii`, PTB-XL `II`)."""
    names = [n.strip().lower() for n in sig_names]
    return names.index(lead.lower()) if lead.lower() in names else None


def read_lead(path: Path, lead: str, header: wfdb.Record | None = None) -> tuple[np.ndarray, float] | None:
    """One lead of a WFDB record in physical units, with its rate; None if the record lacks the lead.

    Every fault in the record's files is a one-line `PluginError` naming the file (see `_records`).
    """
    header = header if header is not None else read_header(path)
    channel = lead_index([n or "" for n in header.sig_name], lead)
    if channel is None:
        return None
    if not RATE_RANGE[0] <= header.fs <= RATE_RANGE[1]:
        raise PluginError(f"{path}.hea: sampling frequency {header.fs:g} Hz is outside the {RATE_RANGE[0]:g}-"
                          f"{RATE_RANGE[1]:g} Hz that ecgbench resamples from")
    return read_channel(path, header, channel), float(header.fs)


def resample(signal: np.ndarray, fs: float, target_fs: int) -> np.ndarray:
    """Polyphase resampling by the exact ratio (500 -> 360 Hz is 18/25, 1000 -> 360 Hz is 9/25).

    A rate that is not a whole number is first rounded to the nearest fraction with a denominator of
    at most 10 (499.999 Hz is read as 500 Hz, 2 ppm off), so the polyphase filter stays short.
    """
    ratio = Fraction(target_fs) / Fraction(fs).limit_denominator(10)
    if ratio == 1:
        return np.asarray(signal, dtype=np.float64)
    from scipy.signal import resample_poly

    return resample_poly(signal, ratio.numerator, ratio.denominator)


def detect_r_peaks(signal: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample indices: wfdb's `xqrs` detections moved to the R extremum within 50 ms.

    `correct_peaks` picks one direction (up or down) per record, so an inverted lead keeps its
    beats aligned on the same wave. A flat or non-finite lead has no beats.
    """
    from wfdb.processing import correct_peaks, xqrs_detect

    if len(signal) < fs or not np.all(np.isfinite(signal)) or np.ptp(signal) == 0:
        return np.empty(0, dtype=np.int64)
    peaks = np.asarray(xqrs_detect(signal, fs, verbose=False), dtype=np.int64)
    if len(peaks) == 0:
        return peaks
    peaks = correct_peaks(signal, peaks, int(round(SEARCH_S * fs)), int(round(SMOOTH_S * fs)), peak_dir="compare")
    return np.unique(np.asarray(peaks, dtype=np.int64))


def cut_lead(signal: np.ndarray, fs: float, window: int, target_fs: int = 360) -> tuple[np.ndarray, np.ndarray]:
    """Windows of one lead in its physical units, resampled to `target_fs` and cut around detected R peaks,
    with their R peaks in samples at `target_fs`. A beat whose window would leave the record is dropped."""
    resampled = resample(signal, fs, target_fs)
    peaks = detect_r_peaks(resampled, target_fs)
    windows, kept = cut_windows(resampled, peaks, window)
    return windows, peaks[kept]


def detect_and_cut(signal: np.ndarray, fs: float, window: int, target_fs: int = 360) -> tuple[np.ndarray, np.ndarray]:
    """Beats of one lead as MIT-BIH's (paper 3.1): `cut_lead`'s windows, each scaled to [0, 1] (float32 [n, window])."""
    windows, peaks = cut_lead(signal, fs, window, target_fs)
    return minmax(windows), peaks


def lead_beats(path: Path, lead: str, window: int, target_fs: int,
               header: wfdb.Record | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The beats of one lead of a record scaled to [0, 1], and each beat's amplitude range in microvolts (the
    header's units, after resampling: the beat the model sees); None if the record lacks the lead."""
    header = header if header is not None else read_header(path)
    read = read_lead(path, lead, header)
    if read is None:
        return None
    windows, _ = cut_lead(*read, window, target_fs)
    units = header.units[lead_index([n or "" for n in header.sig_name], lead)] if header.units else None
    return minmax(windows), amplitude_uv(windows, units)

