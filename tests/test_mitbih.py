"""MIT-BIH beats on the real records: lead choice, windows, AAMI classes, counts, splits."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import wfdb

from ecgbench.contracts import PluginError
from ecgbench.data.beats import minmax
from ecgbench.data.catalog import load_beats
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


def test_each_beat_states_its_amplitude_in_microvolts(data_dir, cache_dir):
    """`scale`: the raw window's range in microvolts (100.hea: MLII in mV), so x * scale is the beat in microvolts
    above its minimum; served the same from the cache as cut from the records."""
    signal = wfdb.rdrecord(str(data_dir / "mitdb" / "100"), channels=[0]).p_signal[:, 0]
    ann = wfdb.rdann(str(data_dir / "mitdb" / "100"), "atr")
    for fresh in (True, False):
        beats, _, hit = load_beats(MitBih(data_dir, records=["100"]), cache_dir / "scale")
        assert hit is not fresh and beats.scale.shape == (len(beats),) and beats.scale.dtype == np.float32
        for i, r in ((0, ann.sample[2]), (1, ann.sample[3])):
            window = signal[r - 140:r + 140]
            np.testing.assert_allclose(beats.scale[i], np.ptp(window) * 1000, rtol=1e-6)
            np.testing.assert_allclose(beats.x[i] * beats.scale[i], (window - window.min()) * 1000, atol=0.05)


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


# -- bad data: each fault is one line naming the file and what is wrong ---------------------------
@pytest.fixture
def mitdb_copy(data_dir, tmp_path):
    """A data folder holding a copy of record 100 (and RECORDS listing it only), to damage."""
    root = tmp_path / "data" / "mitdb"
    root.mkdir(parents=True)
    for suffix in (".hea", ".dat", ".atr"):
        shutil.copy(data_dir / "mitdb" / f"100{suffix}", root)
    (root / "RECORDS").write_text("100\n")
    return root


def load_error(root) -> str:
    with pytest.raises(PluginError) as err:
        MitBih(root.parent).load()
    message = str(err.value)
    assert "\n" not in message
    return message


def edit_header(root, old: str, new: str, count: int = 1) -> None:
    hea = root / "100.hea"
    text = hea.read_text()
    assert text.count(old) >= count
    hea.write_text(text.replace(old, new, count))


def test_the_undamaged_copy_loads(mitdb_copy):
    assert MitBih(mitdb_copy.parent).load().counts(4) == [2237, 33, 1, 0]


def test_truncated_signal_says_how_many_samples_it_holds(mitdb_copy):
    dat = mitdb_copy / "100.dat"
    dat.write_bytes(dat.read_bytes()[:500_001])  # format 212, 2 channels: 3 bytes a sample
    assert load_error(mitdb_copy) == (f"{dat}: truncated signal: header says 650000 samples of 2 channels, "
                                      "the file holds 166667")


def test_header_with_too_large_a_sample_count_reads_as_a_truncated_signal(mitdb_copy):
    edit_header(mitdb_copy, "100 2 360 650000", "100 2 360 700000")
    assert load_error(mitdb_copy) == (f"{mitdb_copy / '100.dat'}: truncated signal: header says 700000 samples "
                                      "of 2 channels, the file holds 650000")


def test_header_with_too_small_a_sample_count(mitdb_copy):
    edit_header(mitdb_copy, "100 2 360 650000", "100 2 360 600000")
    assert load_error(mitdb_copy) == (f"{mitdb_copy / '100.hea'}: header says 600000 samples of 2 channels but "
                                      "100.dat holds 650000: wrong sample count or format")


def test_header_with_the_wrong_format(mitdb_copy):
    edit_header(mitdb_copy, "100.dat 212", "100.dat 16", count=2)  # 212 packs 2 samples in 3 bytes, 16 takes 2 each
    assert load_error(mitdb_copy) == (f"{mitdb_copy / '100.dat'}: truncated signal: header says 650000 samples "
                                      "of 2 channels, the file holds 487500")


def test_header_with_an_unknown_format(mitdb_copy):
    edit_header(mitdb_copy, "100.dat 212", "100.dat 999")
    assert load_error(mitdb_copy) == (f"{mitdb_copy / '100.hea'}: signal format '999' of lead MLII is not one "
                                      "ecgbench reads (8, 16, 24, 32, 61, 80, 160, 212, 310, 311)")


def test_header_with_more_signals_than_it_describes(mitdb_copy):
    edit_header(mitdb_copy, "100 2 360", "100 3 360")
    assert load_error(mitdb_copy) == f"{mitdb_copy / '100.hea'}: header unreadable: it declares 3 signals but describes 2"


def test_header_of_garbage_bytes(mitdb_copy):
    (mitdb_copy / "100.hea").write_bytes(np.random.default_rng(0).bytes(300))
    assert load_error(mitdb_copy) == f"{mitdb_copy / '100.hea'}: header unreadable: not a WFDB header"


def test_header_of_another_record(mitdb_copy):
    edit_header(mitdb_copy, "100 2 360", "101 2 360")
    assert load_error(mitdb_copy) == f"{mitdb_copy / '100.hea'}: header names record '101', expected '100'"


def test_header_with_another_sampling_rate(mitdb_copy):
    edit_header(mitdb_copy, "100 2 360", "100 2 250")
    assert load_error(mitdb_copy) == f"{mitdb_copy / '100.hea'}: sampling frequency 250 Hz, expected 360 Hz"


def test_header_pointing_at_another_signal_file(mitdb_copy):
    edit_header(mitdb_copy, "100.dat 212 200 11 1024 995", "101.dat 212 200 11 1024 995")
    assert load_error(mitdb_copy) == f"{mitdb_copy / '100.hea'}: lead MLII is stored in '101.dat', expected '100.dat'"


def test_signal_of_garbage_of_the_right_size_fails_its_checksum(mitdb_copy):
    dat = mitdb_copy / "100.dat"
    raw = bytearray(dat.read_bytes())
    raw[300_000:300_300] = np.random.default_rng(0).bytes(300)  # the first sample stays as the header says
    dat.write_bytes(bytes(raw))
    assert load_error(mitdb_copy) == (f"{dat}: lead MLII does not match its checksum in 100.hea "
                                      "(damaged file or wrong format)")


def test_signal_whose_first_sample_disagrees_with_the_header(mitdb_copy):
    edit_header(mitdb_copy, "1024 995 -22131", "1024 996 -22131")
    assert load_error(mitdb_copy) == (f"{mitdb_copy / '100.dat'}: lead MLII starts at 995, 100.hea says 996 "
                                      "(damaged file or wrong format)")


def test_annotation_file_of_random_bytes(mitdb_copy):
    atr = mitdb_copy / "100.atr"
    atr.write_bytes(np.random.default_rng(3).bytes(2000) + b"\0\0")  # wfdb's decoder: IndexError
    assert load_error(mitdb_copy) == f"{atr}: annotation file unreadable: not a WFDB annotation file"


def test_annotation_file_whose_times_go_backwards(mitdb_copy):
    atr = mitdb_copy / "100.atr"
    atr.write_bytes(np.random.default_rng(0).bytes(2000) + b"\0\0")  # decodes, to nonsense
    assert re.fullmatch(rf"{re.escape(str(atr))}: annotation file unreadable: annotation \d+ at sample -?\d+ "
                        r"comes before the one at -?\d+", load_error(mitdb_copy))


def test_truncated_annotation_file(mitdb_copy):
    atr = mitdb_copy / "100.atr"
    atr.write_bytes(atr.read_bytes()[:-2])
    assert load_error(mitdb_copy) == (f"{atr}: annotation file unreadable: truncated (it does not end with the "
                                      "end-of-file marker)")


def test_annotations_beyond_the_signal(mitdb_copy):
    ann = wfdb.rdann(str(mitdb_copy / "100"), "atr")
    wfdb.wrann("100", "atr", np.append(ann.sample, 650_000), ann.symbol + ["N"], write_dir=str(mitdb_copy))
    assert load_error(mitdb_copy) == (f"{mitdb_copy / '100.atr'}: annotation at sample 650000 lies beyond the "
                                      "signal's 650000 samples")


@pytest.mark.parametrize("suffix", [".hea", ".dat", ".atr"])
def test_record_listed_but_missing_a_file(mitdb_copy, suffix):
    (mitdb_copy / f"100{suffix}").unlink()
    expected = f"record 100 listed in {mitdb_copy / 'RECORDS'} but {mitdb_copy / f'100{suffix}'} is missing"
    assert load_error(mitdb_copy) == expected
    with pytest.raises(PluginError, match=re.escape(expected)):
        MitBih(mitdb_copy.parent).files()


def test_records_file_of_garbage(mitdb_copy):
    (mitdb_copy / "RECORDS").write_bytes(b"\xff\xfe\x00\x81")
    assert load_error(mitdb_copy) == f"{mitdb_copy / 'RECORDS'}: unreadable: not a text list of record names"


def test_data_dir_that_does_not_exist(tmp_path):
    missing = tmp_path / "x"
    for call in (lambda ds: ds.load(), lambda ds: ds.files()):
        with pytest.raises(PluginError) as err:
            call(MitBih(missing))
        assert str(err.value).startswith(f"--data-dir {missing}: no such folder (") and "\n" not in str(err.value)


def test_files_lists_what_load_reads_without_reading_signals(data_dir, mitdb_copy):
    root = data_dir / "mitdb"
    assert MitBih(data_dir, records=["101", "100"]).files() == [
        root / "RECORDS", *(root / f"{name}{suffix}" for name in ("100", "101") for suffix in (".hea", ".dat", ".atr"))]
    assert len(MitBih(data_dir).files()) == 1 + 3 * 48
    (mitdb_copy / "100.dat").write_bytes(b"garbage")  # files() stats, it does not read: no error here
    assert MitBih(mitdb_copy.parent).files()[2] == mitdb_copy / "100.dat"


def test_only_records_without_mlii(data_dir):
    with pytest.raises(PluginError) as err:
        MitBih(data_dir, records=["104", "102"]).load()
    assert str(err.value) == f"mitbih: no MLII lead in the selected records of {data_dir / 'mitdb'} (102, 104)"


def test_annotations_without_a_beat_of_the_four_classes(mitdb_copy):
    wfdb.wrann("100", "atr", np.array([18, 5000]), ["+", "Q"], aux_note=["(N", ""], write_dir=str(mitdb_copy))
    assert load_error(mitdb_copy) == f"mitbih: no N, S, V or F beat in the selected records of {mitdb_copy}"
