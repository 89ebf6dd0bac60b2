"""Attacks: what each one guarantees, asserted where the answer is known.

- Contract on a small trained Kachuee and real MIT-BIH beats, over every registered attack and back-end:
  the input is untouched; shape, dtype, device and value range hold; a bounded attack stays in its
  eps-ball; a minimisation attack returns an adversarial beat or the clean one. Nothing here depends on
  how many beats one trained net happens to lose.
- A half-space on real beats (`MeanAbove`: class 1 where the beat's mean exceeds TAU). The smallest
  L-inf change that flips a beat is computable (`min_linf`), so: a beat that needs less than eps/2 must
  flip, one that needs more than eps cannot, and no minimisation attack ends closer than that minimum.
  Uniform noise (mean 0.5) is always class 1, so decision attacks find a start exactly for class-0 beats.
  The model computes in float64, so a point it calls adversarial stays so whatever the batch.
- Query budgets counted exactly through `QueryCounter`; seeds; the library traps of
  docs/attack-libraries.md; the paper-reference variants (ART with max_iter=0, unseeded by ART's design).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from ecgbench.contracts import PluginError
from ecgbench.plugins.attacks.decision import BISECT_STEPS, QueryCounter, foolbox_boundary_steps, starting_points
from ecgbench.plugins.attacks.square import grid_side
from ecgbench.contracts.registry import registry

VALUE_RANGE = (0.0, 1.0)
TOL = 1e-6
TAU = 0.40  # the half-space's threshold on the beat mean; noise means are 0.5 +- 0.017, never below it
RECORDS = ["208", "209", "213", "232"]  # all four AAMI classes, V and F plentiful
# Small budgets, so decision-based attacks finish in seconds; a parameter an attack lacks is dropped.
SMALL = {"boundary": {"queries": 200}, "hsj": {"max_iter": 2, "max_eval": 100, "init_eval": 20},
         "apgd": {"max_iter": 10}, "apgd-t": {"max_iter": 10}, "square": {"queries": 300}}
DECISION = ("boundary", "hsj")
OURS = {"fgsm": "gradient", "bim": "gradient", "pgd": "gradient", "apgd": "gradient", "apgd-t": "gradient", "cw": "gradient",
        "boundary": "decision", "hsj": "decision", "square": "score"}


def _cases(names=None) -> list:
    return [pytest.param(name, backend, id=f"{name}@{backend}")
            for name in (names or registry.names("attacks")) for backend in registry.get("attacks", name).backends]


def _attack(name: str, backend: str | None = None, variant: str | None = None, **params):
    cls = registry.get("attacks", name)
    small = {k: v for k, v in SMALL.get(name, {}).items() if k in cls.defaults and k not in cls.variants.get(variant, {})}
    return cls(backend=backend, variant=variant, **{**small, **params})


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _linf(adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (adv - x).flatten(1).abs().amax(1)


def _run(attack, model, x, y, seed: int = 0) -> torch.Tensor:
    """The attack with numpy's and torch's global generators seeded, as the runner calls it."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    return attack(model, x, y, VALUE_RANGE)


def _in_range(adv: torch.Tensor) -> bool:
    return float(adv.min()) >= VALUE_RANGE[0] - TOL and float(adv.max()) <= VALUE_RANGE[1] + TOL


# -- the half-space -------------------------------------------------------------------------------
class MeanAbove(nn.Module):
    """Class 1 where mean(x) > TAU, else class 0; classes 2 and 3 never win (the DLR loss needs them).

    Logits (-d, d, -|d| - 1, -|d| - 2) with d = 100 (mean - TAU) in float64: the runner-up is always the
    other of classes 0 and 1, so every loss's gradient is a constant sign over the beat.
    """

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = ((x.double().flatten(1).mean(1) - TAU) * 100).float()
        return torch.stack([-d, d, -d.abs() - 1, -d.abs() - 2], 1)[:, :self.n_classes]


def min_linf(x: np.ndarray) -> np.ndarray:
    """Per beat, the smallest L-inf change within [0, 1] that moves the mean across TAU: every sample
    shifted towards TAU by delta and clipped, delta found by bisection (float64)."""
    m = x.mean(-1)
    up = (m <= TAU)[:, None]
    lo, hi = np.zeros(len(x)), np.ones(len(x))
    for _ in range(60):
        mid = (lo + hi) / 2
        moved = np.where(up, np.minimum(x + mid[:, None], 1.0), np.maximum(x - mid[:, None], 0.0)).mean(-1)
        crossed = np.where(up[:, 0], moved > TAU, moved <= TAU)
        hi, lo = np.where(crossed, mid, hi), np.where(crossed, lo, mid)
    return hi


@pytest.fixture(scope="module")
def mitbih(data_dir, cache_dir):
    """Real beats of four MIT-BIH records, cut once into a temporary cache."""
    from ecgbench.data.catalog import load_beats
    from ecgbench.plugins.datasets.mitbih import MitBih

    beats, _, _ = load_beats(MitBih(data_dir, records=RECORDS), cache_dir)
    return beats


@pytest.fixture(scope="module")
def halfspace(mitbih):
    """`MeanAbove` and 24 real beats: 8 class-0 beats 0.001-0.004 below TAU ("near": they flip at
    L-inf < 0.005 = eps/2), 8 class-0 beats 0.05-0.1 below ("far": they need more than 0.05), and 4
    near and 4 far class-1 beats. Returns (model, x, y, near mask, minimal L-inf per beat)."""
    m = mitbih.x.astype(np.float64).mean(1)
    bands = [(TAU - 0.004, TAU - 0.001, 8), (TAU - 0.1, TAU - 0.05, 8), (TAU + 0.001, TAU + 0.004, 4), (TAU + 0.05, TAU + 0.1, 4)]
    idx = np.concatenate([np.flatnonzero((m > a) & (m < b))[:k] for a, b, k in bands])
    assert len(idx) == 24, "the MIT-BIH records hold too few beats in one of the mean bands"
    x = torch.as_tensor(mitbih.x[idx].astype(np.float32))[:, None]
    model = MeanAbove()
    y = _predict(model, x)
    dstar = torch.as_tensor(min_linf(x[:, 0].double().numpy()), dtype=torch.float32)
    assert torch.equal(y, torch.tensor([0] * 16 + [1] * 8)) and float(dstar[:8].max()) < 0.005 and float(dstar[8:16].min()) > 0.05
    return model, x, y, dstar < 0.005, dstar


# -- a trained net, for the contract -------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(mitbih):
    """Kachuee trained 2 epochs on ~2,000 real beats (500 per class), and 32 held-out beats."""
    from ecgbench.contracts.splits import stratified_split
    from ecgbench.data.beats import cap_per_class
    from ecgbench.kit.testing import train_reference

    train_idx, test_idx = stratified_split(mitbih.y, 0.3, 0)
    model = train_reference(cap_per_class(mitbih.take(train_idx), 500, 0), 4, epochs=2)
    test = cap_per_class(mitbih.take(test_idx), 8, 0)
    return model, torch.as_tensor(test.x)[:, None], torch.as_tensor(test.y)


@pytest.mark.parametrize("name,backend", _cases())
def test_attack_contract_on_a_trained_net(name, backend, trained):
    model, x, y = trained
    attack = _attack(name, backend)
    if (name, backend) == ("cw", "art"):  # ART's C&W L-inf: about a second a beat
        x, y = x[::8], y[::8]
    elif name in DECISION:
        x, y = x[::2], y[::2]
    x_in = x.clone()
    adv = _run(attack, model, x, y)
    assert torch.equal(x, x_in), "the attack changed its input beats in place"
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert torch.isfinite(adv).all() and _in_range(adv)
    if attack.bounded:
        assert float(_linf(adv, x).max()) <= attack.eps + TOL, f"{attack.label} left its eps-ball"
    else:  # its best adversarial (on the decision boundary, up to float noise), or the clean beat
        with torch.no_grad():
            logits = model(adv)
        true = logits.gather(1, y[:, None])[:, 0]
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        unchanged = _linf(adv, x) == 0
        assert ((other - true >= -1e-4) | unchanged).all(), f"{attack.label} returned beats neither adversarial nor clean"


# -- bounded attacks on the half-space -----------------------------------------------------------
BOUNDED = [pytest.param(n, b, v, id=f"{n}@{b}" + (f":{v}" if v else "")) for n, b, v in
           [("fgsm", "art", None), ("fgsm", "foolbox", None), ("bim", "art", None), ("bim", "foolbox", None),
            ("pgd", "art", None), ("pgd", "foolbox", None), ("apgd", "art", None), ("apgd", "art", "dlr"),
            ("apgd", "torch", None), ("apgd", "torch", "dlr"), ("apgd-t", "torch", None),
            ("cw", "torch", None), ("square", "art", None), ("square", "torch", None)]]


@pytest.mark.parametrize("name,backend,variant", BOUNDED)
def test_bounded_attacks_flip_exactly_the_beats_within_reach(name, backend, variant, halfspace):
    """eps 0.01: every near beat (minimal L-inf < eps/2) flips, no far beat (> 5 eps) does. For the
    gradient attacks this is exact (the loss gradient has one sign); Square is a random search: with
    300 queries it flipped all 12 near beats for each of 40 seeds, and already with 150."""
    model, x, y, near, dstar = halfspace
    attack = _attack(name, backend, variant, eps=0.01)
    adv = _run(attack, model, x, y)
    assert float(_linf(adv, x).max()) <= 0.01 + TOL and _in_range(adv)
    fooled = _predict(model, adv) != y
    assert fooled[near].all(), f"{attack.label} missed near beats: {dstar[near & ~fooled].tolist()}"
    assert not fooled[dstar > 0.01].any()


@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd"])
def test_art_and_foolbox_reach_the_same_optimal_corner(name, halfspace):
    """On a half-space the best eps-bounded beat is known: every sample moved by eps towards TAU,
    clipped. FGSM steps there at once; BIM and PGD (from any random start) get there in their steps."""
    model, x, y, _, _ = halfspace
    corner = torch.where(y[:, None, None] == 0, (x + 0.01).clamp(max=1), (x - 0.01).clamp(min=0))
    for backend in ("art", "foolbox"):
        adv = _run(_attack(name, backend), model, x, y)
        assert torch.allclose(adv, corner, atol=1e-6), backend


# -- decision attacks on the half-space ----------------------------------------------------------
@pytest.mark.parametrize("name,backend", _cases(DECISION))
def test_decision_attacks_are_untargeted_and_never_beat_the_minimum(name, backend, halfspace):
    """Every class-0 beat gets a start (noise is class 1) and comes back labelled 1, never its own label,
    at an L-inf distance no smaller than the analytic minimum; a class-1 beat has no start and comes
    back unchanged. Boundary also never ends farther (L2) than its start."""
    model, x, y, _, dstar = halfspace
    adv = _run(_attack(name, backend), model, x, y)
    started = y == 0
    assert _in_range(adv) and torch.equal(adv[~started], x[~started])
    assert (_predict(model, adv[started]) == 1).all()
    assert (_linf(adv, x)[started] >= dstar[started] * (1 - 1e-4)).all()
    if name == "boundary":
        start, found = starting_points(model, x[started], y[started], VALUE_RANGE, 100, torch.Generator().manual_seed(0))
        assert found.all()
        l2 = lambda a: (a - x[started]).flatten(1).norm(dim=1)  # noqa: E731
        assert (l2(adv[started]) <= l2(start) * (1 + 1e-5)).all()


def test_art_boundary_is_targeted_by_default_and_ours_is_not(halfspace):
    """ART's BoundaryAttack defaults to targeted=True: given the true labels it returns the beats
    unchanged, silently (docs: attack-libraries.md). Ours, on the same beats, flips every one it can."""
    from art.attacks.evasion import BoundaryAttack

    from ecgbench.engine.adapters import art_classifier

    model, x, y, _, _ = halfspace
    x, y = x[:8], y[:8]
    trap = BoundaryAttack(art_classifier(model, x, 4, VALUE_RANGE), max_iter=5, verbose=False).generate(x.numpy(), y=y.numpy())
    assert np.array_equal(trap, x.numpy())
    for backend in ("art", "foolbox"):
        assert (_predict(model, _run(_attack("boundary", backend), model, x, y)) != y).all(), backend


def test_decision_attacks_return_misclassified_beats_unchanged(halfspace):
    model, x, y, _, _ = halfspace
    wrong = 1 - y  # labels the model disagrees with: already "adversarial" at distance 0
    for name in DECISION:
        for backend in ("art", "foolbox"):
            assert torch.equal(_attack(name, backend)(model, x, wrong, VALUE_RANGE), x), (name, backend)


# -- query budgets, counted ------------------------------------------------------------------------
def _prelude_queries(model, x, y, seed: int = 0, init_size: int = 100) -> tuple[int, int]:
    """Queries of the shared prelude (label check, noise starts, bisection) and how many beats got a start."""
    counter = QueryCounter(model)
    correct = torch.nonzero(_predict(counter, x) == y)[:, 0]
    _, found = starting_points(counter, x[correct], y[correct], VALUE_RANGE, init_size, torch.Generator().manual_seed(seed))
    return counter.used, int(found.sum())


def test_starting_points_cost_at_most_init_size_and_the_bisection(halfspace):
    model, x, y, _, _ = halfspace
    used, started = _prelude_queries(model, x, y)
    assert started == 16
    # class-1 beats: init_size draws each, found none; class-0: 1+ draws, 12 bisection steps, 1 final check
    assert 8 * 100 + 16 * (1 + BISECT_STEPS + 1) <= used - len(x) <= 8 * 100 + 16 * (100 + BISECT_STEPS + 1)


@pytest.mark.parametrize("queries", [50, 150])
def test_boundary_backends_spend_the_query_budget(queries, halfspace):
    """foolbox runs `foolbox_boundary_steps(queries)` steps in lockstep: exactly queries (+1, its check
    of the starts) a started beat. ART stops each beat when its next query round (up to 20 candidates)
    would overspend; on a half-space its trust regions always find candidates, so it spends more than
    queries - 20, plus its own checks of the beat, the start and the result (at most 4)."""
    assert [foolbox_boundary_steps(q) for q in (0, 10, 11, 1100)] == [0, 9, 10, 1000]  # step 10 costs 2
    model, x, y, _, _ = halfspace
    prelude, started = _prelude_queries(model, x, y)
    for backend in ("foolbox", "art"):
        counter = QueryCounter(model)
        _run(_attack("boundary", backend, queries=queries), counter, x, y)
        per_beat = (counter.used - prelude) / started
        steps = foolbox_boundary_steps(queries)
        if backend == "foolbox":
            assert per_beat == steps + steps // 10 + 1
        else:
            assert queries - 20 < per_beat <= queries + 4, per_beat


def test_hsj_backends_spend_their_gradient_estimates_and_no_more_than_the_searches_allow(halfspace):
    """Per started beat, HSJ spends its gradient estimates exactly (min(init_eval * sqrt(i + 1), max_eval)
    per iteration) plus a binary search and a step-size search per iteration, each a few dozen queries
    at most (the bisection of a float32 distance, halvings of a step)."""
    model, x, y, _, _ = halfspace
    prelude, started = _prelude_queries(model, x, y)
    for iters, max_eval, init_eval in [(2, 100, 20), (3, 50, 10)]:
        grads = sum(min(int(init_eval * math.sqrt(i + 1)), max_eval) for i in range(iters))
        for backend in ("foolbox", "art"):
            counter = QueryCounter(model)
            _run(_attack("hsj", backend, max_iter=iters, max_eval=max_eval, init_eval=init_eval), counter, x, y)
            per_beat = (counter.used - prelude) / started
            assert grads <= per_beat <= grads + 40 * (iters + 1), (backend, iters, per_beat, grads)


def test_square_spends_at_most_three_model_calls_a_query(halfspace):
    """A beat that cannot be flipped (far) spends the whole budget: ART scores the batch, the current
    point and the candidate each iteration, 3 * queries calls a beat, plus one call to count classes.
    Beats that flip stop early."""
    model, x, y, near, dstar = halfspace
    far = dstar > 0.01
    for queries in (10, 37):
        counter = QueryCounter(model)
        _run(_attack("square", queries=queries), counter, x[far], y[far])
        assert counter.used == 3 * int(far.sum()) * queries + 1
        counter = QueryCounter(model)
        _run(_attack("square", queries=queries), counter, x, y)
        assert counter.used <= 3 * len(x) * queries + 1


def test_square_on_torch_spends_exactly_one_query_a_candidate(halfspace):
    """Ours scores each candidate once, as the paper counts: a beat that cannot flip spends `queries`, no more."""
    model, x, y, near, dstar = halfspace
    far = dstar > 0.01
    for queries in (10, 37):
        counter = QueryCounter(model)
        _run(_attack("square", "torch", queries=queries), counter, x[far], y[far])
        assert counter.used == int(far.sum()) * queries
        counter = QueryCounter(model)
        _run(_attack("square", "torch", queries=queries), counter, x, y)
        assert counter.used <= len(x) * queries


# -- seeds ---------------------------------------------------------------------------------------
RANDOM = [("pgd", "art"), ("pgd", "foolbox"), ("apgd", "art"), ("apgd", "torch"), ("apgd-t", "torch"), ("square", "art"),
          ("square", "torch"),
          ("boundary", "foolbox"), ("boundary", "art"), ("hsj", "foolbox"), ("hsj", "art")]


@pytest.mark.parametrize("name,backend", [pytest.param(n, b, id=f"{n}@{b}") for n, b in RANDOM])
def test_attacks_are_functions_of_their_seed(name, backend, halfspace):
    """Same seed, same beats (pgd through the global generators the runner seeds, the rest through
    their `seed`); the seeded attacks leave numpy's global generator as they found it; and where the
    seed steers the search (random starts, random squares) another seed gives another result."""
    model, x, y, _, _ = halfspace
    seeded = "seed" in registry.get("attacks", name).defaults
    make = lambda s: _attack(name, backend, **({"seed": s} if seeded else {}))  # noqa: E731
    a, b = _run(make(1), model, x, y, seed=1), _run(make(1), model, x, y, seed=1)
    assert torch.equal(a, b)
    if seeded:
        np.random.seed(5)
        before = np.random.get_state()[1].copy()
        make(1)(model, x[:2], y[:2], VALUE_RANGE)
        assert np.array_equal(np.random.get_state()[1], before), "the attack left numpy's global generator moved"
    if name in DECISION or name == "square":
        assert not torch.equal(a, _run(make(2), model, x, y, seed=2))


# -- Square specifics ------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [20, 187, 280, 1000])
@pytest.mark.parametrize("p_init", [0.05, 0.8, 0.99])
def test_square_grid_holds_the_beat_and_every_square_ART_draws(window, p_init):
    """ART draws a square's corner from range(side - square side): the grid must exceed its largest square
    (ART's own formula, at p_init) and hold the beat, and be no larger than that needs."""
    largest = lambda side: int(round(math.sqrt(p_init * side * side)))  # noqa: E731
    side, base = grid_side(window, p_init), math.isqrt(window - 1) + 1
    assert side * side >= window and largest(side) < side
    assert side == base or largest(side - 1) >= side - 1


def test_square_refuses_settings_ART_cannot_run():
    for bad in ({"p_init": 1.0}, {"p_init": 0.0}, {"queries": 1}):
        with pytest.raises(PluginError, match="square.*p_init must lie in"):
            _attack("square", **bad)


@pytest.mark.parametrize("n_classes,window", [(2, 280), (4, 187)])
def test_square_runs_on_other_windows_and_two_classes(n_classes, window, halfspace):
    model, x, y, near, _ = halfspace
    model = MeanAbove(n_classes)
    x = x[near][..., :window].contiguous()
    y = _predict(model, x)
    adv = _run(_attack("square"), model, x, y)
    assert adv.shape == x.shape and float(_linf(adv, x).max()) <= 0.01 + TOL and _in_range(adv)


# -- attributes the runner reads -------------------------------------------------------------------
def test_attacks_say_their_kind_and_cost():
    for name, kind in OURS.items():
        attack = registry.get("attacks", name)()
        assert attack.kind == kind and isinstance(attack.costly, bool), name
        assert attack.bounded == (kind != "decision"), name
    assert {n for n in OURS if registry.get("attacks", n)().costly} == {"apgd", "apgd-t", "boundary", "hsj", "square"}
    cw = _attack("cw", "art")
    assert cw.costly and not cw.bounded and _attack("cw", "torch").bounded and _attack("cw").backend == "torch"
    assert not _attack("cw", "torch").costly


# -- the traps of docs/attack-libraries.md --------------------------------------------------------
def _raw_art(model: nn.Module, clip: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.estimators.classification import PyTorchClassifier
    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 280), nb_classes=4,
                             clip_values=VALUE_RANGE if clip else None, device_type="cpu")


def test_art_decision_attacks_crash_on_float64_without_the_float32_wrapper(trained):
    from art.attacks.evasion import HopSkipJump

    model, x, _ = trained
    with pytest.raises(RuntimeError, match="double"):  # ART issue #2475; adapters.Float32 is the fix
        HopSkipJump(_raw_art(model, clip=True), max_iter=0, init_size=10, verbose=False).generate(x[:2].numpy())
    # ... and through ecgbench.engine.adapters.art_classifier both ART decision attacks run:
    for name in DECISION:
        adv = _attack(name, "art")(model, x[:2], _predict(model, x[:2]), VALUE_RANGE)
        assert adv.dtype == torch.float32


def test_art_without_clip_values_leaves_the_value_range(halfspace):
    """Class-0 beats of the half-space are pushed up everywhere, and a min-max scaled beat has a sample at 1."""
    from art.attacks.evasion import FastGradientMethod

    model, x, y, _, _ = halfspace
    x, y = x[:8], y[:8]
    adv = FastGradientMethod(_raw_art(model, clip=False), eps=0.05).generate(x.numpy(), y=y.numpy())
    assert adv.max() > VALUE_RANGE[1]  # why adapters.art_classifier states clip_values
    assert _in_range(_attack("fgsm", "art", eps=0.05)(model, x, y, VALUE_RANGE))


# -- paper-reference variants: ART with max_iter=0, which is no attack ------------------------------
def test_boundary_paper_reference_returns_noise_or_the_clean_beat(halfspace):
    """ART's own (unseeded) noise search: a class-0 beat gets its first fooling draw, uniform over [0, 1]
    (L-inf > 0.3 from the beat for any but a vanishing share of draws); a class-1 beat, never fooled by
    noise, comes back clean. Nothing is within eps."""
    model, x, y, _, _ = halfspace
    attack = _attack("boundary", variant="paper-reference", queries=999)
    assert attack.backend == "art" and attack.params["queries"] == 0
    adv = attack(model, x, y, VALUE_RANGE)
    started = y == 0
    assert torch.equal(adv[~started], x[~started])
    assert (_linf(adv, x)[started] > 0.3).all() and (_predict(model, adv[started]) == 1).all()


def test_hsj_paper_reference_is_a_noise_blend_outside_eps(halfspace):
    """ART's HSJ with max_iter=0: its noise search, then a bisection towards the beat, and no iteration:
    an adversarial blend no closer than the minimum, so a far beat's lies far outside eps; class-1 beats
    (no fooling noise) come back clean."""
    model, x, y, _, dstar = halfspace
    attack = _attack("hsj", variant="paper-reference")
    assert attack.backend == "art" and attack.params["max_iter"] == 0
    adv = attack(model, x, y, VALUE_RANGE)
    started = y == 0
    assert torch.equal(adv[~started], x[~started])
    assert (_predict(model, adv[started]) == 1).all()
    assert (_linf(adv, x)[started] >= dstar[started] * (1 - 1e-4)).all()
    assert (_linf(adv, x)[started & (dstar > 0.05)] > 5 * attack.eps).all()


@pytest.mark.parametrize("name", DECISION)
def test_paper_reference_has_no_foolbox_form(name):
    with pytest.raises(PluginError, match=f"{name}@art:paper-reference"):
        _attack(name, "foolbox", variant="paper-reference")


# -- APGD and CW ----------------------------------------------------------------------------------
def test_apgd_dlr_errors_clearly_on_two_classes_and_unknown_losses(halfspace):
    model, x, y, _, _ = halfspace
    with pytest.raises(PluginError, match=r"apgd@art:dlr.*at least 3 classes.*has 2"):
        _attack("apgd", variant="dlr")(MeanAbove(2), x[:4], y[:4], VALUE_RANGE)
    with pytest.raises(PluginError, match="no loss"):
        _attack("apgd", loss="hinge")


def test_cw_art_is_a_minimisation_attack_that_never_beats_the_minimum(halfspace):
    """ART's C&W L-inf has no budget: it returns its smallest adversarial or the clean beat, never
    closer than the analytic minimum."""
    model, x, y, _, dstar = halfspace
    pick = torch.tensor([0, 16])  # a near beat of each class
    adv = _attack("cw", "art")(model, x[pick], y[pick], VALUE_RANGE)
    fooled, dist = _predict(model, adv) != y[pick], _linf(adv, x[pick])
    assert ((fooled & (dist >= dstar[pick] * (1 - 1e-4))) | (dist == 0)).all() and _in_range(adv)


# -- one budget per beat (budgets in microvolts) -------------------------------------------------
PER_BEAT = [pytest.param(n, b, id=f"{n}@{b}") for n, b in
            [("fgsm", "art"), ("bim", "art"), ("pgd", "art"), ("cw", "torch")]]


@pytest.mark.parametrize("name,backend", PER_BEAT)
def test_per_beat_budgets_flip_exactly_the_beats_each_budget_reaches(name, backend, halfspace):
    """Each beat its own budget: twice its minimal L-inf for the first of each pair, half of it for the
    other. A gradient attack (one-signed gradient) flips every beat of the first kind and none of the
    second, and never leaves its own beat's ball; one shared budget could not do both."""
    model, x, y, _, dstar = halfspace
    reach = torch.arange(len(x)) % 2 == 0
    budget = torch.where(reach, 2 * dstar, dstar / 2).clamp(max=0.2)
    attack = _attack(name, backend, eps=0.01)
    assert attack.per_beat
    np.random.seed(0)
    torch.manual_seed(0)
    adv = attack(model, x, y, VALUE_RANGE, eps=budget)
    assert (_linf(adv, x) <= budget + TOL).all() and _in_range(adv)
    fooled = _predict(model, adv) != y
    assert fooled[reach & (2 * dstar <= 0.2)].all() and not fooled[~reach].any()


@pytest.mark.parametrize("name", ["baseline-wander", "powerline", "emg"])
@pytest.mark.parametrize("variant", [None, "random"])
def test_interference_keeps_each_beats_own_bound(name, variant, halfspace):
    model, x, y, _, _ = halfspace
    budget = torch.linspace(0.001, 0.05, len(x))
    adv = _attack(name, None, variant, steps=3 if variant is None else 0)(model, x, y, VALUE_RANGE, eps=budget)
    linf = _linf(adv, x)
    assert (linf <= budget + TOL).all() and _in_range(adv)
    assert float(linf[-1]) > float(budget[0]) + TOL  # larger budgets are used, not the smallest for all


def test_an_attack_with_one_budget_refuses_a_budget_per_beat(halfspace):
    model, x, y, _, _ = halfspace
    for name, backend in [("pgd", "foolbox"), ("square", "art"), ("apgd", "art")]:
        attack = _attack(name, backend)
        assert not attack.per_beat
        with pytest.raises(PluginError, match=f"attack '{name}@{backend}' takes one budget for all beats"):
            attack(model, x, y, VALUE_RANGE, eps=torch.full((len(x),), 0.01))


def test_generate_judges_a_minimisation_attack_per_beat(halfspace):
    """HSJ runs unbudgeted; each beat's result counts only within that beat's own budget, else the clean beat."""
    from ecgbench.engine.attack import generate

    model, x, y, _, dstar = halfspace
    budget = np.where(np.arange(len(x)) % 2 == 0, 0.2, 1e-4).astype(np.float32)
    adv, stats = generate(model, _attack("hsj", "foolbox"), x, y.numpy(), VALUE_RANGE, seed=0, batch=8,
                          device=torch.device("cpu"), eps=budget)
    linf = np.abs(adv - x[:, 0].numpy()).max(1)
    assert (linf <= budget + TOL).all()
    assert (linf[budget < 1e-3] == 0).all()  # no beat flips within 1e-4 (all need more than 0.001)
    assert (linf[budget > 0.1] > 0).any()


# -- our torch back-ends against ART's, same model and beats ---------------------------------------
@pytest.mark.parametrize("name,variant,params", [("apgd", None, {"max_iter": 20}), ("apgd", "dlr", {"max_iter": 20}),
                                                 ("square", None, {"queries": 100})])
def test_torch_back_ends_fool_as_many_beats_as_arts(name, variant, params, trained):
    """APGD (Croce & Hein's algorithm) and Square (1-D windows instead of ART's squares on a grid) on the model's
    device, against ART's on the trained Kachuee and the same beats at eps 0.03: each stays in its ball, and over
    seeds 0-2 ours fools on average at least as many beats as ART's, less 2 (of 32). Never the weaker attack, which
    would overstate robustness; a stronger one is allowed (on another host's training of this net our Square
    fooled 6-8 beats to ART's 3-4), since within the ball it only tightens the upper bound."""
    model, x, y = trained
    fooled = {}
    for backend in ("art", "torch"):
        counts = []
        for seed in range(3):
            adv = _run(_attack(name, backend, variant, eps=0.03, seed=seed, **params), model, x, y, seed=seed)
            assert float(_linf(adv, x).max()) <= 0.03 + TOL and _in_range(adv)
            counts.append(int((_predict(model, adv) != y).sum()))
        fooled[backend] = counts
    assert min(fooled["art"]) > 0, "nothing to compare: ART fooled no beat"
    assert np.mean(fooled["torch"]) >= np.mean(fooled["art"]) - 2, fooled
