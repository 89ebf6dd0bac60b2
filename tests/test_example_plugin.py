"""The example plugin package, installed as a real distribution: seen, listed, filtered, run, and its SAP attack.

CI installs it (`pip install plugins/examples/ecgbench-example`) and sets ECGBENCH_REQUIRE_EXAMPLE=1,
so a missing install fails there; a local checkout without it skips these tests.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgbench.contracts import PluginError
from ecgbench.contracts.checks import check_adversarial
from ecgbench.config.profiles import PROFILES

DIST, VERSION = "ecgbench-example", "0.1.0"
PLUGINS = {("models", "example-mlp"), ("attacks", "sap"), ("datasets", "mitbih-ds1")}


def _installed() -> bool:
    try:
        distribution(DIST)
    except PackageNotFoundError:
        return False
    return True


@pytest.fixture(autouse=True, scope="module")
def example_installed() -> None:
    if not _installed():
        message = f"{DIST} is not installed: pip install plugins/examples/{DIST}"
        if os.environ.get("ECGBENCH_REQUIRE_EXAMPLE") == "1":
            pytest.fail(f"{message} (ECGBENCH_REQUIRE_EXAMPLE=1 requires it)")
        pytest.skip(message)


def ecgbench(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The installed CLI in a fresh process, so entry points are discovered as a user's shell would."""
    base = {k: v for k, v in os.environ.items() if k != "ECGBENCH_PLUGINS"}
    return subprocess.run([sys.executable, "-m", "ecgbench", *args], capture_output=True, text=True, env={**base, **env})


# -- discovery --------------------------------------------------------------------------------
def test_plugins_json_shows_the_three_entry_points_with_dist_and_version():
    out = ecgbench("plugins", "--json")
    assert out.returncode == 0, out.stderr
    mine = {(e["kind"], e["name"]): e for e in json.loads(out.stdout) if e["dist"] == DIST}
    assert set(mine) == PLUGINS
    assert {e["version"] for e in mine.values()} == {VERSION}
    assert mine[("attacks", "sap")]["value"] == "ecgbench_example.sap:SAP"


def test_list_includes_the_example_plugins_and_the_environment_variable_hides_them():
    shown = ecgbench("list")
    assert shown.returncode == 0, shown.stderr
    for _, name in PLUGINS:
        assert name in shown.stdout.replace(",", " ").split()
    hidden = ecgbench("list", ECGBENCH_PLUGINS="ecgbench-atk")
    assert hidden.returncode == 0, hidden.stderr
    assert "kachuee" in hidden.stdout
    for _, name in PLUGINS:
        assert name not in hidden.stdout.replace(",", " ").split()


# -- runs -------------------------------------------------------------------------------------
def _run(tmp_path: Path, data_dir: Path, cache_dir: Path, *args: str) -> list[dict]:
    out = tmp_path / "run"
    done = ecgbench("run", *args, "--profile", "smoke", "--source", "kachuee", "--out", str(out), "--no-progress",
                    ECGBENCH_DATA=str(data_dir), ECGBENCH_CACHE=str(cache_dir))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads((out / "leaderboard.json").read_text())


def test_smoke_run_with_the_example_model_and_attack(tmp_path, data_dir, cache_dir):
    board = _run(tmp_path, data_dir, cache_dir, "--dataset", "mitbih", "--models", "example-mlp,kachuee",
                 "--attacks", "sap,fgsm", "--modes", "static,adaptive")
    rows = {(r["model"], r["training"]): r for r in board}
    assert set(rows) == {(m, t) for m in ("example-mlp", "kachuee") for t in ("clean", "paper defence")}
    for training in ("clean", "paper defence"):
        for column in ("clean", "sap adaptive", "fgsm adaptive"):
            assert 0.0 <= rows[("example-mlp", training)][column] <= 1.0, column
    static = json.loads((tmp_path / "run" / "table1-mitbih-static.json").read_text())  # the paper's protocol
    assert {(r["model"], r["attack"]) for r in static} >= {("example-mlp", "sap"), ("example-mlp", "fgsm")}


def test_smoke_run_on_the_example_dataset(tmp_path, data_dir, cache_dir):
    board = _run(tmp_path, data_dir, cache_dir, "--dataset", "mitbih-ds1", "--models", "example-mlp",
                 "--attacks", "sap", "--modes", "adaptive")
    assert [(r["dataset"], r["model"]) for r in board] == [("mitbih-ds1", "example-mlp")]
    assert board[0]["clean"] > 0.5


# -- the dataset: DS1 only ----------------------------------------------------------------------
def test_ds1_dataset_reads_only_ds1_records(data_dir):
    from ecgbench.plugins.datasets.mitbih import DS1

    from ecgbench_example.ds1 import MitBihDS1

    assert MitBihDS1(data_dir).record_names() == DS1
    assert set(MitBihDS1.smoke_records) <= set(DS1)
    with pytest.raises(PluginError, match=r"record\(s\) 100 are not in DS1"):
        MitBihDS1(data_dir, records=["100", "101"])


# -- the SAP attack -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_mlp(data_dir: Path, cache_dir: Path) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The example MLP trained on MIT-BIH smoke beats (smoke caps, 10 epochs); 40 test beats per class."""
    from ecgbench.data.beats import prepare
    from ecgbench.data.catalog import load_beats
    from ecgbench.plugins.datasets.mitbih import MitBih
    from ecgbench.engine.train import fit

    from ecgbench_example.mlp import ExampleMLP

    p = PROFILES["smoke"]
    dataset = MitBih(data_dir, records=MitBih.smoke_records)
    beats, _, _ = load_beats(dataset, cache_dir)
    s = prepare(dataset, beats, "random", seed=0, train_cap=p.train_cap, test_cap=p.test_cap, n_folds=1, val_fraction=0.1)
    result = fit(ExampleMLP, 4, dataset.window, s.train, s.folds, epochs=10, batch_size=64,
                 smote_target=p.smote_target, device=torch.device("cpu"), seed=0, progress=False)
    model = ExampleMLP(4, dataset.window)
    model.load_state_dict(result.state)
    return model.eval(), torch.as_tensor(s.test.x)[:, None], torch.as_tensor(s.test.y)


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_example_mlp_learns_real_beats(trained_mlp):
    model, x, y = trained_mlp
    assert np.bincount(y.numpy()).tolist() == [40, 40, 40, 40]  # balanced: chance is 25 %
    assert _accuracy(model, x, y) > 0.7


def test_sap_stays_in_the_eps_ball_and_the_value_range(trained_mlp):
    from ecgbench_example.sap import SAP

    model, x, y = trained_mlp
    adv = SAP()(model, x, y, (0.0, 1.0))
    linf = check_adversarial(adv, x, "sap", 0.01, True, (0.0, 1.0))
    assert float(linf.max()) <= 0.01 + 1e-6 and float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_sap_is_smoother_than_pgd(trained_mlp):
    from ecgbench.plugins.attacks.gradient import PGD

    from ecgbench_example.sap import SAP

    model, x, y = trained_mlp
    inside = (x > 0.02) & (x < 0.98)  # where clipping to [0, 1] cannot bend either perturbation

    def roughness(adv: torch.Tensor) -> float:
        r = (adv - x)[:, 0]
        return float((r.diff(n=2, dim=-1).abs() * inside[:, 0, 1:-1]).sum() / inside[:, 0, 1:-1].sum())

    sap, pgd = roughness(SAP()(model, x, y, (0.0, 1.0))), roughness(PGD(backend="foolbox")(model, x, y, (0.0, 1.0)))
    assert sap < 0.2 * pgd, (sap, pgd)


def test_sap_lowers_the_accuracy_of_a_trained_model(trained_mlp):
    from ecgbench_example.sap import SAP

    model, x, y = trained_mlp
    clean = _accuracy(model, x, y)
    at_default = _accuracy(model, SAP()(model, x, y, (0.0, 1.0)), y)
    at_larger = _accuracy(model, SAP(eps=0.05, eps_step=0.005)(model, x, y, (0.0, 1.0)), y)
    assert at_default < clean and at_larger < clean - 0.2, (clean, at_default, at_larger)
