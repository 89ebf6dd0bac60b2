"""PTB Diagnostic ECG Database (Bousseljot et al. 1995, ptbdb 1.0.0): healthy vs MI beats, paper 3.1.

ECG-ATK-GAN paper 3.1 takes 10,000 normal and 10,000 myocardial-infarction beats from ptbdb and
splits them 80/20. The database has no beat annotations, so beats are cut around detected R peaks
exactly as for PTB-XL (`_beats`), to match the MIT-BIH beats.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ecgbench.contracts import Beats, Dataset, PluginError
from ecgbench.data.beats import cap_per_class
from ecgbench.plugins.datasets._beats import DETECTOR, lead_beats
from ecgbench.plugins.datasets._records import find_records, listed_records, read_header, record_files

__all__ = ["Ptb", "diagnosis"]

LEAD = "ii"
CLASSES = ("Normal", "MI")
REASONS = {"healthy control": 0, "myocardial infarction": 1}  # "Reason for admission" -> class index
REASON = re.compile(r"^\s*reason for admission:\s*(.*?)\s*$", re.IGNORECASE)
SEED = 0  # the draw of `beats_per_class`; fixed, so the cached beats are the same for every run


def diagnosis(comments: list[str]) -> int:
    """Class index from a ptbdb header's `# Reason for admission: ...` line; -1 for other diagnoses."""
    for line in comments:
        match = REASON.match(line)
        if match:
            return REASONS.get(match.group(1).lower(), -1)
    return -1


class Ptb(Dataset):
    """Lead ii beats of ptbdb's 1000 Hz records, resampled to 360 Hz and cut as MIT-BIH's (paper 3.1).

    A record is "Normal" if its header says `Reason for admission: Healthy control` and "MI" if it
    says `Myocardial infarction`; records with any other reason (cardiomyopathy, bundle branch block,
    n/a, ...) are dropped. All beats of a record take its label; the group is the patient folder
    (`patient001`), so the `patient` split keeps a patient's records together. The lead is found by
    name, ignoring case. At most `beats_per_class` beats per class are kept (paper 3.1: 10,000 each),
    drawn at random with a fixed seed; a class with fewer keeps them all.
    """

    name = "ptb"
    sampling_rate = 360
    window = 280  # paper 3.1
    classes = CLASSES
    beats_per_class: ClassVar[int | None] = 10_000  # paper 3.1
    # Two MI and two healthy-control patients, from published header listings (ptbdb is not here to check).
    smoke_records = ("patient001/s0010_re", "patient007/s0026lre", "patient104/s0306lre", "patient180/s0374lre")

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "lead": LEAD, "detector": DETECTOR, "sampling_rate": self.sampling_rate,
                "beats_per_class": self.beats_per_class, "seed": SEED, "version": 1}

    def root(self) -> Path:
        return find_records(self.data_dir, "ptbdb", "RECORDS")

    def record_names(self) -> list[str]:
        return listed_records(self.root(), self.records, self.name)

    def files(self) -> list[Path]:
        """RECORDS and each selected record's header and signal file; stats only, no reads.

        Every selected record's signal file is listed, also of records whose diagnosis is later
        dropped: which those are is only known by reading the headers.
        """
        root = self.root()
        listing = root / "RECORDS"
        return [listing, *(p for name in self.record_names() for p in record_files(root, name, listing))]

    def load(self) -> Beats:
        root = self.root()
        self.files()  # a missing file is named before anything is read
        xs, ys, groups, scales = [], [], [], []
        for name in self.record_names():
            path = root / name
            header = read_header(path)
            label = diagnosis(header.comments or [])
            read = lead_beats(path, LEAD, self.window, self.sampling_rate, header) if label >= 0 else None
            if read is None:
                continue
            beats, scale = read
            xs.append(beats)
            scales.append(scale)
            ys.append(np.full(len(beats), label, dtype=np.int64))
            groups.append(np.full(len(beats), name.split("/")[0]))
        if not xs or not sum(map(len, xs)):
            raise PluginError(f"ptb: no healthy-control or MI beat with a lead {LEAD} in the selected records of {root}")
        return cap_per_class(Beats(np.concatenate(xs), np.concatenate(ys), np.concatenate(groups), scale=np.concatenate(scales)),
                             self.beats_per_class, SEED)
