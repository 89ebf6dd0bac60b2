"""The plan packs trainings (issue 19): which trainings form a pack, that packing changes no key and no
dependency, that a packed run saves each member's checkpoint as its own training would, and that a packed
training stopped by the time limit continues bit for bit on the CPU."""
from __future__ import annotations

import re
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from ecgbench.config.run import run_config
from ecgbench.contracts.registry import registry
from ecgbench.data.catalog import Catalog
from ecgbench.engine.pack_train import Member, fit_packed
from ecgbench.engine.progress import Checkpoints, Deadline, OutOfTime
from ecgbench.plan import packs
from ecgbench.plan.graph import plan
from ecgbench.store.layout import checkpoint_path, read_checkpoint

from test_pack import BnNet


def _cfg(tmp_path, data_dir, **given):
    base = {"models": "kachuee,shaker,acharya,ecg-atk-gan", "attacks": "fgsm,pgd", "modes": "static,adaptive", "profile": "smoke", "seeds": "0,1",
            "out": str(tmp_path / "out"), "data_dir": str(data_dir), "cache_dir": str(tmp_path / "cache"), "device": "cpu"}
    return run_config({**base, **given})


def _graph(cfg):
    return plan(cfg, registry, Catalog(registry, cfg.data_dir, cfg.cache, cfg.profile, cfg.split))


def test_the_plan_packs_the_trainings_of_one_model_and_changes_no_key(tmp_path, data_dir, monkeypatch):
    """Smoke, 2 seeds, static + adaptive: each model's clean trainings form one pack (2 seeds), its trainings on one
    static set another (2 seeds x fgsm, pgd) and its defence trainings (both static sets, twice the beats) a third;
    ECG-ATK-GAN packs through its `phase_loss`; a model that opts out (here Acharya) trains alone. Every training,
    static set and cell keeps its key, each member waits for its pack, every task follows what it needs; `--pack
    auto` does not pack on the CPU; a size cap splits a group, and a group of one member is no pack (smoke trains one fold)."""
    monkeypatch.setattr(registry.get("models", "acharya"), "packable", False)
    off, on = _graph(_cfg(tmp_path, data_dir, pack="off")), _graph(_cfg(tmp_path, data_dir, pack="on"))
    assert not off.of_kind("pack") and not _graph(_cfg(tmp_path, data_dir)).of_kind("pack")  # auto on the CPU
    assert {k for k, t in on.tasks.items() if t.kind != "pack"} == set(off.tasks)
    got = sorted((p.model, len(p.members[0].statics), len(p.members)) for p in on.of_kind("pack"))
    assert got == [(m, statics, n) for m in ("ecg-atk-gan", "kachuee", "shaker") for statics, n in ((0, 2), (1, 4), (2, 2))]
    for pack in on.of_kind("pack"):
        assert len({(m.model, m.dataset, len(m.statics)) for m in pack.members}) == 1
        assert all(on.tasks[m.key].pack == pack.key for m in pack.members)
    alone = [t for t in on.of_kind("train") if t.pack is None]
    assert alone and {t.model for t in alone} == {"acharya"}
    keys = list(on.tasks)
    for task in on.tasks.values():
        assert all(keys.index(d) < keys.index(task.key) for d in task.deps), task.label
    from ecgbench.execute.estimate import dry_run

    text = dry_run(_cfg(tmp_path, data_dir, pack="on"), calibrate=False)
    assert re.search(r"\| train kachuee, packed x2 +\| 4 in 2 pack\(s\) +\|", text), text
    assert re.search(r"\| train kachuee, packed x4 +\| 4 in 1 pack\(s\) +\|", text), text
    assert re.search(r"\| train acharya +\| 8 +\|", text) and "train kachuee  " not in text
    monkeypatch.setattr(packs, "MAX_MEMBERS", 2)  # smoke trains one fold: 2 trainings a pack
    capped = _graph(_cfg(tmp_path, data_dir, pack="on", seeds="0,1,2", modes="adaptive"))
    assert sorted(len(p.members) for p in capped.of_kind("pack")) == [2, 2, 2]  # 3 trainings each: 2 packed, 1 alone
    assert sum(t.pack is None for t in capped.of_kind("train") if t.model == "kachuee") == 1
    (tmp_path / "folds.toml").write_text('[profile]\nbase = "smoke"\nfolds = 2\n')
    given = {"models": "kachuee", "attacks": "fgsm", "modes": "adaptive", "seeds": "0", "pack": "on", "device": "cpu",
             "out": str(tmp_path / "out"), "data_dir": str(data_dir), "cache_dir": str(tmp_path / "cache")}
    folds = _graph(run_config(given, tmp_path / "folds.toml"))
    assert [len(p.members) for p in folds.of_kind("pack")] == [1]  # one training of two folds: two members


def test_a_bad_pack_setting_is_one_line(tmp_path, data_dir):
    with pytest.raises(ValueError, match=r"^--pack 'always': 'pack' must be one of auto, on, off, got 'always'$"):
        _cfg(tmp_path, data_dir, pack="always")
    (tmp_path / "run.toml").write_text('pack = "on"\nmodels = ["kachuee"]\n')
    assert run_config({}, tmp_path / "run.toml").pack == "on"


def test_a_packed_run_saves_each_members_checkpoint_as_its_own_training(tmp_path, data_dir):
    """`--pack on`, Kachuee, 2 seeds, clean cells: one pack trains both; each checkpoint sits under the key a
    separate training uses, records `packed`, loads into the plain model, and starts from the loss a separate
    training starts from (same weights, beats and order); a second invocation trains nothing."""
    from ecgbench.execute.runner import Runner

    cfg = _cfg(tmp_path, data_dir, models="kachuee", attacks="", modes="adaptive", pack="on")
    first = Runner(cfg).run()
    trains = _graph(cfg).of_kind("train")
    assert len(trains) == 2
    alone = _cfg(tmp_path, data_dir, models="kachuee", attacks="", modes="adaptive", pack="off",
                 cache_dir=str(tmp_path / "alone"), out=str(tmp_path / "out-alone"))
    Runner(alone).run()
    for task in trains:
        state, info, _ = read_checkpoint(checkpoint_path(cfg.cache, "kachuee", task.key))
        _, sep, _ = read_checkpoint(checkpoint_path(alone.cache, "kachuee", task.key))
        assert info["packed"] == 2 and "packed" not in sep
        assert info["curve"][0]["loss"] == pytest.approx(sep["curve"][0]["loss"], abs=1e-4)
        registry.get("models", "kachuee")(4, 280).load_state_dict(state)
    again = Runner(cfg)
    again.run()
    assert again.trainings == 0 and first["executor"]["packed"] is True
    assert [t["task"] for t in first["invocations"][0]["timeline"] if t["kind"] == "pack"] == [
        "train mitbih/kachuee x 2 packed (seeds 0, 1)"]


def test_a_packed_training_stopped_by_the_time_limit_continues_bit_for_bit(data_dir, cache_dir):
    """Three members of a model with BatchNorm and dropout, one with patience 1 likely to stop: stopped at the
    deadline after epoch 1 (its state saved), then continued; every member's best checkpoint, curve and epoch
    count equal those of one uninterrupted packed training."""
    from ecgbench.data.catalog import load_beats
    from ecgbench.plugins.datasets.mitbih import MitBih

    beats, _, _ = load_beats(MitBih(data_dir, records=["208", "209", "213"]), cache_dir)
    rng = np.random.default_rng(0)
    members = []
    for seed, n in ((0, 120), (1, 120), (2, 90)):
        idx = rng.permutation(len(beats))[:n]
        members.append(Member(beats.take(idx[: n - 30]), beats.take(idx[n - 30:]), seed))
    kw = {"epochs": 4, "batch_size": 32, "smote_target": 0, "device": "cpu", "patience": 2}
    torch.manual_seed(0)
    whole = fit_packed(BnNet, 4, 280, members, **kw)
    saved: dict = {}
    stop = Checkpoints(load=lambda: saved.get("state"), save=lambda s: saved.update(state=s), deadline=Deadline(time.time()))
    torch.manual_seed(0)
    with pytest.raises(OutOfTime, match="after epoch 1"):
        fit_packed(BnNet, 4, 280, members, **kw, checkpoints=stop)
    saved["state"] = torch.load(_roundtrip(saved["state"]), weights_only=True)  # as the store reads it back
    torch.manual_seed(123)  # the saved random state is what counts
    resumed = fit_packed(BnNet, 4, 280, members, **kw, checkpoints=replace(stop, deadline=None))
    for a, b in zip(whole, resumed):
        assert a.info["curve"] == b.info["curve"] and a.info["epochs_run"] == b.info["epochs_run"]
        assert all(torch.equal(a.state[n], b.state[n]) for n in a.state)


def _roundtrip(state: dict):
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_a_packed_training_keeps_what_fit_keeps_of_its_folds():
    """The best validation score over the folds, the first fold on a tie (as `fit` compares with >), every fold's epochs."""
    from ecgbench.engine.pack_train import best_of_folds
    from ecgbench.engine.train import FitResult

    folds = [FitResult({"w": torch.tensor([float(i)])}, {"fold": i, "val_balanced_accuracy": s, "epochs_run": 3 + i})
             for i, s in enumerate([0.5, 0.7, 0.7])]
    kept = best_of_folds(folds)
    assert kept.info["fold"] == 1 and kept.state["w"].item() == 1.0 and kept.info["epochs_run_per_fold"] == [3, 4, 5]
