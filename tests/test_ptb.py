"""PTB Diagnostic plugin on small synthetic records written in ptbdb's layout (ptbdb is not in shared/data).

Each record has ptbdb's 15 leads at 1000 Hz and its header comments. Lead ii holds ECG-like beats
at known R-peak times; every other lead holds beats at another rate, so reading the wrong lead
gives the wrong beat count.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ecgbench.contracts import PluginError
from ecgbench.plugins.datasets._beats import detect_and_cut
from ecgbench.plugins.datasets.ptb import Ptb, diagnosis

FS = 1000
SECONDS = 10
LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6", "vx", "vy", "vz"]
R_TIMES = np.arange(0.6, 9.5, 0.8)  # 12 beats at 75 bpm; every 280-sample window fits at 360 Hz
OTHER_TIMES = np.arange(0.5, 9.6, 0.5)  # 19 beats at 120 bpm on the other leads

# record -> (reason for admission, lead order or None for ptbdb's, upper-case names)
RECORDS = {
    "patient001/s0010_re": ("Myocardial infarction", None, False),
    "patient001/s0014lre": ("Myocardial infarction", "shuffled", False),
    "patient104/s0306lre": ("Healthy control", None, False),
    "patient105/s0303lre": ("Healthy control", "shuffled", True),
    "patient106/s0030_re": ("Cardiomyopathy", None, False),
    "patient107/s0031_re": ("n/a", None, False),
}


def ecg(r_times: np.ndarray, amplitude: float = 1.2, seed: int = 0) -> np.ndarray:
    """An ECG-like lead in mV: P, Q, R, S and T waves as Gaussian bumps around each R time, plus noise."""
    t = np.arange(SECONDS * FS) / FS
    waves = [(-0.16, 0.025, 0.15), (-0.03, 0.008, -0.1), (0.0, 0.010, amplitude), (0.03, 0.008, -0.25),
             (0.28, 0.05, 0.3)]
    signal = sum(a * np.exp(-0.5 * ((t[:, None] - (r_times + dt)) / w) ** 2).sum(axis=1) for dt, w, a in waves)
    return signal + np.random.default_rng(seed).normal(0, 0.01, len(t))


def write_record(root: Path, name: str, reason: str, order: str | None, upper: bool) -> None:
    import wfdb

    leads = list(LEADS)
    if order == "shuffled":
        np.random.default_rng(len(name)).shuffle(leads)
        assert leads.index("ii") != 1
    signals = np.stack([ecg(R_TIMES) if lead == "ii" else ecg(OTHER_TIMES, 0.8, seed=i)
                        for i, lead in enumerate(leads)], axis=1)
    folder, record = name.split("/")
    (root / folder).mkdir(parents=True, exist_ok=True)
    comments = ["age: 81", "sex: female", "ECG date: 01/10/1990", "Diagnose:", f"Reason for admission: {reason}",
                "Acute infarction (localization): infero-latera"]
    wfdb.wrsamp(record, fs=FS, units=["mV"] * 15, sig_name=[n.upper() if upper else n for n in leads],
                p_signal=signals, fmt=["16"] * 15, comments=comments, write_dir=str(root / folder))


@pytest.fixture(scope="module")
def ptb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding `ptbdb/` with RECORDS and the records above."""
    data = tmp_path_factory.mktemp("data")
    root = data / "ptbdb"
    for name, spec in RECORDS.items():
        write_record(root, name, *spec)
    (root / "RECORDS").write_text("".join(f"{name}\n" for name in RECORDS))
    return data


def test_diagnosis_reads_reason_for_admission() -> None:
    assert diagnosis(["age: 81", "sex: female", "Reason for admission: Myocardial infarction"]) == 1
    assert diagnosis(["Reason for admission: Healthy control"]) == 0
    assert diagnosis(["reason for admission:  healthy control "]) == 0
    assert diagnosis(["Reason for admission: Heart failure (NYHA 2)"]) == -1
    assert diagnosis(["Reason for admission: n/a"]) == -1
    assert diagnosis([]) == -1


def test_labels_groups_and_beat_counts(ptb_dir: Path) -> None:
    beats = Ptb(ptb_dir).load()
    assert beats.x.dtype == np.float32 and beats.x.shape[1] == 280
    assert beats.x.min() >= 0 and beats.x.max() <= 1
    assert set(beats.groups) == {"patient001", "patient104", "patient105"}  # other diagnoses dropped
    assert set(beats.y[beats.groups == "patient001"]) == {1}
    assert set(beats.y[np.isin(beats.groups, ["patient104", "patient105"])]) == {0}
    per_record = len(R_TIMES)
    for patient, records in (("patient001", 2), ("patient104", 1), ("patient105", 1)):
        n = int((beats.groups == patient).sum())
        assert abs(n - records * per_record) <= records, (patient, n)  # shuffled leads: ii still read by name


def test_lead_is_found_by_name_when_channels_are_shuffled(ptb_dir: Path) -> None:
    for name in ("patient001/s0014lre", "patient105/s0303lre"):
        beats = Ptb(ptb_dir, records=[name]).load()
        assert abs(len(beats) - len(R_TIMES)) <= 1, name


def test_detected_peaks_are_the_known_r_peaks_at_360_hz() -> None:
    beats, peaks = detect_and_cut(ecg(R_TIMES), FS, 280, target_fs=360)
    assert np.abs(peaks - np.round(R_TIMES * 360)).max() <= 2
    assert np.all(np.abs(beats.argmax(axis=1) - 140) <= 2)  # the R peak is the centre of the window


def test_beats_per_class_caps_each_class_reproducibly(ptb_dir: Path) -> None:
    class Small(Ptb):
        beats_per_class = 5

    first, second = Small(ptb_dir).load(), Small(ptb_dir).load()
    assert first.counts(2) == [5, 5]
    assert np.array_equal(first.x, second.x)
    assert Small(ptb_dir).settings()["beats_per_class"] == 5 != Ptb(ptb_dir).settings()["beats_per_class"]
    assert Ptb.beats_per_class == 10_000  # paper 3.1


def test_patient_split_keeps_patients_apart(ptb_dir: Path) -> None:
    ds = Ptb(ptb_dir)
    beats = ds.load()
    train, test = ds.split(beats, "patient", seed=1)
    assert len(train) and len(test)
    assert not set(beats.groups[train]) & set(beats.groups[test])


def test_records_are_selected_and_checked(ptb_dir: Path) -> None:
    assert set(Ptb(ptb_dir, records=["patient104/s0306lre"]).load().groups) == {"patient104"}
    with pytest.raises(PluginError, match="patient999/s9999_re"):
        Ptb(ptb_dir, records=["patient999/s9999_re"]).load()
    with pytest.raises(PluginError, match="no healthy-control or MI beat"):
        Ptb(ptb_dir, records=["patient106/s0030_re"]).load()


def test_missing_folder_is_one_line_error_naming_the_path(tmp_path: Path) -> None:
    for call in (Ptb.load, Ptb.files):
        with pytest.raises(PluginError) as err:
            call(Ptb(tmp_path / "nowhere"))
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"--data-dir {tmp_path / 'nowhere'}: no such folder (")


def test_data_folder_without_ptbdb_names_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(PluginError) as err:
        Ptb(tmp_path).load()
    assert str(err.value).startswith(f"no ptbdb data in {tmp_path} (looked for {tmp_path / 'ptbdb' / 'RECORDS'}); ")


# -- bad data: each fault is one line naming the file and what is wrong ---------------------------
MI = "patient001/s0010_re"


@pytest.fixture
def ptb_copy(ptb_dir: Path, tmp_path: Path) -> Path:
    """A copy of the synthetic ptbdb folder, to damage."""
    shutil.copytree(ptb_dir, tmp_path / "data")
    return tmp_path / "data" / "ptbdb"


def load_error(root: Path) -> str:
    with pytest.raises(PluginError) as err:
        Ptb(root.parent, records=[MI]).load()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_files_lists_records_headers_and_signals(ptb_dir: Path) -> None:
    root = ptb_dir / "ptbdb"
    assert Ptb(ptb_dir, records=["patient104/s0306lre", MI]).files() == [
        root / "RECORDS", root / f"{MI}.hea", root / f"{MI}.dat",
        root / "patient104/s0306lre.hea", root / "patient104/s0306lre.dat"]
    assert len(Ptb(ptb_dir).files()) == 1 + 2 * len(RECORDS)


@pytest.mark.parametrize("suffix", [".hea", ".dat"])
def test_record_listed_but_missing_a_file(ptb_copy: Path, suffix: str) -> None:
    (ptb_copy / f"{MI}{suffix}").unlink()
    expected = f"record {MI} listed in {ptb_copy / 'RECORDS'} but {ptb_copy / MI}{suffix} is missing"
    assert load_error(ptb_copy) == expected
    with pytest.raises(PluginError, match=re.escape(expected)):
        Ptb(ptb_copy.parent).files()


def test_truncated_signal(ptb_copy: Path) -> None:
    dat = ptb_copy / f"{MI}.dat"
    dat.write_bytes(dat.read_bytes()[:150_000])  # 15 leads of format 16: 30 bytes a sample
    assert load_error(ptb_copy) == f"{dat}: truncated signal: header says 10000 samples of 15 channels, the file holds 5000"


def test_header_of_garbage_bytes(ptb_copy: Path) -> None:
    (ptb_copy / f"{MI}.hea").write_bytes(np.random.default_rng(1).bytes(500))
    assert load_error(ptb_copy) == f"{ptb_copy / MI}.hea: header unreadable: not a WFDB header"


def test_header_with_a_sampling_rate_that_cannot_be_an_ecg(ptb_copy: Path) -> None:
    hea = ptb_copy / f"{MI}.hea"
    hea.write_text(hea.read_text().replace("s0010_re 15 1000 10000", "s0010_re 15 1 10000", 1))
    assert load_error(ptb_copy) == f"{ptb_copy / MI}.hea: sampling frequency 1 Hz is outside the 100-10000 Hz that ecgbench resamples from"


def test_signal_of_garbage_of_the_right_size(ptb_copy: Path) -> None:
    dat = ptb_copy / f"{MI}.dat"
    dat.write_bytes(np.random.default_rng(2).bytes(dat.stat().st_size))
    assert re.fullmatch(rf"{re.escape(str(dat))}: lead ii (starts at -?\d+, s0010_re.hea says -?\d+|does not match "
                        r"its checksum in s0010_re.hea) \(damaged file or wrong format\)", load_error(ptb_copy))
