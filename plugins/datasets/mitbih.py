"""MIT-BIH Arrhythmia Database (Moody & Mark 2001), four AAMI classes, as in ECG-ATK-GAN paper 3.1."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgbench.api import Beats, Dataset, PluginError
from ecgbench.data import cut_windows, minmax

# AAMI EC57 beat classes (paper 3.1). Q (/, f, Q) and non-beat annotations are dropped.
AAMI = {"N": "NLRej", "S": "AaJS", "V": "VE", "F": "F"}
SYMBOL_TO_CLASS = {s: i for i, symbols in enumerate(AAMI.values()) for s in symbols}

# de Chazal et al. 2004 inter-patient split; the paced records 102, 104, 107 and 217 are in neither.
DS1 = "101 106 108 109 112 114 115 116 118 119 122 124 201 203 205 207 208 209 215 220 223 230".split()
DS2 = "100 103 105 111 113 117 121 123 200 202 210 212 213 214 219 221 222 228 231 232 233 234".split()

LEAD = "MLII"


def find_records(data_dir: Path, folder: str, marker: str) -> Path:
    """The dataset folder under `data_dir` (or `data_dir` itself); a one-line error says how to get it."""
    for candidate in (data_dir / folder, data_dir):
        if (candidate / marker).exists():
            return candidate
    raise PluginError(
        f"no {folder} data in {data_dir} (looked for {data_dir / folder / marker}); "
        f"set --data-dir or ECGBENCH_DATA, or fetch it with `ecgbench data download {folder} --to {data_dir}`"
    )


def listed_records(root: Path, wanted: list[str] | None, dataset: str) -> list[str]:
    """The records named in `root/RECORDS`, narrowed to `wanted`; a name not listed is an error."""
    names = (root / "RECORDS").read_text().split()
    if wanted is None:
        return names
    missing = sorted(set(wanted) - set(names))
    if missing:
        raise PluginError(f"{dataset}: record(s) {', '.join(missing)} not in {root / 'RECORDS'}")
    return [n for n in names if n in wanted]


class MitBih(Dataset):
    """Beats of the MLII lead, 280 samples centred on the reference R peaks, min-max scaled to [0, 1].

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

    def record_names(self) -> list[str]:
        return listed_records(find_records(self.data_dir, "mitdb", "RECORDS"), self.records, self.name)

    def load(self) -> Beats:
        import wfdb

        root = find_records(self.data_dir, "mitdb", "RECORDS")
        xs, ys, groups = [], [], []
        for name in self.record_names():
            path = str(root / name)
            try:
                header = wfdb.rdheader(path)
                if LEAD not in header.sig_name:
                    continue
                signal = wfdb.rdrecord(path, channels=[header.sig_name.index(LEAD)]).p_signal[:, 0]
                ann = wfdb.rdann(path, "atr")
            except (OSError, ValueError) as exc:
                raise PluginError(f"mitbih: cannot read record {path}: {exc}") from exc
            labels = np.array([SYMBOL_TO_CLASS.get(s, -1) for s in ann.symbol])
            is_beat = labels >= 0
            windows, kept = cut_windows(signal, np.asarray(ann.sample)[is_beat], self.window)
            xs.append(windows)
            ys.append(labels[is_beat][kept])
            groups.append(np.full(kept.sum(), name))
        if not xs:
            raise PluginError(f"mitbih: no record with an {LEAD} lead in {root}")
        return Beats(minmax(np.concatenate(xs)), np.concatenate(ys).astype(np.int64), np.concatenate(groups))

    def split(self, beats: Beats, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        if name == "inter-patient":
            return np.flatnonzero(np.isin(beats.groups, DS1)), np.flatnonzero(np.isin(beats.groups, DS2))
        return super().split(beats, name, seed)
