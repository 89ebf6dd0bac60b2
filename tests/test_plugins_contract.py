"""Plugin contracts, datasette-style: every entry-point group has a contract test, parametrized over
everything registered (installed third-party plugins included), and broken plugins fail alone.

Fast by construction: datasets load their smoke records, models see 8 synthetic beats, attacks run
with the smoke profile's budgets on 8 real beats against a briefly trained Kachuee CNN.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ecgbench.kit import check, testing
from ecgbench.contracts import PluginError
from ecgbench.kit.check import check_plugin
from ecgbench.config.profiles import PROFILES
from ecgbench.contracts.registry import KINDS, Entry, Registry, registry
from ecgbench.config.run import RunConfig
from ecgbench.execute.runner import Runner
from ecgbench.plan.cells import Cell
from ecgbench.store.io import read_json

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
MISSING_DATA = re.compile(r"\bno \S+ data in ")  # mitbih.find_records' message when a dataset's folder is absent
ALWAYS_PRESENT = {"mitbih"}  # ecgbench's own data: never skipped (conftest's data_dir fails without it)
BROKEN = "ecgbench-broken"


def test_every_plugin_kind_has_a_contract_test_a_helper_a_check_and_docs():
    docs = (REPO / "docs" / "plugins.md").read_text()
    for kind in KINDS:
        one = kind[:-1]
        assert callable(globals().get(f"test_{one}_contract")), f"no contract test for entry-point group ecgbench.{kind}"
        assert callable(getattr(testing, f"assert_{one}_contract", None)), f"ecgbench.kit.testing has no assert_{one}_contract"
        assert check.KINDS[one] == kind, f"`ecgbench check {one}` is not wired to ecgbench.{kind}"
        assert f'"ecgbench.{kind}"' in docs, f"docs/plugins.md does not document the ecgbench.{kind} group"


# -- every registered plugin ------------------------------------------------------------------
@pytest.mark.parametrize("name", registry.names("datasets"))
def test_dataset_contract(name: str, data_dir: Path) -> None:
    try:
        testing.assert_dataset_contract(registry.get("datasets", name), data_dir)
    except PluginError as exc:
        if MISSING_DATA.search(str(exc)) and name not in ALWAYS_PRESENT:
            pytest.skip(f"dataset {name!r}: its data is not under {data_dir} ({exc})")
        raise


@pytest.mark.parametrize("name", registry.names("models"))
def test_model_contract(name: str) -> None:
    testing.assert_model_contract(registry.get("models", name), name=name)


@pytest.mark.parametrize("name", registry.names("defences"))
def test_defence_contract(name: str) -> None:
    testing.assert_defence_contract(registry.get("defences", name), name=name)


@pytest.fixture(scope="module")
def reference(data_dir: Path, cache_dir: Path) -> tuple:
    return testing.reference_setup(data_dir, cache_dir, per_class=2)


@pytest.mark.parametrize("name", registry.names("attacks"))
def test_attack_contract(name: str, reference: tuple) -> None:
    model, x, y, value_range = reference
    params = PROFILES["smoke"].attack_params.get(name, {})  # decision-based attacks: a few queries only
    testing.assert_attack_contract(registry.get("attacks", name), model, x, y, value_range, params)


# -- broken plugins -----------------------------------------------------------------------------
def _real(kind: str, name: str) -> Entry:
    return registry.entry(kind, name)


def broken_registry() -> Registry:
    """Real mitbih, kachuee and fgsm beside three broken plugins of a made-up distribution."""
    return Registry([
        _real("datasets", "mitbih"), _real("models", "kachuee"), _real("attacks", "fgsm"),
        Entry("models", "wrong-shape", "broken_plugins:WrongShape", BROKEN, "0.0.1"),
        Entry("models", "raises", "broken_plugins:Raises", BROKEN, "0.0.1"),
        Entry("attacks", "unimportable", "broken_attack_module:Unimportable", BROKEN, "0.0.1"),
        Entry("attacks", "overshoots", "broken_plugins:Overshoots", BROKEN, "0.0.1"),
    ])


@pytest.fixture(scope="module")
def importable_broken_plugins():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(TESTS))
        yield


@pytest.fixture(scope="module")
def broken_run(importable_broken_plugins, data_dir: Path, cache_dir: Path, tmp_path_factory) -> tuple[dict, dict]:
    """One smoke run of 3 models x 2 attacks x 2 modes, half of it broken; returns (manifest, cells by label)."""
    out = tmp_path_factory.mktemp("broken-run")
    cfg = RunConfig(datasets=["mitbih"], models=["kachuee", "wrong-shape", "raises"], attacks=["fgsm", "unimportable"],
                    profile=PROFILES["smoke"], out=out, data_dir=data_dir, cache=cache_dir, source="kachuee", progress=False)
    manifest = Runner(cfg, broken_registry()).run()
    records = [read_json(p) for p in (out / "cells").rglob("*.json")]
    return manifest, {Cell(**r["cell"]).label: r for r in records}


def _is_broken(label: str) -> bool:
    parts = label.split("/")  # dataset/model[/defence]/attack/mode
    return parts[1] in ("wrong-shape", "raises") or parts[-2] == "unimportable"


def test_healthy_cells_complete_beside_broken_plugins(broken_run):
    manifest, cells = broken_run
    assert len(cells) == 3 * 2 * 1 + 2 * (3 + 3 * 2)  # 3 models x 2 rows, clean; per attack 3 static + 3 x 2 rows adaptive
    healthy = {label: c for label, c in cells.items() if not _is_broken(label)}
    assert set(healthy) == {"mitbih/kachuee/none/clean", "mitbih/kachuee/fgsm/static", "mitbih/kachuee/fgsm/adaptive",
                            "mitbih/kachuee/defence/none/clean", "mitbih/kachuee/defence/fgsm/adaptive"}
    assert all(c["status"] == "ok" for c in healthy.values()), {k: c.get("error") for k, c in healthy.items()}
    # the paper's defence trains on the static sets of the attacks that load: fgsm's alone here
    assert healthy["mitbih/kachuee/defence/none/clean"]["trained_on"] == "clean + fgsm static set"
    assert len(manifest["failures"]) == 24 - 5


def test_each_broken_cell_fails_with_one_line_naming_the_plugin(broken_run):
    _, cells = broken_run
    for label, c in cells.items():
        if not _is_broken(label):
            continue
        assert c["status"] == "failed" and "\n" not in c["error"], label
        model, attack = label.split("/")[1], label.split("/")[-2]
        culprits = [n for n in (model, attack) if n in ("wrong-shape", "raises", "unimportable")]
        assert any(f"'{n}'" in c["error"] for n in culprits), (label, c["error"])
        assert f"from {BROKEN} 0.0.1" in c["error"], (label, c["error"])
    assert "returned logits of shape" in cells["mitbih/wrong-shape/none/clean"]["error"]
    assert "raised RuntimeError: forward is not implemented yet" in cells["mitbih/raises/none/clean"]["error"]
    assert "failed to load" in cells["mitbih/kachuee/unimportable/static"]["error"]


def test_a_contract_violation_names_the_distribution_too(broken_run):
    _, cells = broken_run
    assert f"from {BROKEN} 0.0.1" in cells["mitbih/wrong-shape/none/clean"]["error"]


# -- ecgbench check ---------------------------------------------------------------------------------
def test_check_prints_a_line_per_passed_check(importable_broken_plugins, data_dir: Path):
    lines = list(check_plugin("model", "kachuee", data_dir, broken_registry()))
    assert lines[0].startswith("model 'kachuee' from ecgbench-atk ")
    assert len(lines) == 7 and all("\n" not in line for line in lines)
    assert lines[2] == "packs on a GPU with other trainings of its class"


@pytest.mark.parametrize("kind, name, expected", [
    ("model", "wrong-shape", r"returned logits of shape \(8, 5\) for 8 beats, expected \(8, 2\)"),
    ("model", "raises", r"forward raised RuntimeError: forward is not implemented yet"),
    ("attack", "unimportable", r"failed to load \(broken_attack_module:Unimportable\): ModuleNotFoundError"),
    ("attack", "overshoots", r"perturbed a beat by L-inf 0\.02 > eps 0\.01"),
])
def test_check_fails_naming_the_plugin_its_distribution_and_the_fault(importable_broken_plugins, data_dir: Path,
                                                                      cache_dir: Path, kind: str, name: str, expected: str):
    with pytest.raises(PluginError, match=rf"{kind} plugin '{name}' from {BROKEN} 0\.0\.1 .*{expected}"):
        list(check_plugin(kind, name, data_dir, broken_registry(), cache=cache_dir))
