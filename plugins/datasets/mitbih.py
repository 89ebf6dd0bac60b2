"""MIT-BIH Arrhythmia Database (Moody & Mark 2001), four AAMI classes, as in ECG-ATK-GAN paper 3.1."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgbench.contracts import Beats, Dataset, PluginError
from ecgbench.data.beats import amplitude_uv, cut_windows, minmax
from ecgbench.plugins.datasets._records import (
    check_rate, find_records, listed_records, read_annotations, read_channel, read_header, record_files,
)

__all__ = ["MitBih", "AAMI", "DS1", "DS2"]

# AAMI EC57 beat classes (paper 3.1). Q (/, f, Q) and non-beat annotations are dropped.
AAMI = {"N": "NLRej", "S": "AaJS", "V": "VE", "F": "F"}
SYMBOL_TO_CLASS = {s: i for i, symbols in enumerate(AAMI.values()) for s in symbols}

# de Chazal et al. 2004 inter-patient split; the paced records 102, 104, 107 and 217 are in neither.
DS1 = "101 106 108 109 112 114 115 116 118 119 122 124 201 203 205 207 208 209 215 220 223 230".split()
DS2 = "100 103 105 111 113 117 121 123 200 202 210 212 213 214 219 221 222 228 231 232 233 234".split()

LEAD = "MLII"
SUFFIXES = (".hea", ".dat", ".atr")  # header, signal, reference beat annotations


class MitBih(Dataset):
    """Beats of the MLII lead, 280 samples centred on the reference R peaks, min-max scaled to [0, 1],
    each with its amplitude range in microvolts (the header's units: mV) as `scale`.

    Choices where the paper is silent: the lead is picked by its name in each header, so record 114
    (MLII in channel 1) reads the right lead; records 102 and 104 have no MLII lead and are skipped
    (their beats are mostly paced, which the four-class task drops anyway). R peaks are the reference
    `.atr` annotation positions; no detector is run.
    """

    name = "mitbih"
    sampling_rate = 360
    window = 280  # paper 3.1
    classes = tuple(AAMI)
    splits = ("random", "inter-patient", "patient")
    smoke_records = ("100", "201", "208", "209", "213", "232")  # DS1 and DS2 records holding all four classes

    def settings(self) -> dict:
        return {**super().settings(), "lead": LEAD, "version": 1}

    def root(self) -> Path:
        return find_records(self.data_dir, "mitdb", "RECORDS")

    def record_names(self) -> list[str]:
        return listed_records(self.root(), self.records, self.name)

    def files(self) -> list[Path]:
        """RECORDS and each selected record's header, signal and reference annotations; stats only, no reads."""
        root = self.root()
        listing = root / "RECORDS"
        return [listing, *(p for name in self.record_names() for p in record_files(root, name, listing, SUFFIXES))]

    def load(self) -> Beats:
        """Beats of every selected record with an MLII lead.

        A beat whose window holds a sample marked invalid in the signal file (NaN) is dropped with the
        edge beats; no MIT-BIH record has one. Every fault in the files is a one-line `PluginError`.
        """
        root = self.root()
        self.files()  # a missing file is named before anything is read
        xs, ys, groups, scales = [], [], [], []
        names = self.record_names()
        for name in names:
            path = root / name
            header = read_header(path)
            if LEAD not in header.sig_name:
                continue
            check_rate(header, path, self.sampling_rate)
            channel = header.sig_name.index(LEAD)
            signal = read_channel(path, header, channel)
            samples, symbols = read_annotations(path, "atr", len(signal))
            labels = np.array([SYMBOL_TO_CLASS.get(s, -1) for s in symbols], dtype=np.int64)
            is_beat = labels >= 0
            windows, kept = cut_windows(signal, samples[is_beat], self.window)
            whole = np.isfinite(windows).all(axis=1)
            xs.append(windows[whole])
            scales.append(amplitude_uv(windows[whole], header.units[channel]))
            ys.append(labels[is_beat][kept][whole])
            groups.append(np.full(int(whole.sum()), name))
        if not xs:
            raise PluginError(f"mitbih: no {LEAD} lead in the selected records of {root} ({', '.join(names[:5])}"
                              f"{', ...' if len(names) > 5 else ''})")
        if not sum(map(len, xs)):
            raise PluginError(f"mitbih: no N, S, V or F beat in the selected records of {root}")
        return Beats(minmax(np.concatenate(xs)), np.concatenate(ys), np.concatenate(groups),
                     scale=np.concatenate(scales))

    def split(self, beats: Beats, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        if name == "inter-patient":
            return np.flatnonzero(np.isin(beats.groups, DS1)), np.flatnonzero(np.isin(beats.groups, DS2))
        return super().split(beats, name, seed)
