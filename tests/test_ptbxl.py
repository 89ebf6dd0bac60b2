"""PTB-XL plugin on the real 500-ECG subset in shared/data (ECGBENCH_DATA overrides the folder)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ecgbench.contracts import Beats, PluginError
from ecgbench.plugins.datasets._beats import detect_and_cut, resample
from ecgbench.plugins.datasets.ptbxl import PtbXl, ecg_table

DATA = Path(os.environ.get("ECGBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
ROOT = DATA / "ptbxl" if (DATA / "ptbxl").is_dir() else DATA

pytestmark = pytest.mark.skipif(not (ROOT / "ptbxl_database.csv").exists(), reason=f"no PTB-XL data in {DATA}")

# Four NORM-only and four MI ECGs, each from another patient; 9, 10, 8 and 63 are in the test folds 9-10.
SUBSET = ("1", "2", "9", "10", "8", "50", "63", "139")


@pytest.fixture(scope="module")
def subset_beats() -> Beats:
    return PtbXl(DATA, records=SUBSET).load()


@pytest.mark.parametrize(("ecg_id", "label", "why"), [
    ("1", 0, "NORM; LVOLT and SR are not diagnostic"),
    ("8", 1, "IMI -> MI"),
    ("50", 1, "LMI (MI) with IVCD (CD): MI wins"),
    ("236", -1, "NORM with IRBBB (CD) is not NORM only"),
    ("17", -1, "AFLT, ABQRS, AFIB: no diagnostic statement"),
    ("22", -1, "NDT -> STTC"),
    ("30", -1, "LVH -> HYP"),
])
def test_labels_checked_by_hand(ecg_id: str, label: int, why: str) -> None:
    assert ecg_table(ROOT).loc[ecg_id, "label"] == label, why


def test_label_counts_match_the_data_readme() -> None:
    table = ecg_table(ROOT)
    assert len(table) == 500
    assert (table["label"] == 0).sum() == 290  # "290 are NORM only"
    assert (table["label"] == 1).sum() == 73
    assert table.loc["8", "patient"] == "11275"


def test_beats_are_mitbih_shaped(subset_beats: Beats) -> None:
    x = subset_beats.x
    assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == PtbXl.window == 280
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert np.allclose(x.min(axis=1), 0) and np.allclose(x.max(axis=1), 1)
    assert subset_beats.y.dtype == np.int64
    counts = subset_beats.counts(len(PtbXl.classes))
    assert all(n >= 20 for n in counts), counts  # 4 ECGs of 10 s per class
    assert set(subset_beats.groups) == set(ecg_table(ROOT).loc[list(SUBSET), "patient"])


def test_each_beat_states_its_amplitude_in_microvolts(subset_beats: Beats) -> None:
    """PTB-XL's headers give mV: ECG 1's beats, cut from its lead II resampled to 360 Hz, span `scale` microvolts."""
    import wfdb
    from scipy.signal import resample_poly

    record = wfdb.rdrecord(str(ROOT / ecg_table(ROOT).loc["1", "filename_hr"]))
    lead = record.sig_name.index("II")
    assert record.units[lead] == "mV"
    _, peaks = detect_and_cut(record.p_signal[:, lead], record.fs, 280)
    signal = resample_poly(record.p_signal[:, lead], 18, 25)
    ranges = np.array([np.ptp(signal[r - 140:r + 140]) * 1000 for r in peaks])
    mine = subset_beats.scale[subset_beats.groups == ecg_table(ROOT).loc["1", "patient"]][:len(ranges)]
    np.testing.assert_allclose(mine, ranges, rtol=1e-5)
    assert np.isfinite(subset_beats.scale).all() and (subset_beats.scale > 0).all()


def test_patient_and_strat_fold_splits_keep_patients_apart(subset_beats: Beats) -> None:
    ds = PtbXl(DATA, records=SUBSET)
    for split in ("patient", "strat-fold"):
        train, test = ds.split(subset_beats, split, seed=0)
        assert len(train) and len(test)
        assert len(train) + len(test) == len(subset_beats)
        assert not set(subset_beats.groups[train]) & set(subset_beats.groups[test]), split
    _, test = ds.split(subset_beats, "strat-fold", seed=0)
    table = ecg_table(ROOT)
    assert set(subset_beats.groups[test]) == set(table.loc[["9", "10", "8", "63"], "patient"])


def test_random_split_is_stratified_80_20(subset_beats: Beats) -> None:
    train, test = PtbXl(DATA).split(subset_beats, "random", seed=0)
    assert abs(len(test) / len(subset_beats) - 0.2) < 0.01
    assert set(subset_beats.y[test]) == {0, 1}


def test_resampling_keeps_beat_duration() -> None:
    """RR intervals in samples shrink by 360/500, so a beat lasts as long as before (paper 3.1 window)."""
    import wfdb
    from wfdb.processing import xqrs_detect

    signal = wfdb.rdrecord(str(ROOT / "records500/00000/00001_hr"), channel_names=["II"]).p_signal[:, 0]
    rr_500 = np.diff(xqrs_detect(signal, 500, verbose=False))
    _, peaks_360 = detect_and_cut(signal, 500, 280, target_fs=360)
    rr_360 = np.diff(peaks_360)
    assert len(rr_360) >= 8
    assert abs(np.median(rr_360) - np.median(rr_500) * 360 / 500) <= 2
    assert len(resample(signal, 500, 360)) == len(signal) * 360 // 500


def test_unknown_records_and_splits_are_plugin_errors() -> None:
    with pytest.raises(PluginError, match="99999"):
        PtbXl(DATA, records=["1", "99999"]).table()
    with pytest.raises(PluginError, match="no split 'inter-patient'"):
        PtbXl(DATA).split(Beats(np.zeros((2, 280), np.float32), np.zeros(2, np.int64), np.array(["1", "2"])),
                          "inter-patient", 0)


def test_smoke_records_hold_both_classes() -> None:
    labels = ecg_table(ROOT).loc[list(PtbXl.smoke_records), "label"]
    assert set(labels) == {0, 1}


def test_settings_change_with_records() -> None:
    assert PtbXl(DATA).settings() != PtbXl(DATA, records=SUBSET).settings()
    assert PtbXl(DATA).settings()["detector"].startswith("xqrs")


def test_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    for call in (PtbXl.load, PtbXl.files):
        with pytest.raises(PluginError) as err:
            call(PtbXl(tmp_path / "nowhere"))
        assert "\n" not in str(err.value) and str(err.value).startswith(f"--data-dir {tmp_path / 'nowhere'}: no such folder (")


# -- bad data: each fault is one line naming the file and what is wrong ---------------------------
PAIR = ("1", "8")  # one NORM and one MI ECG


@pytest.fixture
def ptbxl_copy(tmp_path: Path) -> Path:
    """A PTB-XL folder with both tables and the files of ECGs 1 and 8 only, to damage."""
    root = tmp_path / "data" / "ptbxl"
    (root / "records500" / "00000").mkdir(parents=True)
    for name in ("ptbxl_database.csv", "scp_statements.csv", *(f"records500/00000/0000{e}_hr.{s}" for e in PAIR
                                                              for s in ("hea", "dat"))):
        shutil.copy(ROOT / name, root / name)
    return root


def load_error(root: Path) -> str:
    with pytest.raises(PluginError) as err:
        PtbXl(root.parent, records=PAIR).load()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_the_undamaged_copy_loads(ptbxl_copy: Path) -> None:
    assert PtbXl(ptbxl_copy.parent, records=PAIR).load().counts(2)[0] > 5


def test_files_lists_the_tables_and_the_selected_records() -> None:
    assert PtbXl(DATA, records=["8", "1", "17"]).files() == [  # 17 has no NORM or MI label: not read
        ROOT / "ptbxl_database.csv", ROOT / "scp_statements.csv",
        ROOT / "records500/00000/00001_hr.hea", ROOT / "records500/00000/00001_hr.dat",
        ROOT / "records500/00000/00008_hr.hea", ROOT / "records500/00000/00008_hr.dat"]
    assert len(PtbXl(DATA).files()) == 2 + 2 * 363  # the labelled ECGs of the 500


@pytest.mark.parametrize("suffix", ["hea", "dat"])
def test_ecg_listed_but_missing_a_file(ptbxl_copy: Path, suffix: str) -> None:
    missing = ptbxl_copy / f"records500/00000/00008_hr.{suffix}"
    missing.unlink()
    expected = f"ECG 8 listed in {ptbxl_copy / 'ptbxl_database.csv'} but {missing} is missing"
    assert load_error(ptbxl_copy) == expected
    with pytest.raises(PluginError, match=re.escape(expected)):
        PtbXl(ptbxl_copy.parent, records=PAIR).files()


def test_truncated_signal(ptbxl_copy: Path) -> None:
    dat = ptbxl_copy / "records500/00000/00001_hr.dat"
    dat.write_bytes(dat.read_bytes()[:24_000])  # 12 leads of format 16: 24 bytes a sample
    assert load_error(ptbxl_copy) == f"{dat}: truncated signal: header says 5000 samples of 12 channels, the file holds 1000"


def test_header_with_a_wrong_sample_count(ptbxl_copy: Path) -> None:
    hea = ptbxl_copy / "records500/00000/00001_hr.hea"
    hea.write_text(hea.read_text().replace("00001_hr 12 500 5000", "00001_hr 12 500 4000", 1))
    assert load_error(ptbxl_copy) == f"{hea}: header says 4000 samples of 12 channels but 00001_hr.dat holds 5000: wrong sample count or format"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no scp_codes"])
def test_database_table_unreadable(ptbxl_copy: Path, damage: str) -> None:
    csv = ptbxl_copy / "ptbxl_database.csv"
    text = csv.read_text()
    csv.write_bytes({"garbage": np.random.default_rng(0).bytes(3000), "truncated": text[:len(text) // 2].encode(),
                     "no scp_codes": text.replace("scp_codes", "codes", 1).encode()}[damage])
    assert load_error(ptbxl_copy) == (f"{csv}: table unreadable: expected PTB-XL's CSV with the columns ecg_id, scp_codes, "
                                      "patient_id, strat_fold, filename_hr")


@pytest.mark.parametrize("damage", ["empty", "no diagnostic_class"])
def test_statements_table_unreadable(ptbxl_copy: Path, damage: str) -> None:
    csv = ptbxl_copy / "scp_statements.csv"
    csv.write_text("" if damage == "empty" else csv.read_text().replace("diagnostic_class", "class", 1))
    assert load_error(ptbxl_copy) == (f"{csv}: table unreadable: expected PTB-XL's CSV with the columns diagnostic, "
                                      "diagnostic_class")
