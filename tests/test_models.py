"""Contract tests run over every registered model (timm style): a new model is tested by these as it registers."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecgbench.contracts import Beats
from ecgbench.contracts.registry import registry
from ecgbench.engine.train import build, fit
from ecgbench.engine.steps import training_hooks

MODELS = registry.names("models")
AUGMENTING = [n for n in MODELS if hasattr(registry.get("models", n), "augment")]
SMALL_BUDGETS = {"dcgan_steps": 5}  # CPU-budget class attributes (Shaker's DCGANs), shrunk so tests stay fast


def _model_cls(name: str) -> type:
    """The registered class, with any known CPU-budget attribute shrunk for the test run."""
    cls = registry.get("models", name)
    small = {k: v for k, v in SMALL_BUDGETS.items() if hasattr(cls, k)}
    return type(cls.__name__, (cls,), small) if small else cls


@pytest.fixture(scope="module")
def _real_beats(tmp_path_factory: pytest.TempPathFactory) -> Beats:
    """MIT-BIH records 208 and 209: real 280-sample beats of all four classes (N, S, V, F)."""
    from ecgbench.data.catalog import load_beats
    from ecgbench.plugins.datasets.mitbih import MitBih

    data_dir = Path(os.environ.get("ECGBENCH_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    if not (data_dir / "mitdb" / "RECORDS").exists() and not (data_dir / "RECORDS").exists():
        pytest.skip(f"no MIT-BIH data in {data_dir}; set ECGBENCH_DATA")
    beats, _, _ = load_beats(MitBih(data_dir, records=["208", "209"]), tmp_path_factory.mktemp("cache"))
    return beats


def _per_class(beats: Beats, n: int, seed: int = 0) -> Beats:
    """`n` beats of each class, in random order."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(beats.y == c), n, replace=False) for c in np.unique(beats.y)])
    return beats.take(rng.permutation(idx))


def _train_mode_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.train()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)  # the same dropout masks before and after training
        return float(F.cross_entropy(model(x), y))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("window", [280, 187])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_output_shape(name: str, window: int, n_classes: int) -> None:
    model = build(_model_cls(name), n_classes, window, seed=0).eval()
    out = model(torch.rand(3, 1, window))
    assert out.shape == (3, n_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_input(name: str) -> None:
    """White-box attacks (paper 2.3) need d logits / d beat, in eval mode as ART and foolbox run it."""
    model = build(_model_cls(name), 4, 280, seed=0).eval()
    x = torch.rand(4, 1, 280, requires_grad=True)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_under_seed(name: str) -> None:
    cls, x = _model_cls(name), torch.rand(4, 1, 280)
    a, b, c = (build(cls, 4, 280, seed=s).eval() for s in (7, 7, 8))
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x)), "another seed should give other weights"


@pytest.mark.parametrize("name", MODELS)
def test_training_steps_lower_loss_on_real_beats(name: str, _real_beats: Beats) -> None:
    """Five steps of the model's own hooks, as `fit` calls them, lower the cross-entropy on the batch.

    Measured in train mode with fixed dropout masks: that is the loss the steps minimise, whereas
    eval-mode BatchNorm statistics lag behind for the first few hundred steps.
    """
    model = build(_model_cls(name), 4, 280, seed=0)
    beats = _per_class(_real_beats, 16)
    x, y = torch.as_tensor(beats.x)[:, None], torch.as_tensor(beats.y)
    optimizers, step = training_hooks(model)
    before = _train_mode_loss(model, x, y)
    for _ in range(5):
        loss = step(x, y, torch.zeros_like(y), optimizers)
        assert np.isfinite(float(loss))
    assert _train_mode_loss(model, x, y) < before


@pytest.mark.parametrize("name", MODELS)
def test_fit_checkpoint_round_trip(name: str, tmp_path: Path, _real_beats: Beats) -> None:
    """`fit` trains the model end to end (augment, optimisers, steps); its checkpoint reloads exactly."""
    cls = _model_cls(name)
    beats = _real_beats.take(np.random.default_rng(0).choice(len(_real_beats), 128, replace=False))
    result = fit(cls, 4, 280, beats, [(np.arange(96), np.arange(96, 128))], epochs=1, batch_size=32,
                 smote_target=0, device=torch.device("cpu"), seed=0, progress=False)
    model = build(cls, 4, 280, seed=0)
    model.load_state_dict(result.state)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    restored = build(cls, 4, 280, seed=1)
    restored.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    x = torch.as_tensor(beats.x)[:, None]
    assert not torch.equal(build(cls, 4, 280, seed=1).eval()(x), restored.eval()(x)), "loading should change the weights"
    assert torch.equal(model.eval()(x), restored.eval()(x))


@pytest.mark.parametrize("name", AUGMENTING)
def test_augment_balances_and_keeps_real_beats(name: str, _real_beats: Beats) -> None:
    """`augment` replaces SMOTE: real beats first and untouched, each class raised to min(largest, 10,000) (paper 3.1)."""
    rng = np.random.default_rng(0)
    train = _real_beats.take(np.sort(rng.choice(len(_real_beats), 256, replace=False)))
    model = build(_model_cls(name), 4, 280, seed=0)
    state = torch.get_rng_state()
    out = model.augment(train, 3)
    assert torch.equal(state, torch.get_rng_state()), "augment should leave the harness's RNG alone"
    np.testing.assert_array_equal(out.x[: len(train)], train.x)
    np.testing.assert_array_equal(out.y[: len(train)], train.y)
    counts, target = np.bincount(train.y, minlength=4), min(np.bincount(train.y).max(), 10_000)
    assert all(n >= target for n, n0 in zip(out.counts(4), counts) if n0 >= 2)
    synthetic = out.take(np.arange(len(train), len(out)))
    assert len(synthetic) and not synthetic.attacked.any() and np.isin(synthetic.groups, train.groups).sum() == 0
    assert np.isfinite(synthetic.x).all() and synthetic.x.min() >= 0 and synthetic.x.max() <= 1
    np.testing.assert_array_equal(model.augment(train, 3).x, out.x)
