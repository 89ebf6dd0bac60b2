"""The registry: lazy entry points, duplicate names, filters, and the ECGBENCH_PLUGINS variable."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ecgbench.contracts.registry import Entry, Registry, RegistryError, registry


def _run(code: str, **env: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, **env}).stdout.strip()


def test_builtins_are_registered_through_entry_points():
    entries = {(e.kind, e.name): e for e in registry.entries}
    for kind, name in [("datasets", "mitbih"), ("models", "kachuee"), ("attacks", "fgsm"), ("attacks", "pgd")]:
        assert entries[(kind, name)].dist == "ecgbench-atk"


def test_listing_names_imports_no_plugin_and_no_torch():
    out = _run("import sys; from ecgbench.contracts.registry import registry, KINDS; "
               "[registry.names(k) for k in KINDS]; print('torch' in sys.modules, 'ecgbench.baselines.kachuee' in sys.modules)")
    assert out == "False False"


def test_get_loads_lazily_and_once():
    reg = Registry([Entry("models", "k", "ecgbench.baselines.kachuee:Kachuee", "ecgbench", "0")])
    assert reg._loaded == {}
    assert reg.get("models", "k") is reg.get("models", "k")
    assert reg.get("models", "k").__name__ == "Kachuee"


def test_a_name_from_two_distributions_is_an_error_naming_both():
    reg = Registry([Entry("models", "dup", "a.mod:A", "dist-a", "1.0"), Entry("models", "dup", "b.mod:B", "dist-b", "2.0")])
    with pytest.raises(RegistryError, match=r"dist-a 1\.0.*dist-b 2\.0"):
        reg.names("models")


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(RegistryError, match="unknown model 'nope'; registered: .*kachuee"):
        registry.entry("models", "nope")


def test_a_plugin_that_fails_to_import_names_itself_and_its_distribution():
    reg = Registry([Entry("attacks", "broken", "no_such_module_xyz:Attack", "broken-dist", "0.3")])
    with pytest.raises(RegistryError, match=r"attack plugin 'broken' from broken-dist 0\.3 failed to load"):
        reg.get("attacks", "broken")


def test_select_expands_all_globs_lists_and_keeps_backends():
    reg = Registry([Entry("models", n, f"m:{n}", "d", "1") for n in ("kachuee", "kachuee2", "acharya")]
                   + [Entry("attacks", n, f"m:{n}", "d", "1") for n in ("fgsm", "pgd")])
    assert reg.select("models", "all") == ["acharya", "kachuee", "kachuee2"]
    assert reg.select("models", "kach*") == ["kachuee", "kachuee2"]
    assert reg.select("models", "acharya,kach*") == ["acharya", "kachuee", "kachuee2"]
    assert reg.select("attacks", "pgd@foolbox,fgsm") == ["pgd@foolbox", "fgsm"]
    with pytest.raises(RegistryError, match="no model matches 'x\\*'"):
        reg.select("models", "x*")


def test_environment_variable_limits_the_distributions_that_load():
    code = "import json; from ecgbench.contracts.registry import registry; print(json.dumps(registry.names('models')))"
    assert "kachuee" in json.loads(_run(code))
    assert json.loads(_run(code, ECGBENCH_PLUGINS="some-other-dist")) == []
    assert "kachuee" in json.loads(_run(code, ECGBENCH_PLUGINS="ecgbench-atk"))
