"""The dry-run estimator's budget scaling: costly attacks are timed at a small budget and scaled back."""
from __future__ import annotations

import pytest

from ecgbench.execute.estimate import queries_per_beat, scaled_budget
from ecgbench.plugins.attacks.decision import Boundary, HopSkipJump
from ecgbench.plugins.attacks.square import Square


@pytest.mark.parametrize("cls", [Boundary, HopSkipJump, Square])
def test_a_costly_attack_is_timed_at_the_cap_and_scaled_back_to_its_full_budget(cls):
    params = dict(cls.defaults)
    cut, factor = scaled_budget(params, 500)
    assert params == cls.defaults, "the attack's own parameters are left alone"
    assert queries_per_beat(cut) <= 1100  # HopSkipJump keeps one iteration of up to 1,000 gradient queries
    assert queries_per_beat(cut) < queries_per_beat(params)
    assert factor == pytest.approx(queries_per_beat(params) / queries_per_beat(cut))
    cls(**cut)  # still a valid attack


def test_a_budget_under_the_cap_is_timed_as_it_is():
    params = {"eps": 0.01, "queries": 200}
    assert scaled_budget(params, 500) == (params, 1.0)
