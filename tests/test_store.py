"""The store: atomic durable writes, verified reads, one-writer locks."""
from __future__ import annotations

import os
import stat
import threading
import time

import numpy as np
import pytest

from ecgbench.store.locks import entry_lock
from ecgbench.store.io import Damaged, discard, load_arrays, load_entry, read_cell, save_arrays, save_entry, write_json


def test_an_entry_reads_back_what_was_written(tmp_path):
    path = tmp_path / "a.npz"
    save_arrays(path, x=np.arange(6.0).reshape(2, 3), y=np.array([1, 2]))
    a = load_arrays(path)
    assert a["x"].tolist() == [[0, 1, 2], [3, 4, 5]] and a["y"].tolist() == [1, 2]


def test_a_missing_entry_is_none_not_an_error(tmp_path):
    assert load_arrays(tmp_path / "nothing.npz") is None and load_entry(tmp_path / "nothing.pt") is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop-meta", "drop-payload", "garbage-meta"])
def test_every_kind_of_damage_is_detected(tmp_path, damage):
    path = tmp_path / "a.npz"
    save_arrays(path, x=np.random.default_rng(0).random((50, 280)))
    meta = path.with_name(path.name + ".meta.json")
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        path.write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    elif damage == "drop-meta":
        meta.unlink()
    elif damage == "drop-payload":
        path.unlink()
    else:
        meta.write_text("{not json")
    with pytest.raises(Damaged) as info:
        load_arrays(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    discard(path)
    assert not path.exists() and not meta.exists()


def test_an_entry_whose_bytes_check_but_do_not_parse_is_damaged(tmp_path):
    path = tmp_path / "a.npz"
    save_entry(path, b"not an npz archive")
    with pytest.raises(Damaged, match="unreadable arrays"):
        load_arrays(path)


def test_pickles_are_refused(tmp_path):
    path = tmp_path / "a.npz"
    save_arrays(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(Damaged, match="unreadable arrays"):
        load_arrays(path)


def test_writes_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    write_json(tmp_path / "x.json", {"a": 1})
    assert len(synced) == 2  # the file, then its folder after the rename


def test_a_cell_file_must_parse_and_hold_its_fields(tmp_path):
    path = tmp_path / "cell.json"
    path.write_text('{"cell": {"model": "kachuee"}, "key": "k", "sta')
    with pytest.raises(Damaged, match="not valid JSON"):
        read_cell(path)
    write_json(path, {"cell": {}, "key": "k"})
    with pytest.raises(Damaged, match="not a cell record"):
        read_cell(path)


def test_an_entry_lock_lets_one_writer_in_at_a_time(tmp_path):
    inside, overlap = [], []

    def hold():
        with entry_lock(tmp_path / "x.pt"):
            inside.append(1)
            overlap.append(len(inside))
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == [1, 1, 1, 1]


def test_written_files_take_the_users_umask_like_open(tmp_path):
    """mkstemp makes files 0600; a results folder served from a static host must stay readable (issue 18)."""
    old = os.umask(0o022)
    try:
        assert stat.S_IMODE(write_json(tmp_path / "a.json", {"x": 1}).stat().st_mode) == 0o644
        save_entry(tmp_path / "e.bin", b"payload")
        assert stat.S_IMODE((tmp_path / "e.bin").stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "e.bin.meta.json").stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(write_json(tmp_path / "b.json", {"x": 1}).stat().st_mode) == 0o600
    finally:
        os.umask(old)
