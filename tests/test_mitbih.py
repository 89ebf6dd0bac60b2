"""MIT-BIH beats on the real records: lead choice, windows, AAMI classes, counts, splits."""
from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgbench.api import PluginError
from ecgbench.data import load_beats, minmax
from ecgbench.plugins.datasets.mitbih import DS1, DS2, MitBih


def test_record_100_counts_match_its_annotations(data_dir, cache_dir):
    # 100.atr holds N 2239, A 33, V 1 and one rhythm mark '+'; the first beat (sample 77) and the
    # last (sample 649991) lie within 140 samples of the record's ends, so their windows are dropped.
    beats, _, _ = load_beats(MitBih(data_dir, records=["100"]), cache_dir)
    assert beats.counts(4) == [2237, 33, 1, 0]
    assert beats.x.shape == (2271, 280) and beats.x.dtype == np.float32
    assert beats.x.min() == 0.0 and beats.x.max() == 1.0
    assert set(beats.groups) == {"100"}


def test_beat_is_centred_on_the_annotated_r_peak(data_dir, cache_dir):
    beats, _, _ = load_beats(MitBih(data_dir, records=["100"]), cache_dir)
    ann = wfdb.rdann(str(data_dir / "mitdb" / "100"), "atr")
    signal = wfdb.rdrecord(str(data_dir / "mitdb" / "100"), channels=[0]).p_signal[:, 0]
    r = ann.sample[2]  # ann 0 is '+', ann 1 the dropped edge beat: ann 2 is the first kept beat
    np.testing.assert_allclose(beats.x[0], minmax(signal[None, r - 140:r + 140])[0], atol=1e-6)


def test_lead_is_chosen_by_name(data_dir, cache_dir):
    # Record 114 stores MLII in channel 1, not channel 0.
    beats, _, _ = load_beats(MitBih(data_dir, records=["114"]), cache_dir)
    ann = wfdb.rdann(str(data_dir / "mitdb" / "114"), "atr")
    mlii = wfdb.rdrecord(str(data_dir / "mitdb" / "114"), channels=[1]).p_signal[:, 0]
    first = next(s for s, sym in zip(ann.sample, ann.symbol) if sym in "NLRejAaJSVEF" and s >= 140)
    np.testing.assert_allclose(beats.x[0], minmax(mlii[None, first - 140:first + 140])[0], atol=1e-6)


def test_records_without_mlii_are_skipped(data_dir, cache_dir):
    beats, _, _ = load_beats(MitBih(data_dir, records=["102", "104", "100"]), cache_dir)
    assert set(beats.groups) == {"100"}


def test_all_records_give_the_aami_counts(data_dir, cache_dir):
    beats, _, _ = load_beats(MitBih(data_dir), cache_dir)
    n, s, v, f = beats.counts(4)
    # All 48 records' annotations hold N 90,631, S 2,781, V 7,236, F 803 (data README). Records 102
    # and 104 (no MLII) hold 262 N and 6 V beats; edge windows drop a few more.
    assert s == 2781 and f == 802 and 90_300 < n < 90_631 and 7_220 < v < 7_236
    assert len(set(beats.groups)) == 46


def test_inter_patient_split_keeps_records_apart(data_dir, cache_dir):
    ds = MitBih(data_dir)
    beats, _, _ = load_beats(ds, cache_dir)
    train, test = ds.split(beats, "inter-patient", seed=0)
    assert set(beats.groups[train]) == set(DS1) and set(beats.groups[test]) == set(DS2)
    assert not set(beats.groups[train]) & set(beats.groups[test])
    assert not {"102", "104", "107", "217"} & set(beats.groups[np.concatenate([train, test])])


def test_random_split_is_stratified_80_20(data_dir, cache_dir):
    ds = MitBih(data_dir, records=["208", "209"])
    beats, _, _ = load_beats(ds, cache_dir)
    train, test = ds.split(beats, "random", seed=0)
    assert abs(len(test) / len(beats) - 0.2) < 0.01 and not set(train) & set(test)
    for c in range(4):
        share = (beats.y[test] == c).sum() / max(1, (beats.y == c).sum())
        assert (beats.y == c).sum() == 0 or abs(share - 0.2) < 0.05


def test_missing_data_dir_is_one_clear_line(tmp_path):
    with pytest.raises(PluginError, match=str(tmp_path)) as err:
        MitBih(tmp_path).load()
    assert "\n" not in str(err.value) and "ecgbench data download mitdb" in str(err.value)


def test_unknown_record_names_the_record(data_dir):
    with pytest.raises(PluginError, match="999"):
        MitBih(data_dir, records=["999"]).load()
