"""Saved progress (issue 18): a training or an attack stopped anywhere and continued from its saved state ends
exactly where an unstopped one ends (on the CPU, bit for bit), and the store keeps the last good state.

On real MIT-BIH beats (the smoke records). Stops are scripted (`StopAt` answers "no time left" at chosen
steps), so where a run stops is certain; each saved state goes through `torch.save` and
`torch.load(weights_only=True)`, as it does through the store.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgbench.config.attacks import build_attack
from ecgbench.config.profiles import PROFILES
from ecgbench.contracts import Beats
from ecgbench.contracts.registry import registry
from ecgbench.data.catalog import load_beats
from ecgbench.engine.attack import generate
from ecgbench.engine.progress import Checkpoints, OutOfTime
from ecgbench.engine.train import build, fit
from ecgbench.plugins.datasets.mitbih import MitBih
from ecgbench.store.io import meta_path
from ecgbench.store.layout import read_state, save_state, state_paths


@pytest.fixture(scope="module")
def beats(data_dir: Path, cache_dir: Path) -> Beats:
    """240 real beats of the smoke records, 60 per class where the records hold them."""
    all_beats, _, _ = load_beats(MitBih(data_dir, records=MitBih.smoke_records), cache_dir)
    rng = np.random.default_rng(1)
    idx = np.concatenate([rng.permutation(np.flatnonzero(all_beats.y == c))[:60] for c in range(4)])
    return all_beats.take(rng.permutation(idx))


class StopAt:
    """A deadline that says "no time left" at the listed calls (counted over every run that shares it)."""

    def __init__(self, calls: set[int]) -> None:
        self.calls, self.n = calls, 0

    def allows(self, seconds: float) -> bool:
        self.n += 1
        return self.n not in self.calls


def through_disk(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    return torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


def continued(run, stops: set[int]) -> tuple[object, int, int]:
    """Run `run(checkpoints)` again and again from its last saved state until it ends; the result, stops, saves."""
    saved: list[dict] = []
    deadline = StopAt(stops)
    n_stops = 0
    while True:
        ck = Checkpoints(load=lambda: saved[-1] if saved else None, save=lambda s: saved.append(through_disk(s)),
                         epochs=1, seconds=0.0, deadline=deadline)  # type: ignore[arg-type]
        try:
            return run(ck), n_stops, len(saved)
        except OutOfTime:
            n_stops += 1


FOLDS = [(np.arange(0, 192), np.arange(192, 240)), (np.arange(48, 240), np.arange(0, 48))]


@pytest.mark.parametrize("name", ["kachuee", "acharya", "shaker", "ecg-atk-gan"])
def test_a_training_stopped_anywhere_ends_with_the_unstopped_weights(name: str, beats: Beats) -> None:
    """Two folds, three epochs, stopped mid-epoch, at an epoch's last batch and in the second fold; each model's
    own step (two optimisers for the GAN, SGD for Acharya, DCGAN balancing for Shaker) and its global random draws."""
    cls = registry.get("models", name)
    if name == "shaker":  # its DCGAN balancing, retrained on every continuation, with 5 steps a class instead of 250
        cls = type("ShakerFewSteps", (cls,), {"dcgan_steps": 5})
    kw = dict(epochs=3, batch_size=64, smote_target=80, device=torch.device("cpu"), seed=5, progress=False)
    plain = fit(cls, 4, 280, beats, FOLDS, **kw)
    result, stops, saves = continued(lambda ck: fit(cls, 4, 280, beats, FOLDS, checkpoints=ck, **kw), {2, 3, 7, 12})
    assert stops == 4 and saves >= stops
    assert plain.state.keys() == result.state.keys()
    assert all(torch.equal(plain.state[k], result.state[k]) for k in plain.state)
    assert result.info["curve"] == plain.info["curve"] and result.info["best_epoch"] == plain.info["best_epoch"]
    assert result.info["epochs_run_per_fold"] == plain.info["epochs_run_per_fold"] == [3, 3]


def test_an_attack_stopped_between_batches_makes_the_unstopped_beats(beats: Beats) -> None:
    """PGD draws a random start per batch: the generators' state travels with the finished batches."""
    model = build(registry.get("models", "kachuee"), 4, 280, seed=0)
    attack = build_attack("pgd", PROFILES["smoke"], registry)
    x, y = torch.as_tensor(beats.x[:96])[:, None], beats.y[:96]
    kw = dict(seed=3, batch=16, device=torch.device("cpu"))
    plain, plain_stats = generate(model, attack, x, y, (0.0, 1.0), **kw)
    (adv, stats), stops, _ = continued(lambda ck: generate(model, attack, x, y, (0.0, 1.0), checkpoints=ck, **kw), {1, 3, 4})
    assert stops == 3
    assert np.array_equal(adv, plain) and stats == plain_stats
    assert np.abs(adv - beats.x[:96]).max() > 0  # it did attack


class FourQueries:
    """A bounded attack that queries the model four times in one call, as Square or Boundary query it thousands
    of times: the harness cannot ask the deadline between its steps, only when it queries the model."""

    label, eps, bounded = "four-queries", 0.01, True

    def __call__(self, model, x, y, value_range):
        start = torch.randn_like(x)  # a random start, drawn before the queries a stop interrupts
        for _ in range(4):
            model(x)
        return (x + self.eps * torch.sign(start)).clamp(*value_range)


def test_an_attack_stopped_inside_a_batch_loses_only_that_batch(beats: Beats) -> None:
    """Six batches of 16; the deadline comes during the second batch's queries, then during the third's of the
    continued run: each stop keeps the batches finished before it, and the continued beats equal the unstopped ones."""
    model = build(registry.get("models", "kachuee"), 4, 280, seed=0)
    x, y = torch.as_tensor(beats.x[:96])[:, None], beats.y[:96]
    kw = dict(seed=3, batch=16, device=torch.device("cpu"))
    plain, _ = generate(model, FourQueries(), x, y, (0.0, 1.0), **kw)
    last: list[int] = []
    kept: list[int] = []  # beats in the saved state when each stop came

    def run(ck: Checkpoints):
        save = ck.save
        ck.save = lambda state: (last.append(len(state["adv"])), save(state))
        try:
            return generate(model, FourQueries(), x, y, (0.0, 1.0), checkpoints=ck, **kw)
        except OutOfTime:
            kept.append(last[-1])
            raise

    # calls: batch 0's queries 1-4; batch 1: the check before it (5), its queries 6-9 -> stop at 7 keeps batch 0;
    # continued: batch 1's queries 8-11, batch 2: check 12, queries 13-16 -> stop at 14 keeps batches 0-1
    (adv, _), stops, _ = continued(run, {7, 14})
    assert stops == 2 and kept == [16, 32]
    assert np.array_equal(adv, plain)
    assert not model._forward_pre_hooks  # the deadline's hook is gone once the attack ends


def test_the_newest_good_state_is_continued_and_a_damaged_one_is_reported(tmp_path: Path, capsys) -> None:
    final = tmp_path / "checkpoints" / "m-key.pt"
    assert read_state(final) is None
    for epoch in range(3):
        save_state(final, {"epoch": epoch, "w": torch.full((3,), float(epoch))})
    assert read_state(final)["epoch"] == 2  # two slots, the newer wins
    newest = max(state_paths(final), key=lambda p: p.stat().st_mtime_ns)
    newest.write_bytes(newest.read_bytes()[:-7])  # truncated: fails its checksum
    state = read_state(final)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    err = capsys.readouterr().err
    assert f"{newest} is damaged" in err and "continuing from the previous state" in err
    assert not newest.exists() and not meta_path(newest).exists()
    save_state(final, {"epoch": 3})  # written over the slot that was lost, the good one stays
    assert read_state(final)["epoch"] == 3 and sum(p.exists() for p in state_paths(final)) == 2
