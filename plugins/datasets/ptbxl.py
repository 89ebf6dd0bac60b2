"""PTB-XL 1.0.3 (Wagner et al. 2020): normal vs myocardial-infarction beats, a stand-in for ptbdb.

ECG-ATK-GAN paper 3.1 uses PTB Diagnostic (ptbdb) beats of two classes, normal and MI. PTB-XL comes
from the same institute and has the same two labels, so this plugin cuts the same beats from it.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ecgbench.contracts import Beats, Dataset, PluginError
from ecgbench.plugins.datasets._beats import DETECTOR, lead_beats
from ecgbench.plugins.datasets._records import find_records, require_files

__all__ = ["PtbXl", "ecg_table"]

LEAD = "II"
CLASSES = ("NORM", "MI")
DATABASE = "ptbxl_database.csv"
TRAIN_FOLDS = range(1, 9)  # PTB-XL's recommended split: folds 9 and 10 (the best-validated ECGs) for testing


def ecg_table(root: Path) -> Any:
    """`ptbxl_database.csv` indexed by ecg_id (a string), with `label`: 0 NORM, 1 MI, -1 dropped.

    The usual PTB-XL superclass rule: every SCP code with `diagnostic == 1` in `scp_statements.csv`
    is mapped to its `diagnostic_class`, whatever its likelihood. An ECG is MI if MI is among its
    superclasses, NORM if NORM is its only superclass; all others (STTC, CD or HYP without MI, NORM
    with another class, no diagnostic code) are dropped. `patient` is patient_id as a string.
    A table that cannot be read so is a one-line `PluginError` naming the file.
    """
    import pandas as pd

    def superclasses(path: Path) -> dict[str, str]:
        scp = pd.read_csv(path, index_col=0)
        return scp.loc[scp["diagnostic"] == 1, "diagnostic_class"].to_dict()

    superclass = read_table(root / "scp_statements.csv", superclasses, "diagnostic", "diagnostic_class")

    def label(codes: str) -> int:
        classes = {superclass[code] for code in ast.literal_eval(codes) if code in superclass}
        if "MI" in classes:
            return CLASSES.index("MI")
        return CLASSES.index("NORM") if classes == {"NORM"} else -1

    def read(path: Path) -> Any:
        db = pd.read_csv(path, index_col="ecg_id")
        db.index = db.index.astype(int).astype(str)
        db["label"] = db["scp_codes"].map(label)
        db["patient"] = db["patient_id"].astype(int).astype(str)
        db["strat_fold"] = db["strat_fold"].astype(int)
        if db.index.has_duplicates or not db["filename_hr"].map(lambda f: isinstance(f, str) and f != "").all():
            raise ValueError("duplicate ecg_id or empty filename_hr")
        return db

    return read_table(root / DATABASE, read, "ecg_id", "scp_codes", "patient_id", "strat_fold", "filename_hr")


def read_table(path: Path, read: Callable[[Path], Any], *columns: str) -> Any:
    """`read(path)`, with any fault of the file (missing, not CSV, a column missing or malformed) as one line."""
    try:
        return read(path)
    except Exception as exc:  # pandas, ast and int() each raise their own kinds on a damaged table
        raise PluginError(f"{path}: table unreadable: expected PTB-XL's CSV with the columns {', '.join(columns)}") from exc


class PtbXl(Dataset):
    """Lead II beats of the 500 Hz records, resampled to 360 Hz and cut as MIT-BIH's (paper 3.1).

    PTB-XL has no beat annotations: R peaks come from wfdb's `xqrs` detector (see `_beats`). All
    beats of an ECG take its label, and its patient as group. Splits: `random` (stratified 80/20,
    paper 3.1), `patient` (no patient on both sides) and `strat-fold` (PTB-XL's own 10 folds, which
    keep patients apart: folds 1-8 train, 9-10 test, about 80/20). No ECG is left out for noise or
    pacemaker flags. The 500-ECG subset in shared/data gives 3,059 NORM and 840 MI beats from 347 patients;
    in two of its 363 labelled ECGs (155, 419: lead II with a QRS smaller than the T wave) xqrs finds no beat.
    """

    name = "ptbxl"
    sampling_rate = 360
    window = 280  # paper 3.1
    classes = CLASSES
    splits = ("random", "patient", "strat-fold")
    smoke_records = ("1", "2", "3", "4", "9", "10", "8", "63", "131", "139", "161", "210")  # 6 NORM, 6 MI

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "lead": LEAD, "detector": DETECTOR, "sampling_rate": self.sampling_rate,
                "version": 1}

    def root(self) -> Path:
        return find_records(self.data_dir, "ptbxl", DATABASE)

    def table(self) -> Any:
        """The ECG table of the selected records (all by default)."""
        root = self.root()
        table = ecg_table(root)
        if self.records is not None:
            missing = sorted(set(self.records) - set(table.index), key=lambda r: (len(r), r))
            if missing:
                raise PluginError(f"ptbxl: ecg_id(s) {', '.join(missing)} not in {root / DATABASE}")
            table = table[table.index.isin(self.records)]
        return table

    def files(self) -> list[Path]:
        """The two tables and the header and 500 Hz signal of each selected NORM or MI ECG; no signal is read."""
        root = self.root()
        listing = root / DATABASE
        records = [require_files([root / f"{f}.hea", root / f"{f}.dat"], f"ECG {ecg_id}", listing)
                   for ecg_id, f in self.table().query("label >= 0")["filename_hr"].items()]
        return [listing, root / "scp_statements.csv", *(p for pair in records for p in pair)]

    def load(self) -> Beats:
        root = self.root()
        self.files()  # a missing file is named before anything is read
        xs, ys, groups, scales = [], [], [], []
        for _, ecg in self.table().query("label >= 0").iterrows():
            read = lead_beats(root / ecg["filename_hr"], LEAD, self.window, self.sampling_rate)
            if read is None:
                continue
            beats, scale = read
            xs.append(beats)
            scales.append(scale)
            ys.append(np.full(len(beats), ecg["label"], dtype=np.int64))
            groups.append(np.full(len(beats), ecg["patient"]))
        if not xs or not sum(map(len, xs)):
            raise PluginError(f"ptbxl: no NORM or MI beat with a lead {LEAD} in the selected ECGs of {root}")
        return Beats(np.concatenate(xs), np.concatenate(ys), np.concatenate(groups), scale=np.concatenate(scales))

    def split(self, beats: Beats, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """`strat-fold` looks up each beat's fold by patient: PTB-XL puts all of a patient's ECGs in one fold."""
        if name == "strat-fold":
            table = ecg_table(self.root())
            fold = dict(zip(table["patient"], table["strat_fold"]))
            unknown = sorted(set(beats.groups) - set(fold))
            if unknown:
                raise PluginError(f"ptbxl: patient(s) {', '.join(unknown[:5])} not in {self.root() / DATABASE}")
            train = np.isin([fold[g] for g in beats.groups], list(TRAIN_FOLDS))
            return np.flatnonzero(train), np.flatnonzero(~train)
        return super().split(beats, name, seed)
