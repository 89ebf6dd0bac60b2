"""MIT-BIH restricted to de Chazal et al.'s DS1 records: a dataset plugin built by subclassing.

de Chazal, O'Dwyer & Reilly 2004, "Automatic classification of heartbeats using ECG morphology and
heartbeat interval features" (IEEE TBME 51(7)): DS1 is the 22-record training half of their
inter-patient split (paced records 102, 104, 107, 217 excluded). Everything else -- the MLII lead
picked by name, 280-sample windows on the reference R peaks, four AAMI classes, min-max scaling --
is ecgbench's `mitbih` dataset, inherited unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ecgbench.contracts import Beats, Dataset, PluginError
from ecgbench.plugins.datasets.mitbih import DS1, MitBih

__all__ = ["MitBihDS1"]


class MitBihDS1(MitBih):
    """The 22 DS1 records only, with the `random` and `patient` splits (DS1 alone has no inter-patient split).

    `records` may narrow the selection to some DS1 records; a record outside DS1 is an error.
    """

    name = "mitbih-ds1"
    splits = ("random", "patient")
    smoke_records = ("201", "208", "209", "223")  # four DS1 records that hold all four classes

    def __init__(self, data_dir: Path | str, records: Sequence[str] | None = None) -> None:
        outside = sorted(set(records or ()) - set(DS1))
        if outside:
            raise PluginError(f"mitbih-ds1: record(s) {', '.join(outside)} are not in DS1 ({' '.join(DS1)})")
        super().__init__(data_dir, records=list(records) if records is not None else list(DS1))

    def split(self, beats: Beats, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        return Dataset.split(self, beats, name, seed)  # skip MitBih's inter-patient split
