"""The example package's hooks on hand-made cell records: balanced accuracy and its report section."""
from __future__ import annotations

import math

import pytest

from ecgbench_example import hooks


def record(model: str, mode: str, sens: dict[str, float]) -> dict:
    metrics = {"accuracy": 0.5, **{f"sensitivity_{k}": v for k, v in sens.items()}, **{f"specificity_{k}": 0.9 for k in sens}}
    return {"cell": {"dataset": "mitbih", "model": model, "attack": None if mode == "clean" else "fgsm", "mode": mode},
            "status": "ok", "metrics": metrics}


def test_balanced_accuracy_is_the_mean_of_per_class_sensitivities():
    assert hooks.balanced_accuracy(record("m", "clean", {"N": 1.0, "S": 0.0, "V": 0.5, "F": 0.5})) == pytest.approx(0.5)
    assert math.isnan(hooks.balanced_accuracy({"metrics": {"accuracy": 1.0}}))
    assert hooks.ecgbench_cell_metrics(record("m", "clean", {"N": 0.2, "MI": 0.4})) == {"balanced_accuracy": pytest.approx(0.3)}


def test_model_metric_and_section_take_the_lowest_score_per_mode():
    cells = [record("m", "clean", {"N": 0.9, "S": 0.7}), record("m", "adaptive", {"N": 0.4, "S": 0.2}),
             record("m", "adaptive", {"N": 0.6, "S": 0.6})]
    assert hooks.ecgbench_model_metrics(cells) == {"min balanced accuracy adaptive": pytest.approx(0.3)}
    title, body = hooks.ecgbench_report_section(cells, {})
    assert "Balanced accuracy" in title and "| mitbih | m | 80.0 | 30.0 |" in body
