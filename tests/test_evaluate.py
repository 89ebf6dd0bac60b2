"""Evaluating a model trained elsewhere (`ecgbench evaluate`, `ecgbench.evaluate`), the sanity flags, and the zoo.

The outside model is trained here, in plain PyTorch, on real MIT-BIH beats; every check is of what the code
guarantees (cells, keys, checksums, errors, flags of models built to raise them), not of one net's accuracy.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ecgbench
from ecgbench.contracts.base import PluginError
from ecgbench.contracts.outside import outside
from ecgbench.engine.sanity import check_model
from ecgbench.report.flags import row_flags
from ecgbench.report.results import results
from ecgbench.store import zoo
from ecgbench.store.io import Damaged
from cellfactory import cell

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "evaluate"
sys.path.insert(0, str(EXAMPLE))
from mynet import TinyNet  # noqa: E402


def cli(*args: str, cwd: Path, cache: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "ecgbench", *args], capture_output=True, text=True, env=env, cwd=cwd)


def cells_of(out: Path, model: str) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "cells" / "mitbih" / model).glob("*.json"))}


@pytest.fixture(scope="module")
def split(data_dir, tmp_path_factory):
    return ecgbench.load_split("mitbih", profile="smoke", data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def trained(split, tmp_path_factory) -> tuple[TinyNet, Path]:
    """TinyNet trained in a plain PyTorch loop on the smoke split's beats, its state_dict saved as a user would."""
    x, y = torch.as_tensor(split.train.x)[:, None], torch.as_tensor(split.train.y)
    torch.manual_seed(0)
    net = TinyNet(len(split.classes))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(150):
        i = torch.randint(0, len(y), (64,))
        loss = F.cross_entropy(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("user") / "tiny.pt"
    torch.save(net.state_dict(), path)
    return net.eval(), path


@pytest.fixture(scope="module")
def evaluated(trained, data_dir, tmp_path_factory):
    """The same checkpoint evaluated from Python (the module itself) and from the CLI (file and class path)."""
    net, ckpt = trained
    root = tmp_path_factory.mktemp("evaluate")
    py = ecgbench.evaluate(net, name="tinynet", attacks="fgsm,pgd", profile="smoke", out=root / "py",
                           data_dir=data_dir, cache_dir=root / "cache-py")
    res = cli("evaluate", "--model", f"{EXAMPLE / 'mynet.py'}:TinyNet", "--checkpoint", str(ckpt), "--attacks", "fgsm,pgd",
              "--profile", "smoke", "--out", str(root / "cli"), "--no-progress", cwd=root, cache=root / "cache-cli",
              data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    return root, py, res


def test_an_outside_model_gets_the_same_cells_from_python_and_the_cli_without_retraining(evaluated, trained, split):
    root, py, res = evaluated
    net, ckpt = trained
    a, b = cells_of(root / "py", "tinynet"), cells_of(root / "cli", "tinynet")
    assert set(a) == set(b) == {"none.clean.json", "fgsm.adaptive.json", "pgd.adaptive.json"}
    for name in a:  # one checkpoint, given as a module or as a file: the same outcomes, beat by beat
        assert a[name]["correct"] == b[name]["correct"], name
    clean = b["none.clean.json"]
    expected = net(torch.as_tensor(split.test.x)[:, None]).argmax(1).numpy() == split.test.y
    assert clean["correct"] == "".join("1" if c else "0" for c in expected)  # the given weights, not retrained ones
    assert clean["outside"]["sha256"] == zoo_hash(ckpt) and clean["outside"]["class"].endswith("mynet.py:TinyNet")
    assert clean["trained_on"] == "elsewhere, evaluated as given" and clean["train"]["outside"]["checkpoint"] == "tiny.pt"
    assert re.search(r"^tinynet: clean \d+\.\d%, white-box worst \(eps 0\.01\) \d+\.\d%, flags: none$", res.stdout, re.M)
    assert py.row["model"] == "tinynet" and py.row["flags"] == "none" and not py.failures


def zoo_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_checkpoint_is_never_served_a_cached_result(evaluated, trained, data_dir, tmp_path):
    root, _, _ = evaluated
    net, ckpt = trained
    other = tmp_path / "tiny.pt"
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["head.bias"] += 1.0
    torch.save(state, other)
    res = cli("evaluate", "--model", f"{EXAMPLE / 'mynet.py'}:TinyNet", "--checkpoint", str(other), "--attacks", "fgsm,pgd",
              "--profile", "smoke", "--out", str(root / "cli"), "--no-progress", cwd=tmp_path, cache=root / "cache-cli",
              data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "3 cells planned, 0 already done" in res.stderr  # same folder, same cache: the new checksum changes every key
    assert cells_of(root / "cli", "tinynet")["none.clean.json"]["outside"]["sha256"] == zoo_hash(other)


@pytest.mark.parametrize("extra, said", [
    (["--window", "187"], "expects window 187, but dataset 'mitbih' has 280"),
    (["--value-range=-1,1"], "--transform zscore"),
    (["--transform", "minmax"], "--transform 'minmax': unknown; choose one of none, zscore"),
    (["--name", "kachuee"], "--name 'kachuee': taken by a registered model"),
])
def test_inputs_that_do_not_fit_are_one_line_naming_the_option(extra, said, trained, data_dir, tmp_path):
    _, ckpt = trained
    res = cli("evaluate", "--model", f"{EXAMPLE / 'mynet.py'}:TinyNet", "--checkpoint", str(ckpt), "--attacks", "fgsm",
              "--profile", "smoke", "--out", str(tmp_path / "out"), "--no-progress", *extra, cwd=tmp_path,
              cache=tmp_path / "cache", data_dir=data_dir)
    assert res.returncode in (1, 2) and said in res.stderr.strip().splitlines()[-1] + res.stdout, res.stderr[-2000:]


def test_a_checkpoint_that_does_not_fit_or_is_not_a_state_dict_is_named(trained, data_dir, tmp_path):
    _, ckpt = trained
    wrong = tmp_path / "wrong.pt"
    torch.save({"head.weight": torch.zeros(3, 3)}, wrong)
    pickled = tmp_path / "pickled.pt"
    torch.save(TinyNet(), pickled)  # a whole module: needs unpickling code, refused by weights_only=True
    for bad, said in ((wrong, "does not fit --model"), (pickled, "not a loadable state_dict with weights_only=True")):
        res = cli("evaluate", "--model", f"{EXAMPLE / 'mynet.py'}:TinyNet", "--checkpoint", str(bad), "--attacks", "fgsm",
                  "--profile", "smoke", "--out", str(tmp_path / bad.stem), "--no-progress", cwd=tmp_path,
                  cache=tmp_path / "cache", data_dir=data_dir)
        assert res.returncode == 2 and said in res.stderr.splitlines()[-1], res.stderr[-2000:]  # before any work
        assert not (tmp_path / bad.stem).exists()
    with pytest.raises(PluginError, match="no such file"):
        outside(f"{EXAMPLE / 'mynet.py'}:TinyNet", tmp_path / "absent.pt")
    with pytest.raises(PluginError, match="could not load it"):
        outside(f"{EXAMPLE / 'mynet.py'}:NoSuchClass", ckpt)


def test_a_declared_transform_runs_inside_the_evaluated_module(trained):
    from ecgbench.contracts.outside import OutsideEntry, DIST

    net, ckpt = trained
    spec = outside(TinyNet, ckpt, name="tiny-z", transform="zscore")
    cls = OutsideEntry("models", spec.name, spec.target, DIST, "v", spec).load()
    module = cls(4, 280)
    module.net.load_state_dict(torch.load(ckpt, weights_only=True))
    x = torch.rand(5, 1, 280)
    z = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-8)
    torch.testing.assert_close(module.eval()(x), net(z))


# -- sanity flags -------------------------------------------------------------------------------------
class Rounded(TinyNet):
    """Quantises its input first: gradients are zero almost everywhere (gradient masking)."""

    def forward(self, x):
        return super().forward(torch.round(x * 8) / 8)


class DropoutOn(TinyNet):
    """Dropout left on at evaluation: a randomised model."""

    def forward(self, x):
        return self.head(F.dropout(self.features(x).flatten(1), 0.5, training=True))


class Softmaxed(TinyNet):
    """Returns probabilities instead of logits."""

    def forward(self, x):
        return super().forward(x).softmax(1)


@pytest.mark.parametrize("cls, flag", [(Rounded, "zero-gradients"), (DropoutOn, "randomised"), (Softmaxed, "probabilities")])
def test_each_flag_is_raised_by_a_model_built_to_cause_it_and_no_other(cls, flag, trained, split):
    net, _ = trained
    model = cls(len(split.classes))
    model.load_state_dict(net.state_dict())
    torch.manual_seed(0)
    assert check_model(model, split.test.x, split.test.y, torch.device("cpu"))["flags"] == [flag]
    assert check_model(net, split.test.x, split.test.y, torch.device("cpu"))["flags"] == []


def test_a_flag_reaches_the_row_of_an_evaluated_model(trained, data_dir, tmp_path):
    net, _ = trained
    model = Softmaxed(4)
    model.load_state_dict(net.state_dict())
    result = ecgbench.evaluate(model, name="softmaxed", attacks="fgsm", profile="smoke", out=tmp_path / "out",
                               data_dir=data_dir, cache_dir=tmp_path / "cache")
    assert result.row["flags"] == "probabilities"
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "probabilities |" in text and "flag probabilities: outputs look like probabilities" in text


def test_a_black_box_attack_stronger_than_every_white_box_one_is_flagged():
    n = 500
    white = np.ones(n, bool)
    white[:100] = False  # white-box worst: 80 %
    for black_acc, raised in ((0.70, True), (0.80, False), (0.799, False)):
        black = np.arange(n) >= round(n * (1 - black_acc))
        part = [cell("m", None, "clean", np.ones(n, bool)), cell("m", "pgd", "adaptive", white),
                cell("m", "square", "adaptive", black)]
        part[0]["sanity"] = {"flags": []}
        assert row_flags(results(part)) == (["black-box-stronger"] if raised else []), black_acc
    assert row_flags(results([cell("m", None, "clean", np.ones(4, bool))])) is None  # no checks recorded: not checked


# -- the zoo ------------------------------------------------------------------------------------------
def test_the_zoo_lists_its_models_and_every_file_matches_its_checksum():
    models = zoo.entries()
    assert len(models) >= 12
    for e in models:
        data = (zoo.zoo_dir() / e["file"]).read_bytes()
        assert len(data) == e["bytes"] and zoo_hash(zoo.zoo_dir() / e["file"]) == e["sha256"]
        assert e["flags"] == [] and e["training"]["n_params"] > 0 and 0 < e["accuracy"]["clean"] <= 1
    res = subprocess.run([sys.executable, "-m", "ecgbench", "zoo"], capture_output=True, text=True)
    assert res.returncode == 0 and f"{len(models)} models in" in res.stdout
    assert "kachuee-mitbih-random-quick-seed0" in res.stdout


def test_zoo_models_load_verified_and_raise_no_flag(split, data_dir, tmp_path):
    beats = {"mitbih": split, "ptbxl": ecgbench.load_split("ptbxl", profile="smoke", data_dir=data_dir,
                                                            cache_dir=tmp_path / "cache")}
    for e in zoo.entries():
        net = ecgbench.load_model(e["name"])
        data = beats[e["dataset"]]
        assert check_model(net, data.test.x, data.test.y, torch.device("cpu"))["flags"] == [], e["name"]
    by_fields = ecgbench.load_model("kachuee", dataset="mitbih", split="random", seed=0)
    assert sum(p.numel() for p in by_fields.parameters()) == zoo.find("kachuee")["training"]["n_params"]
    with pytest.raises(LookupError, match="has no kachuee trained on mitbih"):
        ecgbench.load_model("kachuee", seed=7)


def test_a_damaged_zoo_file_is_refused(tmp_path):
    copy = tmp_path / "zoo"
    shutil.copytree(zoo.zoo_dir(), copy)
    entry = zoo.find("acharya", folder=copy)
    path = copy / entry["file"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(Damaged, match="SHA-256 differs"):
        ecgbench.load_model("acharya", zoo_dir=copy)


@pytest.mark.parametrize("model, attacks, files", [
    ("kachuee", "fgsm,pgd", ("none.clean.json", "fgsm.adaptive.json", "pgd.adaptive.json")),
    ("ecg-atk-gan", "fgsm", ("none.clean.json", "fgsm.adaptive.json", "fgsm.adaptive-detect.json")),
])
def test_a_zoo_model_evaluated_reproduces_its_committed_row(model, attacks, files, data_dir, tmp_path):
    """A zoo model (MIT-BIH, quick) through `ecgbench evaluate`: its cells' per-beat outcomes are those of the
    committed run (results/mitbih-quick) that trained it, bit for bit, on the CPU; ECG-ATK-GAN's detector too."""
    out = tmp_path / "out"
    res = cli("evaluate", "--zoo", f"{model}-mitbih-random-quick-seed0", "--attacks", attacks, "--profile", "quick",
              "--out", str(out), "--no-progress", cwd=tmp_path, cache=tmp_path / "cache", data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    committed = REPO / "results" / "mitbih-quick" / "cells" / "mitbih" / model
    for name in files:
        ours = json.loads((out / "cells" / "mitbih" / f"{model}-zoo" / name).read_text())
        theirs = json.loads((committed / name).read_text())
        assert ours["correct"] == theirs["correct"] and ours["y"] == theirs["y"], name
        assert ours.get("detection") == theirs.get("detection"), name
        assert ours["outside"]["sha256"][:16] == theirs["weights"]


def test_the_readme_example_runs_as_written(data_dir, tmp_path):
    """The shell block under "Evaluate your own model", each line run in a fresh folder and cache."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Evaluate your own model", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(tmp_path / "cache")}
    for line in (ln.split("#")[0].strip() for ln in block.strip().splitlines()):
        if not line:
            continue
        argv = [a.replace("examples/", f"{REPO}/examples/") for a in shlex.split(line)]
        argv = [sys.executable, *argv[1:]] if argv[0] == "python" else [sys.executable, "-m", "ecgbench", *argv[1:]]
        res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)
        assert res.returncode == 0, (line, res.stderr[-2000:])
    board = {r["model"]: r for r in json.loads((tmp_path / "runs" / "board-with-tinynet" / "leaderboard.json").read_text())}
    assert set(board) == {"kachuee", "acharya", "tinynet"} and board["tinynet"]["flags"] == "none"  # merged: its row
    assert "| tinynet " in (tmp_path / "runs" / "board-with-tinynet" / "leaderboard.md").read_text()
