"""The leaderboard from cell files: worst cases (AutoAttack's rule, per threat model, over common beats),
ranking and the not-converged flag, seeds and bootstrap intervals, old cells, curves over eps."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellfactory import cell, write_cells
from ecgbench import metrics
from ecgbench.report import layouts, results as C, tables as report, write
from ecgbench.report.curves import curve_tables

N = 40
REPO = Path(__file__).resolve().parents[1]


def ok(idx) -> np.ndarray:
    out = np.zeros(N, dtype=bool)
    out[list(idx)] = True
    return out


def strong(seed: int = 0) -> list[dict]:
    return [cell("strong", None, "clean", ok(range(2, N)), seed=seed, n_params=5000),
            cell("strong", "fgsm", "adaptive", ok(range(0, 30)), seed=seed),
            cell("strong", "pgd", "adaptive", ok(range(5, N)), seed=seed),
            cell("strong", "boundary", "adaptive", ok(range(0, 36)), seed=seed),
            cell("strong", "square", "adaptive", ok(range(2, N)), seed=seed),
            cell("strong", "cw", "adaptive", ok([]), seed=seed, attack_eps=0.1),  # eps 0.1: not in the worst case at 0.01
            cell("strong", "fgsm", "static", ok(range(0, 38)), seed=seed)]


@pytest.fixture()
def board() -> tuple[pd.DataFrame, list[dict]]:
    cs = strong() + [
        cell("weak", None, "clean", ok(range(0, 35))), cell("weak", "fgsm", "adaptive", ok(range(0, 10))),
        cell("weak", "boundary", "adaptive", ok(range(0, 30))),
        # near chance on validation, yet robust on these beats: shown, not ranked
        cell("chance", None, "clean", ok(range(N)), val=0.3), cell("chance", "fgsm", "adaptive", ok(range(N)), val=0.3)]
    return report.leaderboard(cs), cs


def test_worst_cases_take_every_attack_of_their_threat_model_at_the_common_eps(board):
    df, _ = board
    row = df.set_index("model").loc["strong"]
    white = ok(range(0, 30)) & ok(range(5, N)) & ok(range(0, 36)) & ok(range(2, N))
    assert row["worst white-box eps=0.01"] == pytest.approx(white.mean())  # cw at 0.1 left out
    assert row["worst black-box eps=0.01"] == pytest.approx((ok(range(0, 36)) & ok(range(2, N))).mean())
    assert row["worst adaptive"] == 0.0  # all budgets: cw at 0.1 breaks every beat
    assert "worst static eps=0.01" not in df and "fgsm static" not in df  # the paper's protocol: its own models, no row
    assert row["clean"] == pytest.approx(38 / N) and row["params"] == 5000
    assert row["fgsm adaptive"] == pytest.approx(30 / N) and row["cw adaptive"] == 0.0


def test_ranked_by_white_box_worst_case_and_a_model_near_chance_is_shown_not_ranked(board):
    df, cs = board
    assert list(df.model) == ["strong", "weak", "chance"]  # chance has the best numbers but did not converge
    assert list(df.converged) == [True, True, False]
    top = report.headline(df, "mitbih")
    assert len(top.columns) <= 10
    assert list(top["rank"]) == ["1", "2", "—"] and top["model"].iloc[2] == "chance (not converged)"
    assert "with detector" not in top.columns  # no model here has a detector
    assert top.loc[0, "white-box worst"].startswith(f"{(ok(range(5, 30))).mean() * 100:.1f} [")


def test_not_converged_rule_is_a_third_of_the_gap_from_chance():
    assert C.not_converged([0.49], 4) and not C.not_converged([0.51], 4)
    assert C.not_converged([0.66], 2) and not C.not_converged([0.67], 2)
    assert C.not_converged([0.3, 0.6], 4) and not C.not_converged([0.45, 0.6], 4)  # mean over seeds


def test_markdown_opens_with_the_headline_then_one_table_per_mode(board):
    df, cs = board
    md = write.leaderboard_markdown(df, cs, {})
    lines = md.splitlines()
    first_table = next(i for i, l in enumerate(lines) if l.startswith("|"))
    assert lines[first_table].split("|")[1].strip() == "rank"
    assert md.index("### mitbih, static attacks") < md.index("### mitbih, adaptive attacks")
    assert "| chance (not converged) |" in md[md.index("### mitbih, adaptive attacks"):].replace("  ", " ").replace("  ", " ")
    header = md[md.index("### mitbih, adaptive attacks"):].splitlines()[2]
    assert [c.strip() for c in header.strip("|").split("|")] == ["model", "clean", "fgsm", "pgd", "boundary", "square", "cw (eps 0.1)", "worst (eps=0.01)"]


def test_old_cells_read_with_defaults_for_seed_eps_and_kind():
    rs = C.results([cell("m", "hsj", "adaptive", ok(range(10)), new_format=False, attack_eps=0.02),
                    cell("m", "square", "adaptive", ok(range(10)), new_format=False),
                    cell("m", "pgd@foolbox", "adaptive", ok(range(10)), new_format=False)])
    assert [(r.kind, r.seed, r.eps) for r in rs] == [("decision", 0, 0.02), ("score", 0, 0.01), ("gradient", 0, 0.01)]


def test_worst_case_over_attacks_on_different_beats_uses_their_intersection_and_says_so():
    subset = [0, 4, 8, 12, 16, 20]
    cs = [cell("m", None, "clean", ok(range(N))), cell("m", "fgsm", "adaptive", ok(range(0, 10))),
          cell("m", "square", "adaptive", ok([0, 1, 2, 3, 4]), eval_index=subset)]  # per subset position: beats 0, 4 robust
    w = C.worst_case(C.results(cs), C.COMMON_EPS)
    assert w.intersected and list(w.beats) == subset
    assert list(w.correct) == [True, True, True, False, False, False]  # beats 0, 4, 8 pass fgsm; 8 fails square
    df = report.leaderboard(cs)
    assert df.loc[0, "worst white-box eps=0.01"] == pytest.approx(3 / 6) and df.loc[0, "worst white-box eps=0.01 n"] == 6
    assert "over the 6 beats every attack scored" in df.loc[0, "notes"]


def seed_one(attacks: tuple[str, ...] = ("fgsm", "pgd", "boundary", "square")) -> list[dict]:
    """Seed 1 of `strong`: clean 30 of 40, each of `attacks` keeping beats 0-19."""
    return [cell("strong", None, "clean", ok(range(10, N)), seed=1)] + [
        cell("strong", a, "adaptive", ok(range(0, 20)), seed=1) for a in attacks]


def test_seeds_give_mean_and_sample_sd_and_an_interval_over_beats():
    df = report.leaderboard(strong(0) + seed_one())
    row = df.loc[0]
    per_seed = [(ok(range(0, 30)) & ok(range(5, N)) & ok(range(0, 36)) & ok(range(2, N))).mean(), ok(range(0, 20)).mean()]
    assert row["seeds"] == "0,1"
    assert row["worst white-box eps=0.01"] == pytest.approx(np.mean(per_seed))
    assert row["worst white-box eps=0.01 sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["clean sd"] == pytest.approx(np.std([38 / N, 30 / N], ddof=1))
    assert row["clean lo"] < row["clean"] < row["clean hi"]
    assert "±" in report.headline(df, "mitbih").loc[0, "clean"]
    assert row["notes"] == ""


def test_a_seed_not_every_attack_has_scored_is_left_out_of_the_worst_cases():
    """A partial run: seed 1 has FGSM and PGD only, so its worst cases would be upper bounds, not measures."""
    df = report.leaderboard(strong(0) + seed_one(("fgsm", "pgd")))
    row = df.loc[0]
    white = ok(range(0, 30)) & ok(range(5, N)) & ok(range(0, 36)) & ok(range(2, N))
    assert row["worst white-box eps=0.01"] == pytest.approx(white.mean()) and np.isnan(row["worst white-box eps=0.01 sd"])
    assert row["worst black-box eps=0.01"] == pytest.approx((ok(range(0, 36)) & ok(range(2, N))).mean())
    assert "worst white-box eps=0.01: seed 1 left out (not every attack scored yet)" in row["notes"]
    assert row["clean sd"] == pytest.approx(np.std([38 / N, 30 / N], ddof=1))  # the clean cells of both seeds count
    assert row["fgsm adaptive"] == pytest.approx(np.mean([30 / N, 20 / N]))  # an attack's column: every seed that ran it


def test_a_row_judged_on_fewer_attacks_than_the_board_says_its_worst_case_is_an_upper_bound(board):
    """`weak` ran FGSM and Boundary; `strong` also PGD and Square: weak's worst cases keep their value, marked."""
    df, _ = board
    notes = df.set_index("model").loc["weak", "notes"]
    assert "worst white-box eps=0.01: over 2 of 4 attacks (no pgd, square): an upper bound" in notes
    assert "worst black-box eps=0.01: over 1 of 2 attacks (no square): an upper bound" in notes
    assert df.set_index("model").loc["weak", "worst white-box eps=0.01"] == pytest.approx(10 / N)
    assert df.set_index("model").loc["strong", "notes"] == ""
    shown = report.headline(df, "mitbih").set_index("model")
    assert shown.loc["weak", "white-box worst"].startswith("≤ 25.0 [") and shown.loc["strong", "white-box worst"][0].isdigit()


def test_bootstrap_interval_matches_resampling_beats_and_is_reproducible():
    rng = np.random.default_rng(1)
    v = rng.random(300) < 0.7
    lo, hi = metrics.bootstrap_interval([v])
    idx = rng.integers(0, len(v), (4000, len(v)))
    ref = np.percentile(v[idx].mean(1), [2.5, 97.5])
    assert lo == pytest.approx(ref[0], abs=0.012) and hi == pytest.approx(ref[1], abs=0.012)
    assert (lo, hi) == metrics.bootstrap_interval([v])
    assert metrics.bootstrap_interval([np.ones(50, bool)]) == (1.0, 1.0)
    wide, narrow = metrics.bootstrap_interval([v[:50]]), metrics.bootstrap_interval([np.tile(v[:50], 20)])
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_decision_attack_with_linf_found_is_judged_at_every_eps():
    found = [0.005, 0.02, None, 0.0, 0.08]
    r = C.results([cell("m", "hsj", "adaptive", [False, True, True, False, True], linf_found=found)])[0]
    assert list(C.robust_at(r, 0.001)) == [True, True, True, False, True]
    assert list(C.robust_at(r, 0.01)) == [False, True, True, False, True]
    assert list(C.robust_at(r, 0.1)) == [False, False, True, False, False]


def test_bounded_attack_answers_only_at_its_eps_and_above():
    r = C.results([cell("m", "pgd", "adaptive", ok(range(5)), eps=0.03)])[0]
    assert C.robust_at(r, 0.01) is None and C.robust_at(r, 0.03) is not None and C.robust_at(r, 0.1) is not None


def test_curves_and_area_under_them_on_a_log_eps_grid():
    grid = [0.001, 0.01, 0.1]
    cs = [cell("m", None, "clean", ok(range(N)))]
    for e, k in zip(grid, (40, 20, 0)):
        cs.append(cell("m", "pgd", "adaptive", ok(range(k)), eps=e, attack_eps=0.01))
    cs.append(cell("m", "hsj", "adaptive", ok(range(N)), linf_found=[0.05] * 10 + [None] * 30))
    curve, auc = curve_tables(cs)["mitbih"]
    assert list(curve["eps"]) == grid
    assert list(curve["white-box worst"]) == pytest.approx([1.0, 0.5, 0.0])
    assert list(curve["black-box worst"]) == pytest.approx([1.0, 1.0, 0.75])  # hsj found 10 beats at L-inf 0.05
    assert auc.loc[0, "auc white-box"] == pytest.approx(0.5)  # trapezoids (1+.5)/2 and (.5+0)/2 over 2 decades
    assert metrics.auc_log_eps([0.001, 0.1], [0.4, 0.4]) == pytest.approx(0.4)
    assert curve_tables(strong()) == {}  # one budget per attack: no curve
    md = write.leaderboard_markdown(report.leaderboard(cs), cs, {})
    row = md[md.index("area under the robust accuracy vs eps curve"):].splitlines()[-1]
    assert [c.strip() for c in row.strip("|").split("|")] == ["m", "50", "93.8", "0.001", "0.1"]  # black-box: (1+1)/2 + (1+.75)/2 over 2


def test_per_class_worst_case_is_exact_when_cells_store_labels():
    y = [0, 1, 2, 3] * 10
    cs = [cell("m", None, "clean", ok(range(N))), cell("m", "fgsm", "adaptive", ok(range(0, 20)), y=y),
          cell("m", "pgd", "adaptive", ok(range(10, N)), y=y)]
    for c in cs:
        c["y"] = "".join(map(str, y))
    df, note = layouts.per_class_worst(cs, "mitbih")
    assert note.startswith("Exact") and list(df.loc[0, ["N", "S", "V", "F"]]) == pytest.approx([0.2, 0.2, 0.3, 0.3])  # beats 10..19 only
    sub = list(range(0, N, 2))  # a costly attack on a subset stores the labels of the beats it scored
    square = cell("m", "square", "adaptive", np.ones(len(sub), bool), eval_index=sub)
    square["y"] = "".join(str(y[i]) for i in sub)
    df, note = layouts.per_class_worst(cs + [square], "mitbih")
    assert note.startswith("Exact") and list(df.loc[0, ["N", "V"]]) == pytest.approx([0.2, 0.3])  # robust: even beats 10..18 of 10 N and 10 V
    assert df.loc[0, ["S", "F"]].isna().all()  # no odd beat in the intersection
    for c in cs:
        del c["y"]
    df, note = layouts.per_class_worst(cs, "mitbih")
    assert "upper bound" in note and list(df.loc[0, ["N", "S", "V", "F"]]) == pytest.approx([0.5] * 4)


def test_committed_run_rebuilds_with_headline_numbers_from_its_cells(tmp_path):
    src = REPO / "results" / "mitbih-quick"
    out = tmp_path / "run"
    shutil.copytree(src / "cells", out / "cells")
    shutil.copy(src / "run.json", out / "run.json")
    write.write_report(out)
    first = {p.name: p.read_bytes() for p in out.glob("*.md")} | {"html": (out / "leaderboard.html").read_bytes()}
    board = json.loads((out / "leaderboard.json").read_text())
    assert len(board) == 4 * 2  # every model trained on clean beats and with the paper's defence
    for row in board:
        training = "defence" if row["training"] == "paper defence" else "clean"
        cs = [c for c in C.load_cells(out) if c["cell"]["model"] == row["model"] and c["cell"]["training"] == training]
        assert len({c["weights"] for c in cs}) == 1  # one row, one trained model
        adaptive = [np.frombuffer(c["correct"].encode(), np.uint8) == ord("1") for c in cs
                    if c["cell"]["mode"] == "adaptive" and c["attack"]["eps"] <= 0.01]
        assert row["worst white-box eps=0.01"] == pytest.approx(np.logical_and.reduce(adaptive).mean())
    t1 = layouts.table1(C.load_cells(out), "mitbih", "adaptive")
    attacks = json.loads((out / "run.json").read_text())["attacks"]
    assert len(t1) == 8 * (1 + len(attacks)) and not t1.duplicated(["attack", "model"]).any()  # every row x (clean + attacks)
    static = layouts.table1(C.load_cells(out), "mitbih", "static")
    assert len(static) == 4 * (1 + len(attacks))  # the paper's protocol: per model, clean and a model per attack
    md = (out / "leaderboard.md").read_text()
    assert md.index("| rank") < md.index("static attacks, the paper's protocol")
    for name in ("perclass-mitbih.md", "table1-mitbih-adaptive.md", "robust-accuracy-mitbih.png", "perclass-mitbih.png", "overlays-mitbih.png"):
        assert (out / name).exists(), name
    write.write_report(out)  # no timestamps, seeded bootstrap: a rebuild is byte-identical
    assert {p.name: p.read_bytes() for p in out.glob("*.md")} | {"html": (out / "leaderboard.html").read_bytes()} == first


def test_a_row_is_one_trained_model_and_mixed_weights_are_refused():
    cs = [cell("k", None, "clean", ok(range(0, 30)), weights="a" * 16),
          cell("k", "fgsm", "adaptive", ok(range(0, 20)), weights="a" * 16),
          cell("k", None, "clean", ok(range(0, 36)), training="defence", weights="b" * 16),
          cell("k", "fgsm", "adaptive", ok(range(0, 33)), training="defence", weights="b" * 16),
          cell("k", "fgsm", "static", ok(range(0, 38)), weights="c" * 16)]
    df = report.leaderboard(cs).set_index("training")
    assert list(df.index) == ["paper defence", "clean"]  # ranked by white-box worst: 33 beats against 20
    assert df.loc["clean", "clean"] == pytest.approx(30 / N) and df.loc["clean", "fgsm adaptive"] == pytest.approx(20 / N)
    assert df.loc["paper defence", "clean"] == pytest.approx(36 / N)
    assert report.headline(df.reset_index(), "mitbih")["model"].tolist() == ["k + paper defence", "k"]
    cs[1]["weights"] = "d" * 16  # the fgsm cell of the clean row now comes from another training of the recipe
    with pytest.raises(ValueError, match="mixes cells of 2 trained models: none.clean \\(a+\\), fgsm.adaptive \\(d+\\)"):
        report.leaderboard(cs)


def test_attacked_cells_of_a_static_trained_model_from_older_runs_belong_to_no_row():
    old = cell("k", "fgsm", "adaptive", ok(range(0, 10)), new_format=False)
    old["trained_on"] = "clean + fgsm static set"  # before rows were one model, a static run attacked this model
    df = report.leaderboard([cell("k", None, "clean", ok(range(0, 30)), new_format=False), old])
    assert len(df) == 1 and "fgsm adaptive" not in df and pd.isna(df.loc[0, "worst white-box eps=0.01"])


def test_older_still_cells_join_a_row_only_with_the_clean_cells_checkpoint():
    """Cells from before `trained_on` say which checkpoint they scored: a static run's attacked cells scored
    each attack's static-trained model, another checkpoint than the clean cell's, so they belong to no row."""
    clean = cell("k", None, "clean", ok(range(0, 30)), new_format=False)
    same = cell("k", "pgd", "adaptive", ok(range(0, 20)), new_format=False)
    other = cell("k", "fgsm", "adaptive", ok(range(0, 10)), new_format=False)
    clean["checkpoint"], same["checkpoint"], other["checkpoint"] = "c1", "c1", "c2"
    df = report.leaderboard([clean, same, other])
    assert "pgd adaptive" in df and "fgsm adaptive" not in df
    assert df.loc[0, "worst white-box eps=0.01"] == pytest.approx(20 / N)

