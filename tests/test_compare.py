"""The paper's reference numbers, and `compare_with_paper` placing ours beside them without mixing the two."""
from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest

from ecgbench.report import layouts
from ecgbench.report.compare import compare_with_paper
from ecgbench.report.results import load_cells
from ecgbench.store.io import write_json

ATTACKS = ["none", "fgsm", "bim", "pgd", "cw", "boundary", "hsj"]
MODELS = ["ecg-atk-gan", "shaker", "kachuee", "acharya"]
T1_COLUMNS = ["accuracy"] + [f"{m}_{c}" for c in "NSVF" for m in ("sensitivity", "specificity")]


def _cell(out: Path, dataset: str, model: str, attack: str | None, mode: str, classes: tuple[str, ...], acc: float) -> None:
    """One cell file as Runner.run writes it (only the fields reporting reads, plus a few others)."""
    metrics = {"accuracy": acc, "n": 4}
    for i, c in enumerate(classes):
        metrics[f"sensitivity_{c}"] = round(0.5 + 0.1 * i, 3)
        metrics[f"specificity_{c}"] = round(0.9 - 0.1 * i, 3)
    record = {"cell": {"dataset": dataset, "model": model, "attack": attack, "mode": mode}, "key": "k", "status": "ok",
              "metrics": metrics, "clean_accuracy": acc, "correct": "0111", "seconds": 0.1}
    name = (attack or "none").replace(":", "+")
    write_json(out / "cells" / dataset / model / f"{name}.{mode}.json", record)


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    nsvf, mi = ("N", "S", "V", "F"), ("NORM", "MI")
    _cell(tmp_path, "mitbih", "kachuee", None, "clean", nsvf, 0.9)
    _cell(tmp_path, "mitbih", "kachuee", "pgd@foolbox", "static", nsvf, 0.5)
    _cell(tmp_path, "mitbih", "kachuee", "apgd", "static", nsvf, 0.4)  # not in the paper: must be left out
    _cell(tmp_path, "ptbxl", "ecg-atk-gan", None, "clean", mi, 0.95)
    _cell(tmp_path, "ptbxl", "ecg-atk-gan", "boundary", "static", mi, 0.8)
    return tmp_path


def test_reference_is_package_data_with_every_cell_of_tables_1_to_3():
    paper = json.loads((files("ecgbench.report") / "reference" / "paper.json").read_text())
    assert "Hossain" in paper["citation"] and "2022" in paper["citation"] and "not ecgbench" in paper["note"]
    assert list(paper["table1"]) == ATTACKS and list(paper["table2"]) == ATTACKS
    for a in ATTACKS:
        assert list(paper["table1"][a]) == MODELS and list(paper["table2"][a]) == MODELS
        for m in MODELS:
            assert list(paper["table1"][a][m]) == T1_COLUMNS
            assert list(paper["table2"][a][m]) == ["accuracy", "sensitivity", "specificity"]
    assert list(paper["table3"]) == ATTACKS and set(paper["table3"]["none"]) == {"mitbih", "ptb"}
    # Spot checks against the text of the paper.
    assert paper["table1"]["none"]["kachuee"]["accuracy"] == 98.1
    assert paper["table1"]["hsj"]["kachuee"]["sensitivity_V"] == 10.3
    assert paper["table2"]["hsj"]["acharya"] == {"accuracy": 54.7, "sensitivity": 90.7, "specificity": 19.4}
    assert paper["table3"]["cw"]["mitbih"]["ssim"] == 99.95


def test_compare_places_ours_beside_the_papers(run: Path):
    text = compare_with_paper(run)
    df = pd.read_csv(run / "compare-paper.csv")
    assert (run / "compare-paper.md").read_text() == text
    assert "Hossain" in text and "the paper's number, not ours" in text

    acc = df[(df.dataset == "mitbih") & (df.model == "kachuee") & (df.metric == "accuracy")].set_index("paper_attack")
    assert acc.loc["none", "ours"] == pytest.approx(90.0) and acc.loc["none", "paper"] == 98.1
    assert acc.loc["none", "diff"] == pytest.approx(90.0 - 98.1)
    assert acc.loc["pgd", "attack"] == "pgd@foolbox" and acc.loc["pgd", "paper"] == 87.2
    assert "apgd" not in set(df.attack)
    assert set(df[df.dataset == "mitbih"].metric) == set(T1_COLUMNS)

    mi = df[df.dataset == "ptbxl"].set_index(["paper_attack", "metric"])
    assert mi.loc[("boundary", "accuracy"), "ours"] == pytest.approx(80.0) and mi.loc[("boundary", "accuracy"), "paper"] == 93.1
    assert mi.loc[("none", "sensitivity"), "ours"] == pytest.approx(60.0) and mi.loc[("none", "sensitivity"), "paper"] == 99.3
    assert mi.loc[("none", "specificity"), "diff"] == pytest.approx(80.0 - 99.7)


def test_our_tables_hold_only_our_numbers(run: Path):
    cells = load_cells(run)
    compare_with_paper(run)
    t1 = layouts.table1(cells, "mitbih")
    assert set(t1.columns) >= {"attack", "model", *T1_COLUMNS}
    ours = {c["cell"]["attack"] or "No Attack": c["metrics"] for c in cells if c["cell"]["dataset"] == "mitbih"}
    for row in t1.to_dict("records"):
        assert {k: row[k] for k in T1_COLUMNS} == {k: ours[row["attack"]][k] for k in T1_COLUMNS}
    assert t1[T1_COLUMNS].stack().between(0, 1).all()  # fractions: no paper percentage slipped in
    assert list(t1.model.unique()) == ["kachuee"]
