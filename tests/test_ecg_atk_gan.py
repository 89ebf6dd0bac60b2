"""ECG-ATK-GAN: each loss term against eqs. 1-5 by hand, the generator, the noise, the heads, Table 3's metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecgbench.metrics import similarity
from ecgbench.baselines.ecg_atk_gan import (
    EcgAtkGan, gaussian_kernel, loss_adv_d, loss_adv_g, loss_ary, loss_atk, loss_mse, smooth_noise,
)
from ecgbench.engine.train import build
from ecgbench.engine.steps import phased_step, training_hooks


@pytest.fixture(scope="module")
def model() -> EcgAtkGan:
    return build(EcgAtkGan, 4, 280, seed=0)


def _log_softmax(row: list[float], i: int) -> float:
    return row[i] - math.log(sum(math.exp(v) for v in row))


def test_loss_atk_is_eq1_with_kappa() -> None:
    logits, flag = [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0, 1, 1]
    kappa = (1.0, 1.05)  # paper 3.2
    by_hand = -sum(kappa[f] * _log_softmax(r, f) for r, f in zip(logits, flag)) / 3
    got = loss_atk(torch.tensor(logits), torch.tensor(flag))
    assert got.item() == pytest.approx(by_hand, rel=1e-6)
    unweighted = loss_atk(torch.tensor(logits), torch.tensor(flag), kappa=(1.0, 1.0))
    assert got.item() > unweighted.item()  # attacked beats weigh 5% more


def test_loss_ary_is_eq2() -> None:
    logits, y = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], [1, 0]
    by_hand = -(_log_softmax(logits[0], 1) + _log_softmax(logits[1], 0)) / 2
    assert loss_ary(torch.tensor(logits), torch.tensor(y)).item() == pytest.approx(by_hand, rel=1e-6)


def test_loss_mse_is_eq3_over_clean_beats() -> None:
    fake = torch.tensor([[[0.5, 0.5]], [[1.0, 0.0]], [[0.2, 0.2]]])
    target = torch.tensor([[[0.0, 1.0]], [[1.0, 1.0]], [[0.0, 0.0]]])
    assert loss_mse(fake, target).item() == pytest.approx((0.25 + 0.25 + 0 + 1 + 0.04 + 0.04) / 6)
    clean = torch.tensor([1, 0, 1]).bool()
    assert loss_mse(fake, target, clean).item() == pytest.approx((0.25 + 0.25 + 0.04 + 0.04) / 4)
    none = loss_mse(fake.requires_grad_(), target, torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad  # a batch of attacked beats only still backpropagates


def test_loss_adv_is_eq4_least_squares() -> None:
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.5])
    assert loss_adv_d(real, fake).item() == pytest.approx((0 + 1) / 2 + (0 + 2.25) / 2)
    assert loss_adv_g(fake).item() == pytest.approx((4 + 0.25) / 2)


def test_training_step_is_eq5_with_paper_weights(model: EcgAtkGan) -> None:
    """One step returns D's plus G's loss of eq. 5 with lambda_atk = lambda_ary = 10, lambda_mse = 1 (paper 3.2)."""
    torch.manual_seed(1)
    x, y, flag = torch.rand(8, 1, 280), torch.randint(0, 4, (8,)), torch.tensor([0, 1] * 4)
    frozen = [torch.optim.SGD(m.parameters(), lr=0.0) for m in (model.discriminator, model.generator)]
    model.train()
    torch.manual_seed(2)
    got = phased_step(model, x, y, flag, frozen)
    torch.manual_seed(2)  # the same z and dropout masks, drawn in the step's order
    d, fake = model.discriminator, model.generator(x, y)
    h, h_fake, h_fake_g = d.features(x), d.features(fake), d.features(fake)
    loss_d = loss_adv_d(d.real_fake(h, y), d.real_fake(h_fake, y)) + 10 * loss_atk(d.atk(h), flag) + 10 * loss_ary(d.ary(h), y)
    loss_g = (loss_adv_g(d.real_fake(h_fake_g, y)) + 1 * loss_mse(fake, x, flag == 0)
              + 10 * loss_atk(d.atk(h_fake_g), flag) + 10 * loss_ary(d.ary(h_fake_g), y))
    assert got == pytest.approx((loss_d + loss_g).item(), rel=1e-5)


def test_training_step_moves_both_nets() -> None:
    m = build(EcgAtkGan, 4, 280, seed=3)
    g0, d0 = [p.clone() for p in m.generator.parameters()], [p.clone() for p in m.discriminator.parameters()]
    x, y, flag = torch.rand(8, 1, 280), torch.randint(0, 4, (8,)), torch.zeros(8, dtype=torch.long)
    optimizers, step = training_hooks(m.train())
    step(x, y, flag, optimizers)
    assert any(not torch.equal(a, b) for a, b in zip(g0, m.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, m.discriminator.parameters()))


@pytest.mark.parametrize("window", [280, 187])
@pytest.mark.parametrize("train", [True, False])
def test_generator_output_in_unit_range_and_input_length(window: int, train: bool) -> None:
    m = build(EcgAtkGan, 4, window, seed=0).train(train)
    out = m.generate(torch.rand(6, 1, window), torch.arange(6) % 4)
    assert out.shape == (6, 1, window)
    assert out.min() >= 0 and out.max() <= 1


def test_noise_is_uniform_gaussian_smoothed_and_used(model: EcgAtkGan) -> None:
    """z: [0, 1] floats (paper 3.2) through a sigma-3 Gaussian (paper 2.1); never all zero (the reference code's bug)."""
    from scipy.ndimage import gaussian_filter1d

    z = model.generator.noise(64, 280)
    assert z.shape == (64, 1, 280) and z.abs().sum() > 0 and z.min() >= 0 and z.max() <= 1
    raw = torch.rand(64, 1, 280)
    assert z.diff().abs().mean() < 0.1 * raw.diff().abs().mean()
    assert not torch.equal(z, model.generator.noise(64, 280))
    torch.manual_seed(4)
    smoothed = smooth_noise(2, 280, gaussian_kernel(3.0))
    torch.manual_seed(4)
    scipy_smoothed = gaussian_filter1d(torch.rand(2, 1, 280).numpy(), 3.0, axis=-1)
    np.testing.assert_allclose(smoothed[..., 20:-20].numpy(), scipy_smoothed[..., 20:-20], atol=1e-6)
    model.eval()
    x, y = torch.rand(2, 1, 280), torch.tensor([0, 1])
    assert not torch.equal(model.generator(x, y), model.generator(x, y))


def test_heads(model: EcgAtkGan) -> None:
    """`forward` is the arrhythmia head (what attacks target); `detect` the attacked-vs-clean head."""
    model.eval()
    x = torch.rand(5, 1, 280)
    d = model.discriminator
    assert torch.equal(model(x), d.ary(d.features(x))) and model(x).shape == (5, 4)
    assert torch.equal(model.detect(x), d.atk(d.features(x))) and model.detect(x).shape == (5, 2)


def test_similarity_of_identical_and_perturbed_beats() -> None:
    t = np.linspace(0, 1, 280)
    a = np.stack([np.exp(-((t - c) ** 2) / 0.002) * 0.8 + 0.1 for c in (0.4, 0.5, 0.6)])
    same = similarity(a, a)
    assert same["mse"] == 0 and same["nrmse"] == 0
    assert same["ssim"] == pytest.approx(1.0) and same["correlation"] == pytest.approx(1.0)
    noisy = a + np.random.default_rng(0).normal(0, 0.05, a.shape)
    s = similarity(a, noisy)
    assert s["mse"] == pytest.approx(np.mean((a - noisy) ** 2))
    assert 0 < s["ssim"] < 0.95 and 0.5 < s["correlation"] < 1 and s["nrmse"] > 0
    worse = similarity(a, a + np.random.default_rng(0).normal(0, 0.2, a.shape))
    assert worse["ssim"] < s["ssim"] and worse["correlation"] < s["correlation"] and worse["mse"] > s["mse"]
    with pytest.raises(ValueError, match="one shape"):
        similarity(a, a[:, :100])
