"""Behaviour is kept: a smoke run of every built-in model x attack x mode reproduces a committed run's numbers.

`tests/reference/mitbih-smoke/<host>/` holds the tables of that run on each host that made one (the README names
the commits, the command and why it was last made again). Refactoring must not change a number: the same seed,
profile and thread count give the same numbers on the CPU of the host that made them (each folder's
`machine.json`); on a host with no reference of its own the test skips, naming the hosts that have one. Only the
built-in plugins take part (ECGBENCH_PLUGINS), so an installed third-party plugin does not change the plan.

Since rows became one trained model (issue 17), a static run's adaptive cells attack the clean-trained
model and the paper's defence instead of each attack's protocol model, so those numbers changed by
design; what the reference still pins is what that change left alone: the paper's static protocol
(Table 1's static layout, the static cells' attack details) and every model's clean accuracy.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REFERENCES = Path(__file__).parent / "reference" / "mitbih-smoke"
# The reference is a run of this command (its README). The pin runs the four attacks whose static
# sets and protocol models are cheapest (each attack's static protocol is independent of the others: its static
# set is made on the source model alone, its protocol models train on it alone), and only the static mode: that
# is what the pin holds (with the clean cells every row has), at half the time of all eight in every mode.
ATTACKS = ("apgd", "bim", "cw", "fgsm")
COMMAND = ["run", "--profile", "smoke", "--attacks", ",".join(ATTACKS), "--modes", "static",
           "--threads", "2", "--no-progress", "-q"]


def _this_hosts_reference() -> tuple[Path | None, str]:
    """The reference made on this host, or None and which hosts have one: one seed's training gives the same
    weights on one host only (results/same-seed-retrained/), so a pin holds where its machine.json agrees."""
    import torch

    from ecgbench.execute.runner import machine

    here = machine(torch.device("cpu"))
    made = {path.parent: _read_dict(path) for path in sorted(REFERENCES.glob("*/machine.json"))}
    for folder, made_on in made.items():
        if all(here.get(k) == v for k, v in made_on.items()):
            return folder, ""
    there = "; ".join(f"{f.name}: {m}" for f, m in made.items())
    return None, f"this host is {({k: here.get(k) for k in ('platform', 'torch')})}, references exist for {there}"


def test_every_reference_names_its_host():
    """A reference folder without machine.json would never be compared, silently: each must have one."""
    folders = [f for f in REFERENCES.iterdir() if f.is_dir()]
    assert folders and all({"platform", "torch"} <= set(_read_dict(f / "machine.json")) for f in folders)


@pytest.mark.slow
def test_a_smoke_run_reproduces_the_committed_numbers(tmp_path, data_dir):
    reference, why_not = _this_hosts_reference()
    if reference is None:
        pytest.skip(f"no reference was made on this host ({why_not}); make one here to pin this host")
    env = {**os.environ, "ECGBENCH_PLUGINS": "ecgbench-atk", "ECGBENCH_DATA": str(data_dir),
           "ECGBENCH_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "ecgbench", *COMMAND, "--out", str(out)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _sorted(_read(out, "table1-mitbih-static.json")) == _sorted(_ours(_read(reference, "table1-mitbih-static.json")))
    static = _ours(_static(_read(reference, "attacks.json")))
    assert _sorted(_static(_read(out, "attacks.json"), columns=static[0])) == _sorted(static)  # later columns left out
    clean = {r["model"]: r["clean"] for r in _read(out, "leaderboard.json") if r["training"] == "clean"}
    assert clean == {r["model"]: r["clean"] for r in _read(reference, "leaderboard.json") if r["training"] == "clean"}


def _read_dict(path: Path) -> dict:
    return json.loads(path.read_text())


def _read(folder: Path, name: str) -> list[dict]:
    return json.loads((folder / name).read_text())


def _ours(rows: list[dict]) -> list[dict]:
    """The reference's rows of the attacks the pin runs (and the clean ones)."""
    return [r for r in rows if r["attack"] in ("No Attack", *ATTACKS)]


def _sorted(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def _static(rows: list[dict], columns: dict | None = None) -> list[dict]:
    return [{k: r.get(k) for k in columns} if columns else r for r in rows if r["mode"] == "static"]
