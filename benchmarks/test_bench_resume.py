"""What saving a training's state costs (issue 18): the same `fit` with no checkpoints and with its whole state
saved to a real store after every epoch (`--checkpoint-every 0`; the default saves every 5 epochs or 5 minutes).

`OMP_NUM_THREADS=1 ECGBENCH_DATA=/path/to/data python -m pytest benchmarks/test_bench_resume.py --benchmark-only`. Per model, (saved - plain) / epochs is the cost of one save; the state is the
model, its optimisers (Adam keeps two moments a weight), the best weights so far and the generators.
Also timed: one save and one load of ECG-ATK-GAN's state alone.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgbench.contracts import Beats
from ecgbench.contracts.registry import registry
from ecgbench.data.catalog import load_beats
from ecgbench.engine.progress import Checkpoints
from ecgbench.engine.train import fit
from ecgbench.plugins.datasets.mitbih import MitBih
from ecgbench.store.layout import read_state, save_state

EPOCHS = 4


@pytest.fixture(scope="module")
def beats(data_dir, cache_dir) -> Beats:
    """1,280 real beats of the smoke records (320 per class, as many as the records hold)."""
    all_beats, _, _ = load_beats(MitBih(data_dir, records=MitBih.smoke_records), cache_dir)
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(np.flatnonzero(all_beats.y == c))[:320] for c in range(4)])
    return all_beats.take(rng.permutation(idx))


def _fit(name: str, beats: Beats, checkpoints: Checkpoints | None) -> object:
    n = len(beats)
    folds = [(np.arange(n - n // 10), np.arange(n - n // 10, n))]
    return fit(registry.get("models", name), 4, 280, beats, folds, epochs=EPOCHS, batch_size=128, smote_target=0,
               device=torch.device("cpu"), seed=0, progress=False, checkpoints=checkpoints)


@pytest.mark.parametrize("name", ["kachuee", "ecg-atk-gan"])
@pytest.mark.parametrize("saving", ["plain", "saved every epoch"])
def test_fit_with_and_without_saving_its_state(benchmark, beats, tmp_path, name, saving):
    final = tmp_path / "checkpoints" / f"{name}-bench.pt"
    saves = []

    def save(state: dict) -> None:
        saves.append(save_state(final, state))

    ck = None if saving == "plain" else Checkpoints(load=lambda: None, save=save, epochs=1, seconds=0.0)
    result = benchmark.pedantic(lambda: _fit(name, beats, ck), rounds=3, iterations=1)
    assert result.info["epochs_run"] == EPOCHS
    assert (len(saves) == 3 * (EPOCHS - 1)) if ck else not saves  # no save after the last epoch: the checkpoint follows
    if ck:
        benchmark.extra_info["state_bytes"] = final.with_name(final.name + ".state0").stat().st_size


def test_save_and_load_of_the_gan_state(benchmark, beats, tmp_path):
    states: list[dict] = []
    _fit("ecg-atk-gan", beats, Checkpoints(load=lambda: None, save=states.append, epochs=1, seconds=0.0))
    final = tmp_path / "checkpoints" / "gan-bench.pt"

    def round_trip() -> dict | None:
        save_state(final, states[-1])
        return read_state(final)

    loaded = benchmark.pedantic(round_trip, rounds=5, iterations=1)
    assert loaded is not None and all(torch.equal(v, states[-1]["model"][k]) for k, v in loaded["model"].items())
