"""What several seeds say (`report/seeds.py`): each seed's value per row and the paired differences between rows, which
keep the split's variation out of a comparison; seeds without every attack stay out of worst cases."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cellfactory import RUN, cell, write_cells
from ecgbench.report.seeds import seed_tables
from ecgbench.report.tables import leaderboard
from ecgbench.report.write import write_report

N = 40


def ok(k: int) -> np.ndarray:
    return np.arange(N) < k


# Per seed (the split moves both models together): a's white-box worst 20, 30, 36 of 40 beats; b's always 4 fewer.
A_WORST, GAP = {0: 20, 1: 30, 2: 36}, 4


def model(name: str, seed: int, robust: int, attacks: tuple[str, ...] = ("fgsm", "pgd", "square")) -> list[dict]:
    return [cell(name, None, "clean", ok(38 - seed), seed=seed)] + [cell(name, a, "adaptive", ok(robust), seed=seed) for a in attacks]


def both(seeds: dict[int, int] = A_WORST) -> list[dict]:
    return [c for s, k in seeds.items() for c in model("a", s, k) + model("b", s, k - GAP)]


def test_each_seed_and_the_paired_difference_that_holds_on_every_seed():
    cells = both()
    values, pairs = seed_tables(cells, leaderboard(cells))["mitbih"]
    white = values[(values["row"] == "a") & (values["measure"] == "white-box worst")].iloc[0]
    assert [white[f"seed {s}"] for s in (0, 1, 2)] == ["50.0", "75.0", "90.0"]
    spread = np.array([20, 30, 36]) / N * 100
    assert white["mean ± sd"] == f"{spread.mean():.1f} ± {spread.std(ddof=1):.1f}"
    pair = pairs[pairs["measure"] == "white-box worst"].iloc[0]
    # each model's spread over seeds (about 20 points) dwarfs the gap; seed by seed it is always 10 points
    assert (pair["first"], pair["second"]) == ("a", "b")
    assert [pair[f"seed {s}"] for s in (0, 1, 2)] == ["+10.0"] * 3
    assert pair["mean ± sd (points)"] == "+10.0 ± 0.0" and pair["first ahead on"] == "3 of 3 seeds"
    clean = pairs[pairs["measure"] == "clean"].iloc[0]  # equal clean accuracy on every seed: ahead on none
    assert clean["first ahead on"] == "0 of 3 seeds"


def test_a_flipping_difference_is_shown_as_one():
    cells = [c for s, (ka, kb) in {0: (30, 20), 1: (20, 30), 2: (31, 20)}.items() for c in model("a", s, ka) + model("b", s, kb)]
    _, pairs = seed_tables(cells, leaderboard(cells))["mitbih"]
    pair = pairs[pairs["measure"] == "white-box worst"].iloc[0]
    assert (pair["first"], pair["second"]) == ("a", "b")  # ahead on average (+5.25 points) ...
    assert [pair[f"seed {s}"] for s in (0, 1, 2)] == ["+25.0", "-25.0", "+27.5"]
    assert pair["first ahead on"] == "2 of 3 seeds"  # ... but not on every seed


def test_a_seed_without_every_attack_stays_out_of_the_worst_cases_but_its_clean_cells_count():
    cells = both({0: 20, 1: 30}) + model("a", 2, 36, ("fgsm",)) + model("b", 2, 32, ("fgsm",))  # seed 2: PGD, Square not yet
    values, pairs = seed_tables(cells, leaderboard(cells))["mitbih"]
    white = values[(values["row"] == "a") & (values["measure"] == "white-box worst")].iloc[0]
    clean = values[(values["row"] == "a") & (values["measure"] == "clean")].iloc[0]
    assert white["seed 2"] == "—" and white["seed 1"] == "75.0" and clean["seed 2"] == "90.0"
    pair = pairs[pairs["measure"] == "white-box worst"].iloc[0]
    assert pair["seed 2"] == "—" and pair["first ahead on"] == "2 of 2 seeds"


def test_a_run_of_one_seed_writes_no_seed_tables_and_one_of_three_writes_both(tmp_path: Path):
    one = write_cells(tmp_path / "one", both({0: 20}))
    assert not list(one.glob("seed*")) and not [p for p in write_report(one) if p.name.startswith("seed")]
    three = write_cells(tmp_path / "three", both(), {**RUN, "seeds": [0, 1, 2]})
    written = {p.name for p in write_report(three)}
    assert {"seeds-mitbih.md", "seeds-mitbih.csv", "seed-pairs-mitbih.md", "seed-pairs-mitbih.json"} <= written
    rows = json.loads((three / "seed-pairs-mitbih.json").read_text())
    assert {(r["measure"], r["first ahead on"]) for r in rows} == {("clean", "0 of 3 seeds"), ("white-box worst", "3 of 3 seeds")}
    assert "same test beats" in (three / "seed-pairs-mitbih.md").read_text()
