"""Decision-based black-box attacks: Boundary (Brendel et al. 2018; the paper's DBB) and HopSkipJump
(Chen et al. 2020), from foolbox (default: the whole batch at once) or ART (one beat at a time).

Both see only the predicted class and shrink a perturbation that already fools the model, so they are
minimisation attacks (`bounded = False`): each returns its smallest adversarial beat, and the harness
counts a success only within eps = 0.01 (paper 2.3 gives 0.01 for DBB; we use it for HSJ too). foolbox
is the default back-end: it attacks the whole batch in lockstep, one batched forward pass per query,
where ART attacks one beat at a time in small passes (20 candidates per Boundary round, one beat per
HSJ bisection step); at equal budgets on 32 beats ART ran 1.5-1.6x slower (one CPU thread).

What both back-ends share, so that they compare like with like:
- one starting point per beat: uniform noise over the value range, drawn until the model no longer
  predicts the label (at most `init_size` draws, ART's name and default), then bisected 12 times
  along the blend towards the beat, keeping the closest blend that still fools the model. A beat
  that is already misclassified, or for which no draw fools the model, is returned unchanged.
  These queries (about 15 a beat; at most `init_size` + 14) are not part of the budgets below.
- one query budget per beat, in the same units for both (see each class).
- `seed` seeds the noise and both libraries' random draws (numpy's and torch's global generators,
  restored afterwards).

Variant `paper-reference`: the paper's own code ran both attacks with ART's `max_iter=0`, which is no
attack: Boundary returns ART's first uniform-noise draw that fools the model (or the clean beat), HSJ a
noise blend far outside eps. It re-runs exactly that ART call (ART's own, unseeded, starting-point
search), so it exists for the art back-end only: without a back-end it selects art, and with foolbox it
is an error. Its pinned values win over run-profile overrides.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ecgbench.engine.adapters import art_classifier, foolbox_model, n_classes_of, to_numpy
from ecgbench.contracts import Attack, PluginError

from .seeding import seeded

__all__ = ["Boundary", "HopSkipJump", "QueryCounter", "starting_points"]

BISECT_STEPS = 12


class QueryBudgetSpent(Exception):
    """Raised by a `QueryCounter` whose budget a query would exceed."""


class QueryCounter(nn.Module):
    """The model, counting the beats it is asked to classify (`used`); with `left` set, it refuses a
    query that would take it past `left` beats by raising `QueryBudgetSpent`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.used = 0
        self.left: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.left is not None:
            if len(x) > self.left:
                raise QueryBudgetSpent
            self.left -= len(x)
        self.used += len(x)
        return self.model(x)


class _Unit(nn.Module):
    """The model seen on [0, 1]: foolbox's HopSkipJump clips to [0, 1] whatever the model's bounds."""

    def __init__(self, model: nn.Module, lo: float, hi: float) -> None:
        super().__init__()
        self.model, self.lo, self.span = model, lo, hi - lo

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.lo + self.span * u)


@torch.no_grad()
def _labels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


@torch.no_grad()
def starting_points(model: nn.Module, x: torch.Tensor, y: torch.Tensor, value_range: tuple[float, float],
                    tries: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per beat, the closest blend of the beat with uniform noise that the model does not label `y`.

    Returns the starting points (the clean beat where none was found) and the mask of beats that have
    one; the starts in the mask are verified together, in one batch, as foolbox checks them.
    """
    lo, hi = value_range
    noise, found = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(tries):
        todo = torch.nonzero(~found)[:, 0]
        if not len(todo):
            break
        draw = lo + (hi - lo) * torch.rand(x[todo].shape, generator=generator, device=x.device, dtype=x.dtype)
        hit = _labels(model, draw) != y[todo]
        noise[todo[hit]], found[todo[hit]] = draw[hit], True
    idx = torch.nonzero(found)[:, 0]
    xs, ns, ys = x[idx], noise[idx], y[idx]

    def blend(t: torch.Tensor) -> torch.Tensor:
        return (xs + t.view(-1, *[1] * (x.ndim - 1)) * (ns - xs)).clamp(lo, hi)

    t_lo, t_hi = torch.zeros(len(idx), device=x.device, dtype=x.dtype), torch.ones(len(idx), device=x.device, dtype=x.dtype)
    for _ in range(BISECT_STEPS):
        mid = (t_lo + t_hi) / 2
        fools = _labels(model, blend(mid)) != ys
        t_hi, t_lo = torch.where(fools, mid, t_hi), torch.where(fools, t_lo, mid)
    start = x.clone()
    start[idx] = blend(t_hi)
    while len(idx):  # a start at the boundary may flip with the batch it is computed in: re-check the final batch
        fools = _labels(model, start[idx]) != y[idx]
        if fools.all():
            break
        found[idx[~fools]] = False
        idx = idx[fools]
    return start, found


class _Decision(Attack):
    """Shared driver: starting points, seeding, the paper-reference switch; subclasses attack the rest."""

    backends = ("foolbox", "art")
    bounded = False
    kind = "decision"
    costly = True  # thousands of queries a beat: run on the stratified subset

    def __init__(self, backend: str | None = None, variant: str | None = None, **params: Any) -> None:
        if variant == "paper-reference" and backend is None:
            backend = "art"
        super().__init__(backend, variant, **params)
        if variant == "paper-reference":
            if self.backend != "art":
                raise PluginError(f"attack {self.name!r}: variant 'paper-reference' re-runs the paper's ART call "
                                  f"(max_iter=0) and has no {self.backend} form; use {self.name}@art:paper-reference")
            self.params.update(self.variants[variant])

    def run_foolbox(self, model, x, y, value_range):
        return self._run(model, x, y, value_range, self._foolbox)

    def run_art(self, model, x, y, value_range):
        if self.variant == "paper-reference":
            with seeded(int(self.params["seed"]), x.device):
                adv = self._paper_reference(art_classifier(model, x, n_classes_of(model, x), value_range), x)
            return torch.as_tensor(adv, device=x.device, dtype=x.dtype)
        return self._run(model, x, y, value_range, self._art)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, value_range: tuple[float, float],
             attack: Callable[..., torch.Tensor]) -> torch.Tensor:
        model.eval()
        lo, hi = (float(v) for v in value_range)
        out = x.clone()
        with seeded(int(self.params["seed"]), x.device):
            correct = torch.nonzero(_labels(model, x) == y)[:, 0]
            gen = torch.Generator(device=x.device).manual_seed(int(self.params["seed"]))
            start, found = starting_points(model, x[correct], y[correct], (lo, hi), int(self.params["init_size"]), gen)
            idx = correct[found]
            if len(idx):
                adv = attack(model, x[idx], y[idx], start[found], (lo, hi))
                out[idx] = adv.to(dtype=x.dtype).clamp(lo, hi)
        return out.detach()

    def _foolbox(self, model, x, y, start, value_range):
        raise NotImplementedError

    def _art(self, model, x, y, start, value_range):
        raise NotImplementedError

    def _paper_reference(self, clf: Any, x: torch.Tensor) -> np.ndarray:
        raise NotImplementedError


def foolbox_boundary_steps(queries: int) -> int:
    """The most foolbox Boundary steps within `queries`: one query a step, plus one every 10th step."""
    steps = queries * 10 // 11
    while steps + 1 + (steps + 1) // 10 <= queries:
        steps += 1
    return steps


@functools.cache
def _budgeted_boundary() -> type:
    """ART's BoundaryAttack, stopped per beat when its query budget is spent (last accepted adversarial kept)."""
    from art.attacks.evasion import BoundaryAttack

    class BudgetedBoundary(BoundaryAttack):
        counter: QueryCounter
        queries: int

        def _attack(self, initial_sample, *args, **kwargs):
            self.curr_adv = initial_sample  # ART updates it after every accepted step
            self.counter.left = self.queries
            try:
                return super()._attack(initial_sample, *args, **kwargs)
            except QueryBudgetSpent:
                return self.curr_adv
            finally:
                self.counter.left = None

    return BudgetedBoundary


class Boundary(_Decision):
    """Boundary attack (Brendel, Rauber & Bethge 2018), untargeted; the paper's DBB (2.3), eps 0.01.

    `queries`: model queries per beat after the starting point, the budget both back-ends are held to.
    foolbox: a step costs one query, plus one every 10th step (the spherical-step statistics), so it
    runs the most steps that fit (`foolbox_boundary_steps`). ART: an iteration costs from 21 queries
    (`sample_size` 20 orthogonal candidates, then the step towards the beat) to ~1,000 (trust-region
    retries), so its `max_iter` is no budget; it runs with `max_iter` high enough and each beat stops
    when its queries are spent, keeping the last accepted adversarial. Both libraries' step sizes keep
    their defaults (orthogonal and towards-the-beat steps 0.01, adapted online). ART's default
    `targeted=True` would return the inputs unchanged (docs: attack-libraries.md): we pass False.
    Our choice: 2,500 queries, what HopSkipJump's defaults spend, so the two black-box attacks get one
    budget. Boundary steps minimise L2 and converge slowly in L-inf: median L-inf of 0.36, 0.17,
    0.11 and 0.10 after 500, 2,000, 5,000 and 10,000 queries (64 beats, Kachuee); 2,500 queries take
    ~0.25 s a beat on one CPU thread.
    """

    name = "boundary"
    defaults = {"eps": 0.01, "queries": 2500, "init_size": 100, "seed": 0}
    variants = {"paper-reference": {"queries": 0}}

    def _foolbox(self, model, x, y, start, value_range):
        import foolbox.attacks as fa
        from foolbox.criteria import Misclassification

        attack = fa.BoundaryAttack(steps=foolbox_boundary_steps(int(self.params["queries"])))
        return attack.run(foolbox_model(model, value_range), x, Misclassification(y), starting_points=start)

    def _art(self, model, x, y, start, value_range):
        counter = QueryCounter(model)
        clf = art_classifier(counter, x, n_classes_of(model, x), value_range)
        queries = int(self.params["queries"])
        attack = _budgeted_boundary()(clf, targeted=False, max_iter=queries // 21 + 1, init_size=int(self.params["init_size"]),
                                      batch_size=max(len(x), 64), verbose=False)
        attack.counter, attack.queries = counter, queries
        adv = attack.generate(to_numpy(x), x_adv_init=to_numpy(start))
        return torch.as_tensor(adv, device=x.device)

    def _paper_reference(self, clf, x):
        from art.attacks.evasion import BoundaryAttack

        attack = BoundaryAttack(clf, targeted=False, max_iter=0, init_size=int(self.params["init_size"]), verbose=False)
        return attack.generate(to_numpy(x))


class HopSkipJump(_Decision):
    """HopSkipJump (Chen, Jordan & Wainwright 2020), untargeted, L-inf geometry, eps 0.01.

    Both libraries implement the same algorithm with the same knobs, so the same settings give the same
    query budget: `max_iter` iterations (foolbox `steps`), each a binary search to the boundary, a
    gradient estimate from `init_eval * sqrt(iteration)` queries capped at `max_eval` (foolbox
    `initial_gradient_eval_steps`, `max_gradient_eval_steps`), and a geometric step-size search;
    measured: ~2,500 queries a beat for both at the defaults. Our choice: 10 iterations, 100 initial and
    at most 1,000 gradient queries (the libraries' defaults, 50 or 64 iterations and up to 10,000
    queries, take seconds a beat on a CPU); median L-inf 0.081, 0.063, 0.053, 0.047 after 5, 10, 20,
    40 iterations (64 beats, Kachuee), 0.25-0.4 s a beat on one CPU thread. foolbox clips HSJ's candidates
    to [0, 1] whatever the model's bounds, so it attacks the model rescaled to [0, 1].
    """

    name = "hsj"
    defaults = {"eps": 0.01, "max_iter": 10, "max_eval": 1000, "init_eval": 100, "init_size": 100, "seed": 0}
    variants = {"paper-reference": {"max_iter": 0}}

    def _foolbox(self, model, x, y, start, value_range):
        import foolbox.attacks as fa
        from foolbox.criteria import Misclassification

        lo, hi = value_range
        attack = fa.HopSkipJumpAttack(steps=int(self.params["max_iter"]), initial_gradient_eval_steps=int(self.params["init_eval"]),
                                      max_gradient_eval_steps=int(self.params["max_eval"]), constraint="linf")
        unit = _Unit(model, lo, hi)
        adv = attack.run(foolbox_model(unit, (0.0, 1.0)), (x - lo) / (hi - lo), Misclassification(y),
                         starting_points=(start - lo) / (hi - lo))
        return lo + (hi - lo) * adv

    def _art(self, model, x, y, start, value_range):
        clf = art_classifier(model, x, n_classes_of(model, x), value_range)
        adv = self._art_attack(clf, len(x)).generate(to_numpy(x), x_adv_init=to_numpy(start))
        return torch.as_tensor(adv, device=x.device)

    def _art_attack(self, clf: Any, n: int) -> Any:
        from art.attacks.evasion import HopSkipJump as ArtHopSkipJump

        return ArtHopSkipJump(clf, batch_size=max(n, 256), targeted=False, norm=np.inf, max_iter=int(self.params["max_iter"]),
                              max_eval=int(self.params["max_eval"]), init_eval=int(self.params["init_eval"]),
                              init_size=int(self.params["init_size"]), verbose=False)

    def _paper_reference(self, clf, x):
        return self._art_attack(clf, len(x)).generate(to_numpy(x))
