"""`ecgbench.engine.accel`: the 2D-kernel twins of Conv1d / ConvTranspose1d / BatchNorm1d compute what the originals do.

Checked on the CPU for every registered model: state_dict keys and shapes; in float64, the same
logits, input and parameter gradients, BatchNorm statistics and one step of the model's own
training hook to 1e-9 (the same function, whatever the summation order); in float32, the same
logits within float tolerance. (Float32 gradients differ by up to ~1e-3 relative on ECG-ATK-GAN's
discriminator: BatchNorm over near-constant channels and max-pool near-ties amplify rounding; in
float64 the difference is 1e-15.) The CUDA paths run only where CUDA is available.
"""
from __future__ import annotations

import copy
from typing import Iterator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ecgbench.engine.accel import BatchNorm1dAs2d, ContiguousDropout, Conv1dAs2d, ConvTranspose1dAs2d, GraphedStep, accelerate, convert, enabled
from ecgbench.contracts.registry import registry
from ecgbench.engine.train import build
from ecgbench.engine.steps import classifier_step, default_optimizers, training_hooks

MODELS = registry.names("models")
TOL = dict(rtol=1e-4, atol=1e-5)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _beats(n: int = 12, window: int = 280, seed: int = 0) -> torch.Tensor:
    """Random-walk beats min-max scaled to [0, 1], shaped like the harness's [n, 1, window]."""
    x = torch.cumsum(torch.randn(n, 1, window, generator=torch.Generator().manual_seed(seed)), -1)
    return (x - x.amin(-1, keepdim=True)) / (x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True))


def _pair(name: str, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, nn.Module]:
    plain = build(registry.get("models", name), 4, 280, seed=0).to(dtype)
    return plain, convert(copy.deepcopy(plain))


@pytest.fixture
def float64() -> Iterator[None]:
    """float64 by default, so noise a model draws inside its step (ECG-ATK-GAN's z) matches its weights."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


def _assert_close_by_norm(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float, what: str) -> None:
    """Each tensor of `b` within rtol of `a`'s in norm, or within rtol of the whole set's norm: a bias that feeds a
    BatchNorm has a gradient that is zero but for rounding, so only the second bound applies to it."""
    assert a.keys() == b.keys() and a
    total = torch.cat([t.flatten().double() for t in a.values()]).norm()
    for k in a:
        err, size = (a[k].double() - b[k].double()).norm(), a[k].double().norm()
        assert err <= rtol * size + rtol * 1e-2 * total, f"{what} {k}: |difference| {err:.3g}, |tensor| {size:.3g}, |all| {total:.3g}"


def _swapped(model: nn.Module) -> int:
    return sum(isinstance(m, (Conv1dAs2d, ConvTranspose1dAs2d, BatchNorm1dAs2d, ContiguousDropout)) for m in model.modules())


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_keys_shapes_and_values_unchanged(name: str) -> None:
    plain, fast = _pair(name)
    a, b = plain.state_dict(), fast.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
    # a checkpoint of either loads strictly into the other
    build(registry.get("models", name), 4, 280, seed=1).load_state_dict(b)
    convert(build(registry.get("models", name), 4, 280, seed=1)).load_state_dict(a)
    n_1d = sum(type(m) in (nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d, nn.Dropout) for m in plain.modules())
    assert _swapped(fast) == n_1d and not any(type(m) in (nn.Conv1d, nn.ConvTranspose1d) for m in fast.modules())


@pytest.mark.parametrize("name", MODELS)
def test_float32_logits_agree(name: str) -> None:
    plain, fast = _pair(name)
    x = _beats()
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x), plain.eval()(x), **TOL)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_same_function_and_gradients(name: str, mode: str, float64: None) -> None:
    """Forward and backward agree in float64, in eval mode and in train mode (batch statistics, one dropout seed)."""
    plain, fast = _pair(name, torch.float64)
    x, y = _beats().double(), torch.arange(12) % 4
    grads = []
    for model in (plain, fast):
        model.train(mode == "train")
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(1)  # one dropout mask for both
        logits = model(xi)
        F.cross_entropy(logits, y).backward()
        grads.append((logits.detach(), xi.grad, {k: p.grad for k, p in model.named_parameters() if p.grad is not None}))
    (la, ga, pa), (lb, gb, pb) = grads
    torch.testing.assert_close(lb, la, rtol=1e-9, atol=1e-12)
    _assert_close_by_norm({"input": ga}, {"input": gb}, 1e-9, f"{name} gradient")
    _assert_close_by_norm(pa, pb, 1e-9, f"{name} gradient")
    for (k, a), (_, b) in zip(plain.named_buffers(), fast.named_buffers()):  # BatchNorm running statistics
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, msg=lambda m, k=k: f"{name} buffer {k}: {m}")


@pytest.mark.parametrize("name", MODELS)
def test_own_training_hook_moves_the_same_way(name: str, float64: None) -> None:
    """One step of the model's own hook (ECG-ATK-GAN: D then G, frozen BN statistics, D's weights held) with SGD in
    place of its optimisers: SGD moves each parameter by lr * gradient, so equal moves mean equal gradients. The
    rate is small so that G's gradient, taken through the D just updated, is taken at nearly one point for both;
    G's noise and the dropout masks are drawn from one seed for both."""
    plain, fast = _pair(name, torch.float64)
    x, y = _beats(16).double(), torch.arange(16) % 4
    flag = torch.arange(16) % 2 if getattr(plain, "wants_attacked", False) else torch.zeros(16, dtype=torch.long)
    out = []
    for model in (plain, fast):
        model.train()
        optimizers, step = training_hooks(model)
        sgd = [torch.optim.SGD([p for g in o.param_groups for p in g["params"]], lr=1e-4) for o in optimizers]
        torch.manual_seed(2)
        out.append(float(step(x, y, flag, sgd)))
    assert out[0] == pytest.approx(out[1], rel=1e-9)
    init = build(type(plain), 4, 280, seed=0).double().state_dict()
    a, b = plain.state_dict(), fast.state_dict()
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], init[k])]
    assert moved
    floats = [k for k in a if a[k].is_floating_point()]
    _assert_close_by_norm({k: a[k] - init[k] for k in floats}, {k: b[k] - init[k] for k in floats}, 1e-8, f"{name} step")
    assert all(torch.equal(a[k], b[k]) for k in a.keys() - set(floats))  # BatchNorm batch counts


@pytest.mark.parametrize("kw", [
    dict(kernel_size=5, padding=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, dilation=2, padding=1),
    dict(kernel_size=4, stride=2, padding=1, bias=False), dict(kernel_size=3, padding="same"), dict(kernel_size=3, groups=2),
    dict(kernel_size=5, padding=2, padding_mode="reflect"), dict(kernel_size=3, padding=1, padding_mode="replicate"),
    dict(kernel_size=3, padding=2, padding_mode="circular"),
], ids=str)
@pytest.mark.parametrize("channels_last", [True, False])
def test_conv1d_twin_matches_conv1d(kw: dict, channels_last: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 6, **kw)
    twin = Conv1dAs2d(conv, channels_last)
    assert twin.weight is conv.weight and twin.bias is conv.bias
    x = torch.randn(3, 4, 37, requires_grad=True)
    torch.testing.assert_close(twin(x), conv(x), **TOL)
    torch.testing.assert_close(twin(x[0]), conv(x[0]), **TOL)  # unbatched input
    (ga,) = torch.autograd.grad(conv(x).square().sum(), x)
    (gb,) = torch.autograd.grad(twin(x).square().sum(), x)
    torch.testing.assert_close(gb, ga, **TOL)


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, output_padding=1), dict(stride=3, padding=0, dilation=2), dict(stride=1, groups=2)], ids=str)
def test_conv_transpose1d_twin_matches(kw: dict) -> None:
    torch.manual_seed(0)
    conv = nn.ConvTranspose1d(4, 6, 3, **kw)
    twin = ConvTranspose1dAs2d(conv)
    x = torch.randn(3, 4, 20, requires_grad=True)
    torch.testing.assert_close(twin(x), conv(x), **TOL)
    d = kw.get("dilation", 1)
    size = (20 - 1) * kw["stride"] - 2 * kw.get("padding", 0) + d * 2 + 1 + kw["stride"] - 1  # the largest valid size
    torch.testing.assert_close(twin(x, output_size=[size]), conv(x, output_size=[size]), **TOL)
    (ga,) = torch.autograd.grad(conv(x).square().sum(), x)
    (gb,) = torch.autograd.grad(twin(x).square().sum(), x)
    torch.testing.assert_close(gb, ga, **TOL)


@pytest.mark.parametrize("shape", [(8, 5, 30), (8, 5)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm1d_twin_shares_buffers_and_statistics(shape: tuple[int, ...], momentum: float | None) -> None:
    bn = nn.BatchNorm1d(5, momentum=momentum)
    ref = copy.deepcopy(bn)
    twin = BatchNorm1dAs2d.from_module(bn)
    assert twin.running_mean is bn.running_mean and twin.weight is bn.weight
    assert list(twin.state_dict()) == list(ref.state_dict())
    x = torch.randn(*shape) * 3 + 1
    for _ in range(2):
        torch.testing.assert_close(twin(x), ref(x), **TOL)
    torch.testing.assert_close(twin.running_var, ref.running_var, **TOL)
    assert int(twin.num_batches_tracked) == int(ref.num_batches_tracked) == 2
    twin.eval(), ref.eval()
    torch.testing.assert_close(twin(x), ref(x), **TOL)
    with pytest.raises(ValueError, match="5D"):
        twin(torch.randn(2, 5, 1, 1, 3))


def test_accelerate_is_off_on_the_cpu_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build(registry.get("models", "kachuee"), 4, 280, seed=0)
    assert accelerate(model, torch.device("cpu")) is model and _swapped(model) == 0
    monkeypatch.setenv("ECGBENCH_ACCEL", "0")
    assert not enabled("ECGBENCH_ACCEL", True)
    monkeypatch.setenv("ECGBENCH_ACCEL", "all")
    assert accelerate(model, torch.device("cpu")) is model and _swapped(model) > 0
    monkeypatch.setenv("ECGBENCH_ACCEL", "maybe")
    with pytest.raises(ValueError, match="ECGBENCH_ACCEL='maybe'"):
        enabled("ECGBENCH_ACCEL", True)


def test_graphed_step_refuses_cpu_tensors() -> None:
    model = build(registry.get("models", "kachuee"), 4, 280, seed=0)
    x, y = _beats(8), torch.arange(8) % 4
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedStep(lambda *a: classifier_step(model, *a), model, default_optimizers(model), x, y, torch.zeros_like(y), 4)


# -- CUDA only --------------------------------------------------------------------------------
@cuda
@pytest.mark.parametrize("name", MODELS)
def test_accelerated_on_cuda_matches_plain(name: str) -> None:
    device = torch.device("cuda")
    plain = build(registry.get("models", name), 4, 280, seed=0).to(device).eval()
    fast = accelerate(copy.deepcopy(plain), device)
    x = _beats().to(device)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-3, atol=1e-4)
    assert list(fast.state_dict()) == list(plain.state_dict())


@cuda
@pytest.mark.parametrize("name", ["kachuee", "acharya"])
def test_graphed_step_trains_like_the_eager_step(name: str) -> None:
    """Replaying the captured step on the same batches moves the weights as eager steps do (TF32 off for both)."""
    device = torch.device("cuda")
    x, y = _beats(64).to(device), (torch.arange(64) % 4).to(device)
    flag = torch.zeros_like(y)
    batches = torch.randperm(64, generator=torch.Generator().manual_seed(0)).to(device).split(16)
    states, losses = [], []
    torch.backends.cudnn.allow_tf32, saved = False, torch.backends.cudnn.allow_tf32
    try:
        for graphs in (False, True):
            model = accelerate(build(registry.get("models", name), 4, 280, seed=0).to(device), device).train()
            optimizers, step = training_hooks(model)
            if graphs:
                g = GraphedStep(step, model, optimizers, x, y, flag, 16)
                for b in batches:
                    g(b)
                losses.append(g.take_loss_sum())
            else:
                losses.append(sum(float(step(x[b], y[b], flag[b], optimizers)) for b in batches))
            states.append(model.state_dict())
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    for k in states[0]:
        torch.testing.assert_close(states[1][k], states[0][k], rtol=1e-3, atol=1e-5)
