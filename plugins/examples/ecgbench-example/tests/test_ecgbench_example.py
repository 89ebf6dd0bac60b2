"""A plugin package's own tests: ecgbench's contract checks, called through `ecgbench.kit.testing`.

Run with `pytest plugins/examples/ecgbench-example/tests` (ECGBENCH_DATA pointing at the folder
that holds mitdb/). These are the checks `ecgbench check KIND NAME` prints, as pytest assertions.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ecgbench.kit import testing

from ecgbench_example.ds1 import MitBihDS1
from ecgbench_example.mlp import ExampleMLP
from ecgbench_example.sap import SAP


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("ECGBENCH_DATA", "data"))
    if not (path / "mitdb" / "RECORDS").exists():
        pytest.skip(f"no MIT-BIH data under {path}; set ECGBENCH_DATA")
    return path


def test_model_contract() -> None:
    testing.assert_model_contract(ExampleMLP)


def test_attack_contract(data_dir: Path) -> None:
    model, x, y, value_range = testing.reference_setup(data_dir)
    testing.assert_attack_contract(SAP, model, x, y, value_range, params={"max_iter": 5})


def test_dataset_contract(data_dir: Path) -> None:
    testing.assert_dataset_contract(MitBihDS1, data_dir)
