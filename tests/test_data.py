"""Shared preparation: SMOTE on training beats only, class caps, folds, caching, atomic writes."""
from __future__ import annotations

import numpy as np
import pytest

from ecgbench.data.beats import cap_per_class, folds, prepare, smote
from ecgbench.data.catalog import load_beats
from ecgbench.plugins.datasets.mitbih import MitBih
from ecgbench.store.io import atomic_write


@pytest.fixture(scope="module")
def small(data_dir, cache_dir):
    ds = MitBih(data_dir, records=["208", "209", "213"])
    beats, _, _ = load_beats(ds, cache_dir)
    return ds, beats


def test_smote_raises_minorities_to_target_and_marks_synthetic_beats(small):
    _, beats = small
    train = cap_per_class(beats, 300, seed=0)
    counts = train.counts(4)
    out = smote(train, 400, seed=0)
    assert out.counts(4) == [max(c, 400) for c in counts]
    assert (out.groups == "smote").sum() == len(out) - len(train)
    np.testing.assert_array_equal(out.x[: len(train)], train.x)  # real beats untouched
    assert out.x.dtype == np.float32 and 0 <= out.x.min() and out.x.max() <= 1


def test_scale_follows_take_concat_and_smote_and_is_checked(small):
    """Each beat keeps its microvolts through caps and splits; SMOTE's synthetic beats have none (NaN); a scale that
    does not fit the beats is the dataset's one-line error."""
    from ecgbench.contracts import Beats, PluginError
    from ecgbench.contracts.checks import check_beats

    _, beats = small
    idx = np.array([5, 0, 7])
    np.testing.assert_array_equal(beats.take(idx).scale, beats.scale[idx])
    train = cap_per_class(beats, 300, seed=0)
    out = smote(train, 400, seed=0)
    np.testing.assert_array_equal(out.scale[: len(train)], train.scale)
    assert np.isnan(out.scale[len(train):]).all() and len(out.scale) == len(out)
    assert Beats.concat([beats.take(idx), Beats(beats.x[:2], beats.y[:2], beats.groups[:2])]).scale.shape == (5,)
    assert Beats.concat([Beats(beats.x[:2], beats.y[:2], beats.groups[:2])] * 2).scale is None
    for bad in (beats.scale[:-1], -beats.scale, np.full(len(beats), np.inf)):
        with pytest.raises(PluginError, match="dataset 'mitbih' returned a scale of shape"):
            check_beats(Beats(beats.x, beats.y, beats.groups, scale=bad), "mitbih", 280, 4, (0.0, 1.0))


def test_prepare_never_puts_synthetic_beats_in_test_or_validation(small):
    ds, beats = small
    s = prepare(ds, beats, "random", seed=0, train_cap=500, test_cap=100, n_folds=1, val_fraction=0.1)
    assert "smote" not in set(s.test.groups) and "smote" not in set(s.train.groups)
    (tr, va), = s.folds
    assert not set(tr) & set(va) and len(tr) + len(va) == len(s.train)
    assert max(s.test.counts(4)) <= 100 and max(s.train.counts(4)) <= 500


def test_five_folds_cover_every_training_beat_once(small):
    _, beats = small
    seen = np.concatenate([va for _, va in folds(beats.y, 5, 0.1, seed=0)])
    assert sorted(seen.tolist()) == list(range(len(beats)))


def test_beats_are_cached_by_settings(data_dir, tmp_path):
    ds = MitBih(data_dir, records=["100"])
    first, _, hit1 = load_beats(ds, tmp_path)
    second, _, hit2 = load_beats(ds, tmp_path)
    assert (hit1, hit2) == (False, True)
    np.testing.assert_array_equal(first.x, second.x)
    _, _, hit3 = load_beats(MitBih(data_dir, records=["101"]), tmp_path)
    assert hit3 is False


def test_atomic_write_leaves_nothing_behind_when_writing_fails(tmp_path):
    target = tmp_path / "cell.json"
    target.write_text("old")

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
