"""The Python API: the README's example runs as written, and its records are the CLI's cells."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The `python` block under the README's "Python API" heading."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def example(tmp_path_factory, data_dir):
    """The README's example, run as written, in a fresh cache; returns its variables and what it printed."""
    cache = tmp_path_factory.mktemp("api-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ECGBENCH_DATA", str(data_dir))
        mp.setenv("ECGBENCH_CACHE", str(cache))
        namespace: dict = {}
        from contextlib import redirect_stdout
        from io import StringIO

        out = StringIO()
        with redirect_stdout(out):
            exec(compile(readme_example(), "README.md", "exec"), namespace)
    return namespace, out.getvalue(), cache


def test_the_readme_example_trains_attacks_and_scores_in_a_few_lines(example):
    ns, printed, _ = example
    assert len([line for line in readme_example().splitlines() if line.strip()]) < 10
    clean, pgd = ns["clean"], ns["pgd"]
    assert clean["status"] == "ok" and pgd["status"] == "ok", (clean.get("error"), pgd.get("error"))
    assert clean["cell"] == {"dataset": "mitbih", "model": "kachuee", "attack": None, "mode": "clean", "seed": 0, "eps": None,
                            "training": "clean"}
    assert pgd["cell"]["attack"] == "pgd" and pgd["cell"]["mode"] == "adaptive"
    assert clean["checkpoint"] == pgd["checkpoint"] == ns["kachuee"].key  # one trained model
    assert pgd["clean_accuracy"] == clean["metrics"]["accuracy"]  # the same model on the same test beats
    assert pgd["perturbation"]["linf_max"] <= 0.01 + 1e-5  # PGD stays in the paper's eps-ball
    assert f"clean {clean['metrics']['accuracy']:.1%}, under PGD {pgd['metrics']['accuracy']:.1%}" in printed


def test_attack_returns_the_beats_score_judges(example, data_dir):
    """`attack` gives the adversarial beats themselves: in the eps-ball, in range, one per test beat."""
    import ecgbench

    ns, _, _ = example
    adv = ecgbench.attack(ns["kachuee"], "fgsm")
    data = ns["data"]
    assert adv.x.shape == (len(data.test), data.test.x.shape[1]) and (adv.y == data.test.y).all()
    assert abs(adv.x - data.test.x).max() <= 0.01 + 1e-5 and adv.x.min() >= 0 and adv.x.max() <= 1


def test_the_api_and_the_cli_compute_the_same_cell(example, data_dir, tmp_path):
    """A CLI run with the same settings loads the API's checkpoint from the cache and writes the same record."""
    ns, _, cache = example
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "ecgbench", "run", "--models", "kachuee", "--attacks", "pgd", "--modes", "adaptive",
                          "--profile", "smoke", "--no-progress", "--out", str(out), "--cache-dir", str(cache),
                          "--data-dir", str(data_dir)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    cell = json.loads((out / "cells" / "mitbih" / "kachuee" / "pgd.adaptive.json").read_text())
    pgd = ns["pgd"]
    assert "trained kachuee" not in res.stderr  # served from the cache the API filled
    for field in ("key", "checkpoint", "correct", "y", "metrics", "budget"):
        assert cell[field] == json.loads(json.dumps(pgd[field])), field


def test_a_bad_name_is_one_line(data_dir, tmp_path):
    import ecgbench

    with pytest.raises(Exception, match="no dataset matches 'nope'"):
        ecgbench.load_split("nope", data_dir=data_dir, cache_dir=tmp_path)
    data = ecgbench.load_split("mitbih", profile="smoke", data_dir=data_dir, cache_dir=tmp_path)
    with pytest.raises(Exception, match="unknown model 'nobody'"):
        ecgbench.train("nobody", data)
