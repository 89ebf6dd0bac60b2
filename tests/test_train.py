"""`ecgbench.engine.train`: the harness trains exactly the plain loop, stops early by its stated rule, keeps its best checkpoint.

On real MIT-BIH beats (the smoke records). The CUDA-graph path is checked against the eager one
only where CUDA is available.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecgbench.contracts import Beats
from ecgbench.data.catalog import load_beats
from ecgbench.plugins.datasets.mitbih import MitBih
from ecgbench.contracts.registry import registry
from ecgbench.engine.train import balanced_accuracy, build, fit, measure_step, predict
from ecgbench.engine.steps import classifier_step

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def beats(data_dir: Path, cache_dir: Path) -> Beats:
    """300 real beats of the smoke records, 75 per class where the records hold them."""
    all_beats, _, _ = load_beats(MitBih(data_dir, records=MitBih.smoke_records), cache_dir)
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(np.flatnonzero(all_beats.y == c))[:75] for c in range(4)])
    return all_beats.take(rng.permutation(idx))


def _holdout(beats: Beats) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(beats)
    return [(np.arange(n - n // 5), np.arange(n - n // 5, n))]


def _fit(cls: type, beats: Beats, **kw) -> object:
    args = dict(epochs=2, batch_size=64, smote_target=0, device=CPU, seed=3, progress=False)
    return fit(cls, 4, 280, beats, _holdout(beats), **{**args, **kw})


def test_fit_is_the_plain_loop_bit_for_bit(beats: Beats) -> None:
    """Same seed, same batches, same float32 arithmetic: per-epoch losses and the kept weights are identical to a
    hand-written Adam loop's (so the speed-ups on the way to the GPU changed nothing on the CPU)."""
    cls = registry.get("models", "kachuee")
    result = _fit(cls, beats, epochs=2)
    tr, _ = _holdout(beats)[0]
    model = build(cls, 4, 280, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=cls.lr)
    x, y = torch.as_tensor(beats.x[tr])[:, None], torch.as_tensor(beats.y[tr])
    gen, losses, states = torch.Generator().manual_seed(3), [], []
    for _ in range(2):
        model.train()
        step_losses = []
        for b in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[b]), y[b])
            loss.backward()
            opt.step()
            step_losses.append(float(loss.detach()))
        losses.append(float(np.mean(step_losses)))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert [c["loss"] for c in result.info["curve"]] == losses
    kept = states[result.info["best_epoch"] - 1]
    assert all(torch.equal(result.state[k], kept[k]) for k in kept)


def test_float_and_tensor_steps_train_alike(beats: Beats) -> None:
    """A custom `training_step` may return a float (a host sync per step) or a detached tensor: the same result."""
    base = registry.get("models", "kachuee")
    own = getattr(base, "training_step", None)

    def float_step(self, *args) -> float:
        return float(own(self, *args) if own else classifier_step(self, *args))

    a, b = _fit(base, beats), _fit(type("FloatStep", (base,), {"training_step": float_step}), beats)
    assert a.info["curve"] == b.info["curve"]
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_a_model_that_stops_improving_stops(beats: Beats) -> None:
    """A model with learning rate 0 never changes, so its validation score never improves after epoch 1: with
    patience 2 it runs 3 epochs of the 10 allowed, and keeps the epoch-1 weights (its initial ones)."""
    frozen = type("FrozenKachuee", (registry.get("models", "kachuee"),), {"lr": 0.0})
    result = _fit(frozen, beats, epochs=10, patience=2)
    info = result.info
    assert info["epochs_run"] == 3 and info["best_epoch"] == 1 and info["epochs_run_per_fold"] == [3]
    assert [c["epoch"] for c in info["curve"]] == [1, 2, 3]
    assert len({c["val_balanced_accuracy"] for c in info["curve"]}) == 1
    initial = build(frozen, 4, 280, seed=3).state_dict()
    assert all(torch.equal(result.state[k], initial[k]) for k in initial)


def test_early_stopping_follows_its_rule_and_keeps_the_best_checkpoint(beats: Beats) -> None:
    """Whatever curve real training draws: the run stops at the first epoch `patience` epochs after the fold's
    best (or at `epochs`), `best_epoch` is the first maximum of the curve, and the kept weights score exactly
    the recorded validation accuracy."""
    cls = registry.get("models", "acharya")
    epochs, patience = 8, 2
    result = _fit(cls, beats, epochs=epochs, patience=patience, batch_size=32)
    info, curve = result.info, result.info["curve"]
    scores = [c["val_balanced_accuracy"] for c in curve]
    best_so_far = np.maximum.accumulate(scores)
    last_best = [max(i for i in range(e + 1) if scores[i] == best_so_far[e]) for e in range(len(scores))]
    stop = next((e + 1 for e in range(len(scores)) if e - last_best[e] >= patience), epochs)
    assert info["epochs_run"] == len(curve) == stop
    assert info["best_epoch"] == int(np.argmax(scores)) + 1 and info["val_balanced_accuracy"] == max(scores)
    model = build(cls, 4, 280, seed=0)
    model.load_state_dict(result.state)
    _, va = _holdout(beats)[0]
    assert balanced_accuracy(beats.y[va], predict(model, beats.x[va], CPU).argmax(1), 4) == info["val_balanced_accuracy"]
    assert all(math.isfinite(c["loss"]) for c in curve)


def test_bad_patience_is_one_clear_error(beats: Beats) -> None:
    with pytest.raises(ValueError, match="patience must be a positive number of epochs, got 0"):
        _fit(registry.get("models", "acharya"), beats, patience=0)


def test_cuda_graphs_flag_is_a_no_op_on_the_cpu(beats: Beats, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = registry.get("models", "acharya")
    a = _fit(cls, beats, epochs=1)
    monkeypatch.setenv("ECGBENCH_CUDA_GRAPHS", "1")
    b = _fit(cls, beats, epochs=1)
    assert a.info["curve"] == b.info["curve"] and not b.info["cuda_graphs"]


@pytest.mark.parametrize("name", registry.names("models"))
def test_measure_step_times_the_models_own_step(name: str) -> None:
    seconds = measure_step(registry.get("models", name), 4, 280, batch_size=8, device=CPU, steps=2, warmup=1)
    assert 0 < seconds < 60


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_fit_matches_eager_fit_on_cuda(beats: Beats) -> None:
    """The graph path replays the eager step on the same batches (the partial last batch eagerly): same curve."""
    cls, cuda = registry.get("models", "kachuee"), torch.device("cuda")
    a = _fit(cls, beats, device=cuda, cuda_graphs=False)
    b = _fit(cls, beats, device=cuda, cuda_graphs=True)
    assert b.info["cuda_graphs"]
    for x, y in zip(a.info["curve"], b.info["curve"]):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-3)
