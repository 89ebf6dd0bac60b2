"""Attacks on real MIT-BIH beats and a small trained Kachuee model: contract over the registry, plus the
library traps of docs/attack-libraries.md (ART's float64 candidates, targeted Boundary, missing clip
values) and the paper-reference variants. Budgets are small: the file runs in about a minute on 2 cores.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from ecgbench.api import PluginError
from ecgbench.registry import registry

VALUE_RANGE = (0.0, 1.0)
TOL = 1e-6
RECORDS = ["208", "209", "213", "232"]  # all four AAMI classes, V and F plentiful
# Small budgets, so decision-based attacks finish in seconds; a parameter an attack lacks is dropped.
SMALL = {"boundary": {"queries": 200}, "hsj": {"max_iter": 2, "max_eval": 100, "init_eval": 20},
         "apgd": {"max_iter": 10}}
DECISION = ("boundary", "hsj")


def _cases() -> list:
    return [pytest.param(name, backend, id=f"{name}@{backend}")
            for name in registry.names("attacks") for backend in registry.get("attacks", name).backends]


def _attack(name: str, backend: str | None = None, variant: str | None = None, **params):
    cls = registry.get("attacks", name)
    small = {k: v for k, v in SMALL.get(name, {}).items() if k in cls.defaults and k not in cls.variants.get(variant, {})}
    return cls(backend=backend, variant=variant, **{**small, **params})


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _linf(adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (adv - x).flatten(1).abs().amax(1)


def _success(model, adv, x, y, eps) -> float:
    """Share of beats pushed to a wrong class within eps (the harness's count)."""
    return float(((_predict(model, adv) != y) & (_linf(adv, x) <= eps + TOL)).float().mean())


@pytest.fixture(scope="module")
def mitbih(data_dir, cache_dir):
    """Real beats of four MIT-BIH records, cut once into a temporary cache."""
    from ecgbench.data import load_beats
    from ecgbench.plugins.datasets.mitbih import MitBih

    beats, _, _ = load_beats(MitBih(data_dir, records=RECORDS), cache_dir)
    return beats


@pytest.fixture(scope="module")
def trained(mitbih):
    """Kachuee trained 2 epochs on ~2,000 real beats (500 per class), and the held-out beats."""
    from ecgbench.data import cap_per_class, stratified_split
    from ecgbench.testing import train_reference

    train_idx, test_idx = stratified_split(mitbih.y, 0.3, 0)
    model = train_reference(cap_per_class(mitbih.take(train_idx), 500, 0), 4, epochs=2)
    return model, mitbih.take(test_idx)


@pytest.fixture(scope="module")
def correct(trained):
    """256 held-out beats the model classifies correctly, 64 per class."""
    model, test = trained
    pred = _predict(model, torch.as_tensor(test.x)[:, None]).numpy()
    rng = np.random.default_rng(0)
    pick = np.sort(np.concatenate([rng.permutation(np.flatnonzero((test.y == c) & (pred == c)))[:64] for c in range(4)]))
    assert len(pick) == 256, "the test model classifies too few held-out beats correctly"
    return model, torch.as_tensor(test.x[pick])[:, None], torch.as_tensor(test.y[pick])


@pytest.fixture(scope="module")
def cw_art(correct):
    """ART's C&W L-inf on 5 beats (about a second per beat), shared by the tests that need it."""
    model, x, y = correct
    x, y = x[::51][:5], y[::51][:5]
    return x, y, _attack("cw", "art")(model, x, y, VALUE_RANGE)


# -- contract, over every registered attack and back-end ------------------------------------------
@pytest.mark.parametrize("name,backend", _cases())
def test_attack_lowers_accuracy_and_keeps_its_budget(name, backend, correct, request):
    model, x, y = correct
    attack = _attack(name, backend)
    if (name, backend) == ("cw", "art"):
        x, y, adv = request.getfixturevalue("cw_art")
    else:
        x, y = (x[::16], y[::16]) if name in DECISION else (x[::4], y[::4])
        x_in = x.clone()
        adv = attack(model, x, y, VALUE_RANGE)
        assert torch.equal(x, x_in), "the attack changed its input beats in place"
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert torch.isfinite(adv).all()
    assert float(adv.min()) >= VALUE_RANGE[0] - TOL and float(adv.max()) <= VALUE_RANGE[1] + TOL
    fooled = _predict(model, adv) != y
    assert fooled.any(), f"{attack.label} fooled none of {len(x)} correctly classified beats"
    if getattr(attack, "bounded", True):
        assert float(_linf(adv, x).max()) <= attack.eps + TOL, f"{attack.label} left its eps-ball"
    else:  # a minimisation attack returns its best adversarial, or the clean beat where it found none
        unchanged = _linf(adv, x) == 0
        assert (fooled | unchanged).all(), f"{attack.label} returned beats that are neither adversarial nor clean"


def test_cw_is_bounded_with_torch_and_a_minimisation_attack_with_art():
    assert _attack("cw", "torch").bounded and not _attack("cw", "art").bounded
    assert _attack("cw").backend == "torch"


# -- ART and foolbox agree where they implement the same attack -------------------------------------
def test_art_and_foolbox_pgd_agree(correct):
    model, x, y = correct
    rates = {b: _success(model, _attack("pgd", b)(model, x, y, VALUE_RANGE), x, y, 0.01) for b in ("art", "foolbox")}
    assert 0 < rates["art"] < 1, rates
    assert abs(rates["art"] - rates["foolbox"]) <= 0.05, rates


def test_hsj_backends_spend_equal_queries(correct):
    from ecgbench.plugins.attacks.decision import QueryCounter

    model, x, y = correct
    x, y = x[::32], y[::32]
    used = {}
    for backend in ("art", "foolbox"):
        counter = QueryCounter(model)
        _attack("hsj", backend)(counter, x, y, VALUE_RANGE)
        used[backend] = counter.used / len(x)
    assert used["art"] == pytest.approx(used["foolbox"], rel=0.25), used


def test_boundary_backends_spend_the_query_budget(correct):
    from ecgbench.plugins.attacks.decision import QueryCounter, foolbox_boundary_steps

    assert [foolbox_boundary_steps(q) for q in (0, 10, 11, 1100)] == [0, 9, 10, 1000]  # step 10 costs 2
    model, x, y = correct
    x, y = x[::32], y[::32]
    for backend in ("art", "foolbox"):
        counter = QueryCounter(model)
        _attack("boundary", backend, queries=150)(counter, x, y, VALUE_RANGE)
        # ART may leave up to one 20-candidate query unspent; the starting point and the libraries'
        # own checks cost ~15 queries a beat on top (a few noise draws, 12 bisection steps)
        assert 150 - 20 <= counter.used / len(x) <= 150 + 40, (backend, counter.used / len(x))


def test_decision_attacks_are_seeded(correct):
    model, x, y = correct
    x, y = x[::32], y[::32]
    for name in DECISION:
        runs = [_attack(name, "foolbox", seed=s)(model, x, y, VALUE_RANGE) for s in (1, 1, 2)]
        assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2]), name


# -- the traps of docs/attack-libraries.md --------------------------------------------------------
def _raw_art(model: nn.Module, clip: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.estimators.classification import PyTorchClassifier
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 280), nb_classes=4,
                             clip_values=VALUE_RANGE if clip else None, device_type="cpu")


def test_art_decision_attacks_crash_on_float64_without_the_float32_wrapper(correct):
    from art.attacks.evasion import HopSkipJump

    model, x, _ = correct
    with pytest.raises(RuntimeError, match="double"):  # ART issue #2475; adapters.Float32 is the fix
        HopSkipJump(_raw_art(model, clip=True), max_iter=0, init_size=10, verbose=False).generate(x[:2].numpy())
    # ... and through ecgbench.adapters.art_classifier both ART decision attacks run:
    for name in DECISION:
        adv = _attack(name, "art")(model, x[:2], _predict(model, x[:2]), VALUE_RANGE)
        assert adv.dtype == torch.float32


def test_art_without_clip_values_leaves_the_value_range(correct):
    from art.attacks.evasion import FastGradientMethod

    model, x, y = correct
    adv = FastGradientMethod(_raw_art(model, clip=False), eps=0.05).generate(x[:16].numpy(), y=y[:16].numpy())
    assert adv.min() < VALUE_RANGE[0] or adv.max() > VALUE_RANGE[1]  # why adapters.art_classifier states clip_values
    safe = _attack("fgsm", "art", eps=0.05)(model, x[:16], y[:16], VALUE_RANGE)
    assert float(safe.min()) >= VALUE_RANGE[0] and float(safe.max()) <= VALUE_RANGE[1]


def test_boundary_is_untargeted(correct):
    from art.attacks.evasion import BoundaryAttack

    from ecgbench.adapters import art_classifier

    model, x, y = correct
    x, y = x[::32], y[::32]
    # ART's default targeted=True, given the true labels, silently returns the beats unchanged ...
    trap = BoundaryAttack(art_classifier(model, x, 4, VALUE_RANGE), max_iter=5, verbose=False).generate(x.numpy(), y=y.numpy())
    assert np.array_equal(trap, x.numpy())
    # ... ours changes every prediction it can find a start for, and does not clip to eps
    for backend in ("art", "foolbox"):
        adv = _attack("boundary", backend)(model, x, y, VALUE_RANGE)
        assert (_predict(model, adv) != y).float().mean() >= 0.75, backend
        assert float(_linf(adv, x).median()) > 0.01, backend


def test_decision_attacks_return_misclassified_beats_unchanged(correct):
    model, x, y = correct
    x, wrong = x[:4], (y[:4] + 1) % 4  # labels the model disagrees with: already "adversarial" at distance 0
    for name in DECISION:
        assert torch.equal(_attack(name, "foolbox")(model, x, wrong, VALUE_RANGE), x), name


# -- paper-reference variants: ART with max_iter=0, which is no attack ------------------------------
def test_boundary_paper_reference_returns_noise_or_the_clean_beat(correct):
    model, x, y = correct
    x, y = x[::16], y[::16]
    attack = _attack("boundary", variant="paper-reference", queries=999)
    assert attack.backend == "art" and attack.params["queries"] == 0
    adv = attack(model, x, y, VALUE_RANGE)
    dist = _linf(adv, x)
    noise = dist > 0.3  # a uniform draw over [0, 1], not a perturbation
    assert ((dist == 0) | noise).all(), dist
    assert (_predict(model, adv)[noise] != y[noise]).all()
    assert _success(model, adv, x, y, attack.eps) == 0


def test_hsj_paper_reference_is_a_noise_blend_far_outside_eps(correct):
    model, x, y = correct
    x, y = x[::16], y[::16]
    attack = _attack("hsj", variant="paper-reference")
    assert attack.backend == "art" and attack.params["max_iter"] == 0
    adv = attack(model, x, y, VALUE_RANGE)
    dist = _linf(adv, x)
    # ART's unseeded noise search, then a blend towards the beat: far outside eps, or the clean beat
    # where no draw fooled the model; now and then a blend ends within eps (1 of 256 beats measured)
    assert float(dist.median()) > 10 * attack.eps, dist
    assert ((dist == 0) | (dist > attack.eps)).float().mean() >= 14 / 16, dist


@pytest.mark.parametrize("name", DECISION)
def test_paper_reference_has_no_foolbox_form(name):
    with pytest.raises(PluginError, match=f"{name}@art:paper-reference"):
        _attack(name, "foolbox", variant="paper-reference")


# -- APGD and CW ----------------------------------------------------------------------------------
def test_apgd_dlr_runs_on_four_classes_and_errors_clearly_on_two(correct):
    from ecgbench.baselines.kachuee import Kachuee

    model, x, y = correct
    adv = _attack("apgd", variant="dlr")(model, x[::8], y[::8], VALUE_RANGE)
    assert float(_linf(adv, x[::8]).max()) <= 0.01 + TOL
    torch.manual_seed(0)
    two = Kachuee(2, x.shape[-1]).eval()
    with pytest.raises(PluginError, match=r"apgd@art:dlr.*at least 3 classes.*has 2"):
        _attack("apgd", variant="dlr")(two, x[:4], y[:4] % 2, VALUE_RANGE)
    with pytest.raises(PluginError, match="no loss"):
        _attack("apgd", loss="hinge")


def test_cw_torch_at_least_as_strong_as_cw_art(correct, cw_art):
    model, _, _ = correct
    x, y, adv_art = cw_art
    adv_torch = _attack("cw", "torch")(model, x, y, VALUE_RANGE)
    assert _success(model, adv_torch, x, y, 0.1) >= _success(model, adv_art, x, y, 0.1)
    # ART's returns its smallest adversarial (no eps): fooled beats lie wherever its search stopped
    assert float(adv_art.min()) >= 0 and float(adv_art.max()) <= 1
