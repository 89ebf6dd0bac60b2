"""PTB-XL 1.0.3 (Wagner et al. 2020): normal vs myocardial-infarction beats, a stand-in for ptbdb.

ECG-ATK-GAN paper 3.1 uses PTB Diagnostic (ptbdb) beats of two classes, normal and MI. PTB-XL comes
from the same institute and has the same two labels, so this plugin cuts the same beats from it.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np

from ecgbench.api import Beats, Dataset, PluginError
from ecgbench.plugins.datasets._beats import DETECTOR, detect_and_cut, read_lead
from ecgbench.plugins.datasets.mitbih import find_records

__all__ = ["PtbXl", "ecg_table"]

LEAD = "II"
CLASSES = ("NORM", "MI")
TRAIN_FOLDS = range(1, 9)  # PTB-XL's recommended split: folds 9 and 10 (the best-validated ECGs) for testing


def ecg_table(root: Path) -> Any:
    """`ptbxl_database.csv` indexed by ecg_id (a string), with `label`: 0 NORM, 1 MI, -1 dropped.

    The usual PTB-XL superclass rule: every SCP code with `diagnostic == 1` in `scp_statements.csv`
    is mapped to its `diagnostic_class`, whatever its likelihood. An ECG is MI if MI is among its
    superclasses, NORM if NORM is its only superclass; all others (STTC, CD or HYP without MI, NORM
    with another class, no diagnostic code) are dropped. `patient` is patient_id as a string.
    """
    import pandas as pd

    db = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    scp = pd.read_csv(root / "scp_statements.csv", index_col=0)
    superclass = scp.loc[scp["diagnostic"] == 1, "diagnostic_class"].to_dict()

    def label(codes: str) -> int:
        classes = {superclass[code] for code in ast.literal_eval(codes) if code in superclass}
        if "MI" in classes:
            return CLASSES.index("MI")
        return CLASSES.index("NORM") if classes == {"NORM"} else -1

    db.index = db.index.astype(str)
    db["label"] = db["scp_codes"].map(label)
    db["patient"] = db["patient_id"].astype(int).astype(str)
    return db


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
        return find_records(self.data_dir, "ptbxl", "ptbxl_database.csv")

    def table(self) -> Any:
        """The ECG table of the selected records (all by default)."""
        root = self.root()
        table = ecg_table(root)
        if self.records is not None:
            missing = sorted(set(self.records) - set(table.index), key=lambda r: (len(r), r))
            if missing:
                raise PluginError(f"ptbxl: ecg_id(s) {', '.join(missing)} not in {root / 'ptbxl_database.csv'}")
            table = table[table.index.isin(self.records)]
        return table

    def load(self) -> Beats:
        root = self.root()
        xs, ys, groups = [], [], []
        for _, ecg in self.table().query("label >= 0").iterrows():
            lead = read_lead(root / ecg["filename_hr"], LEAD, self.name)
            if lead is None:
                continue
            beats, _ = detect_and_cut(*lead, self.window, self.sampling_rate)
            xs.append(beats)
            ys.append(np.full(len(beats), ecg["label"], dtype=np.int64))
            groups.append(np.full(len(beats), ecg["patient"]))
        if not xs or not sum(map(len, xs)):
            raise PluginError(f"ptbxl: no NORM or MI beat with a lead {LEAD} in the selected ECGs of {root}")
        return Beats(np.concatenate(xs), np.concatenate(ys), np.concatenate(groups))

    def split(self, beats: Beats, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """`strat-fold` looks up each beat's fold by patient: PTB-XL puts all of a patient's ECGs in one fold."""
        if name == "strat-fold":
            table = ecg_table(self.root())
            fold = dict(zip(table["patient"], table["strat_fold"]))
            unknown = sorted(set(beats.groups) - set(fold))
            if unknown:
                raise PluginError(f"ptbxl: patient(s) {', '.join(unknown[:5])} not in {self.root() / 'ptbxl_database.csv'}")
            train = np.isin([fold[g] for g in beats.groups], list(TRAIN_FOLDS))
            return np.flatnonzero(train), np.flatnonzero(~train)
        return super().split(beats, name, seed)
