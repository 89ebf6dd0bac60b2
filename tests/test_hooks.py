"""pluggy hooks: every hook specification works end to end through `ecgbench report` / the CLI, is tested here
and documented in docs/plugins.md (datasette's meta-test); the example package's hooks load through entry points."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellfactory import cell, write_cells
from ecgbench.cli import main as cli
from ecgbench.contracts import hooks
from ecgbench.contracts import PluginError
from ecgbench.report.write import write_report

REPO = Path(__file__).resolve().parents[1]
SPECS = [name for name, _ in inspect.getmembers(hooks.Specs, inspect.isfunction)]


def _run(tmp_path: Path) -> Path:
    ok = np.arange(20) < 15
    return write_cells(tmp_path / "run", [cell("kachuee", None, "clean", ok), cell("kachuee", "fgsm", "adaptive", np.arange(20) < 5),
                                          cell("shaker", None, "clean", ok), cell("shaker", "fgsm", "adaptive", np.arange(20) < 9)])


@pytest.fixture()
def use(monkeypatch):
    """Register a plugin object in place of the installed ones, for this test only."""
    def register(plugin: object) -> None:
        pm = hooks.manager(load=False)
        pm.register(plugin)
        monkeypatch.setattr(hooks, "manager", lambda load=True: pm)
    return register


# -- the meta-test ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SPECS)
def test_every_hook_spec_has_a_test_and_a_doc_entry(spec: str):
    assert f"test_hook_{spec}" in globals(), f"no test_hook_{spec} in {__file__}"
    docs = (REPO / "docs" / "plugins.md").read_text()
    assert f"### `{spec}" in docs, f"docs/plugins.md has no '### `{spec}' entry"


# -- one test per hook ----------------------------------------------------------------------------
def test_hook_ecgbench_cell_metrics(tmp_path, use):
    class Plugin:
        @hooks.hookimpl
        def ecgbench_cell_metrics(self, record):
            return {"wrong_beats": record["correct"].count("0")}

    use(Plugin())
    out = _run(tmp_path)
    write_report(out)
    attacks = pd.read_csv(out / "attacks.csv").set_index("model")
    assert attacks.loc["kachuee", "wrong_beats"] == 15 and attacks.loc["shaker", "wrong_beats"] == 11


def test_hook_ecgbench_model_metrics(tmp_path, use):
    class Plugin:
        @hooks.hookimpl
        def ecgbench_model_metrics(self, records):
            return {"cells seen": len(records)}

    use(Plugin())
    out = _run(tmp_path)
    write_report(out)
    assert list(pd.read_csv(out / "leaderboard.csv")["cells seen"]) == [2, 2]


def test_hook_ecgbench_report_section(tmp_path, use):
    class Plugin:
        @hooks.hookimpl
        def ecgbench_report_section(self, cells, run):
            return "Beats per cell", f"| cells | beats |\n|---|---|\n| {len(cells)} | {len(cells[0]['correct'])} |"

    use(Plugin())
    out = _run(tmp_path)
    write_report(out)
    md = (out / "leaderboard.md").read_text()
    assert "## Beats per cell" in md and "| 4 | 20 |" in md
    page = (out / "leaderboard.html").read_text()
    assert "<h2>Beats per cell</h2>" in page and "<td>4</td><td>20</td>" in page


def test_hook_ecgbench_figures(tmp_path, use):
    class Plugin:
        @hooks.hookimpl
        def ecgbench_figures(self, cells, run):
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots()
            ax.plot([len(c["correct"]) for c in cells])
            return [("beats-per-cell", fig)]

    use(Plugin())
    out = _run(tmp_path)
    write_report(out)
    assert (out / "beats-per-cell.png").read_bytes()[:4] == b"\x89PNG"
    assert 'alt="beats-per-cell"' in (out / "leaderboard.html").read_text()


def test_hook_register_commands(tmp_path, use, capsys):
    class Plugin:
        @hooks.hookimpl
        def register_commands(self, subparsers):
            p = subparsers.add_parser("count-cells")
            p.add_argument("run_dir")
            p.set_defaults(func=lambda args: print(len(list(Path(args.run_dir, "cells").rglob("*.json")))) or 0)

    use(Plugin())
    assert cli.main(["count-cells", str(_run(tmp_path))]) == 0
    assert capsys.readouterr().out.strip() == "4"


def test_two_plugins_returning_one_metric_name_is_an_error(use):
    class A:
        @hooks.hookimpl
        def ecgbench_cell_metrics(self, record):
            return {"x": 1.0}

    pm = hooks.manager(load=False)
    pm.register(A())
    pm.register(type("B", (A,), {})())
    with pytest.raises(PluginError, match="two hook plugins return the cell metric 'x'"):
        hooks.cell_metrics(pm, {})


# -- the example package, installed ---------------------------------------------------------------
def _example() -> None:
    try:
        distribution("ecgbench-example")
    except PackageNotFoundError:
        if os.environ.get("ECGBENCH_REQUIRE_EXAMPLE") == "1":
            pytest.fail("ecgbench-example is not installed (ECGBENCH_REQUIRE_EXAMPLE=1 requires it)")
        pytest.skip("ecgbench-example is not installed: pip install plugins/examples/ecgbench-example")


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "ECGBENCH_PLUGINS"}
    return subprocess.run([sys.executable, "-m", "ecgbench", *args], capture_output=True, text=True, env={**base, **env})


def test_example_hooks_load_from_entry_points_and_env_var_hides_them(tmp_path, monkeypatch):
    _example()
    monkeypatch.delenv("ECGBENCH_PLUGINS", raising=False)
    assert "ecgbench-example:balanced-accuracy" in dict(hooks.manager().list_name_plugin())
    monkeypatch.setenv("ECGBENCH_PLUGINS", "ecgbench-atk")
    assert dict(hooks.manager().list_name_plugin()) == {}
    out = _run(tmp_path)
    shown = _cli("balanced-accuracy", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "| mitbih | kachuee | 75.0 | 25.0 |" in shown.stdout  # mean of per-class sensitivities, in %
    assert _cli("balanced-accuracy", str(out), ECGBENCH_PLUGINS="ecgbench-atk").returncode == 2  # no such command


def test_example_metric_and_section_appear_in_the_report(tmp_path, monkeypatch):
    _example()
    monkeypatch.delenv("ECGBENCH_PLUGINS", raising=False)
    out = _run(tmp_path)
    write_report(out)
    attacks = pd.read_csv(out / "attacks.csv").set_index("model")
    y = np.arange(20) % 4
    expected = np.mean([(np.arange(20) < 5)[y == i].mean() for i in range(4)])
    assert attacks.loc["kachuee", "balanced_accuracy"] == pytest.approx(expected)
    assert "## Balanced accuracy (ecgbench-example)" in (out / "leaderboard.md").read_text()
    assert list(pd.read_csv(out / "leaderboard.csv")["min balanced accuracy adaptive"]) == pytest.approx([0.45, 0.25])


# -- broken hook plugins --------------------------------------------------------------------------
@hooks.hookimpl(specname="ecgbench_cell_metrics")
def _takes_an_argument_no_spec_has(record, beats):  # registered only by the test below
    return {}


def test_an_invalid_hook_plugin_is_one_error_naming_it_and_the_cli_still_starts(monkeypatch, capsys):
    from ecgbench.contracts import registry

    bad = registry.Entry("hooks", "bad-hooks", "test_hooks", "ecgbench-broken", "0.0.1")
    monkeypatch.setattr(registry, "hook_entries", lambda: [bad])
    with pytest.raises(PluginError, match=r"hook plugin 'bad-hooks' from ecgbench-broken 0.0.1 \(test_hooks\) is invalid"):
        hooks.manager()
    assert cli.main(["list"]) == 0  # the CLI starts; the error waits for `plugin-error`
    capsys.readouterr()
    assert cli.main(["plugin-error"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'bad-hooks' from ecgbench-broken" in err
