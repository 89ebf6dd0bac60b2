"""The runner on real beats: cached checkpoints and attacked sets are reused; modes differ as expected."""
from __future__ import annotations

import json

import pytest

from ecgbench.config.profiles import PROFILES
from ecgbench.config.run import RunConfig
from ecgbench.contracts.registry import parse_attack
from ecgbench.data.catalog import Catalog
from ecgbench.execute.runner import Runner
from ecgbench.plan.cells import Cell, cells_of
from ecgbench.plan.graph import Planner, plan
from ecgbench.contracts.registry import registry


def _config(tmp_path, data_dir, cache, **kw) -> RunConfig:
    base = dict(datasets=["mitbih"], models=["kachuee"], attacks=["cw"], profile=PROFILES["smoke"], out=tmp_path / "out",
                data_dir=data_dir, cache=cache, modes=("static", "adaptive"), source="acharya", progress=False)
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("runner")
    runner = Runner(_config(root, data_dir, root / "cache"))
    manifest = runner.run()
    return root, runner, manifest


def test_a_second_run_reuses_checkpoints_and_attacked_sets(first_run, data_dir):
    root, runner, manifest = first_run
    assert manifest["failures"] == []
    # kachuee clean, kachuee on clean + cw beats (with one attack, the paper's defence and its protocol are one
    # training), and the source (acharya); one static set (train and test beats), one adaptive attack per row
    assert runner.trainings == 3 and runner.attack_calls == 2 + 2
    again = Runner(_config(root, data_dir, root / "cache", out=root / "again", force=True))
    again.run()
    assert again.trainings == 0 and again.attack_calls == 2  # only the adaptive attacks run again
    for name in ("none.clean.json", "cw.static.json", "cw.adaptive.json", "cw.adaptive.defence.json"):
        a = json.loads((root / "out" / "cells" / "mitbih" / "kachuee" / name).read_text())
        b = json.loads((root / "again" / "cells" / "mitbih" / "kachuee" / name).read_text())
        assert a["correct"] == b["correct"], name



def test_a_run_stopped_just_after_writing_a_cell_counts_it(first_run, data_dir, monkeypatch):
    """A signal between a cell's write and the driver's count: run.json counts what is on disk."""
    from ecgbench.execute.scheduler import Outcome

    root, _, _ = first_run
    count = Outcome.add

    def interrupted(self, task, result):
        if task.kind == "cell":
            raise KeyboardInterrupt  # the cell's file is written; the driver has not counted it yet
        count(self, task, result)

    monkeypatch.setattr(Outcome, "add", interrupted)
    out = root / "stopped"
    with pytest.raises(KeyboardInterrupt):
        Runner(_config(root, data_dir, root / "cache", out=out)).run()
    written = list((out / "cells").rglob("*.json"))
    last = json.loads((out / "run.json").read_text())["invocations"][-1]
    assert len(written) == 1 and last["stopped"] == "KeyboardInterrupt" and last["cells_computed"] == 1

def test_white_box_attack_hurts_more_than_a_transferred_one(first_run):
    root, _, _ = first_run
    cells = root / "out" / "cells" / "mitbih" / "kachuee"
    static = json.loads((cells / "cw.static.json").read_text())
    adaptive = json.loads((cells / "cw.adaptive.defence.json").read_text())
    # Both score the same kachuee checkpoint (one attack: the defence is the protocol's model): static on beats
    # attacked through another model (acharya), adaptive on beats attacked through kachuee itself, eps 0.1 both.
    assert static["checkpoint"] == adaptive["checkpoint"]
    assert adaptive["metrics"]["accuracy"] < static["metrics"]["accuracy"] - 0.2
    assert adaptive["perturbation"]["linf_max"] <= 0.1 + 1e-5


def _catalog(cfg: RunConfig) -> Catalog:
    return Catalog(registry, cfg.data_dir, cfg.cache, cfg.profile, cfg.split)


def _planner(cfg: RunConfig) -> Planner:
    return Planner(cfg, registry, _catalog(cfg))


def test_plan_adds_detector_cells_only_for_models_with_a_detector(tmp_path, data_dir):
    cfg = _config(tmp_path, data_dir, tmp_path, models=["kachuee", "ecg-atk-gan"], attacks=["fgsm", "pgd@foolbox"],
                  modes=("static", "adaptive", "adaptive-detect"))
    cells = cells_of(cfg, registry)
    assert Cell("mitbih", "ecg-atk-gan", "pgd@foolbox", "adaptive-detect") in cells
    assert Cell("mitbih", "ecg-atk-gan", "pgd@foolbox", "adaptive-detect", training="defence") in cells
    assert not [c for c in cells if c.model == "kachuee" and c.mode == "adaptive-detect"]
    # two rows per model (clean, defence): clean + 2 adaptive each; static: 2 per model; detector: 2 attacks x 2 rows
    assert len(cells) == 2 * 2 * (1 + 2) + 2 * 2 + 2 * 2


def test_the_graph_holds_each_training_and_static_set_once(tmp_path, data_dir):
    cfg = _config(tmp_path, data_dir, tmp_path / "cache", models=["kachuee", "acharya"], attacks=["fgsm", "pgd"],
                  modes=("static", "adaptive"), source="kachuee")
    graph = plan(cfg, registry, _catalog(cfg))
    kinds = [t.kind for t in graph.tasks.values()]
    # per model: the clean training, the paper's defence (all static sets), one per attack's static set (the
    # paper's protocol); one static set per attack, made against the source (kachuee's clean training)
    assert kinds.count("cell") == 2 * (2 * (1 + 2) + 2) and kinds.count("train") == 2 * 4 and kinds.count("static") == 2
    keys = list(graph.tasks)
    for task in graph.tasks.values():  # every task comes after the tasks it needs
        assert all(keys.index(d) < keys.index(task.key) for d in task.deps), task.label
    for t in graph.of_kind("cell"):
        statics = {s.attack for s in t.train.statics}
        assert statics == {"clean": set(), "defence": {"fgsm", "pgd"}, "static": {t.cell.attack}}[t.cell.training], t.label
        assert (t.static is not None) == (t.cell.mode == "static")


def test_without_the_static_mode_adaptive_cells_attack_the_clean_model(tmp_path, data_dir):
    cfg = _config(tmp_path, data_dir, tmp_path / "cache", models=["kachuee", "acharya"], attacks=["fgsm", "pgd"],
                  modes=("adaptive",), source="kachuee")
    graph = plan(cfg, registry, _catalog(cfg))
    assert not graph.of_kind("static") and len(graph.of_kind("train")) == 2  # one clean training per model
    with_static = _config(tmp_path, data_dir, tmp_path / "cache", models=["kachuee"], attacks=["fgsm"], modes=("static", "adaptive"))
    cell = Cell("mitbih", "kachuee", "fgsm", "adaptive")
    assert _planner(cfg).cell_key(cell) == _planner(with_static).cell_key(cell)  # one model: trained on clean beats
    defended = Cell("mitbih", "kachuee", "fgsm", "adaptive", training="defence")
    assert _planner(with_static).cell_key(defended) != _planner(with_static).cell_key(cell)
    assert cell.path(tmp_path) != defended.path(tmp_path)


def test_seeds_and_budgets_multiply_the_cells_and_change_every_key(tmp_path, data_dir):
    cfg = _config(tmp_path, data_dir, tmp_path / "cache", attacks=["fgsm", "boundary"], modes=("static", "adaptive"),
                  seeds=(0, 1), eps=(0.003, 0.01, 0.03))
    cells = cells_of(cfg, registry)
    # two rows (clean, defence): clean each; fgsm static + 3 adaptive budgets per row; boundary static + one run per row
    per_seed = 2 + (1 + 3 * 2) + (1 + 1 * 2)
    assert len(cells) == 2 * per_seed
    assert Cell("mitbih", "kachuee", "fgsm", "adaptive", 1, 0.003) in cells
    assert Cell("mitbih", "kachuee", "fgsm", "adaptive", 1, None) in cells  # 0.01 is fgsm's own budget
    assert not [c for c in cells if c.attack == "boundary" and c.eps is not None]  # judged at each eps from one run
    pl = _planner(cfg)
    assert pl.cell_key(Cell("mitbih", "kachuee", None, "clean", 0)) != pl.cell_key(Cell("mitbih", "kachuee", None, "clean", 1))
    assert pl.train("mitbih", "kachuee", 0).key != pl.train("mitbih", "kachuee", 1).key
    paths = {c.path(tmp_path) for c in cells}
    assert len(paths) == len(cells)
    assert Cell("mitbih", "kachuee", None, "clean").path(tmp_path).name == "none.clean.json"  # old runs keep their files


def test_attack_specs_parse_back_end_and_variant():
    assert parse_attack("hsj@art:paper-reference") == ("hsj", "art", "paper-reference")
    assert parse_attack("pgd") == ("pgd", None, None)


def test_detector_aware_loss_rewards_misclassification_and_penalises_detection():
    import torch

    from ecgbench.engine.adapters import art_classifier
    from ecgbench.engine.detect import DetectorAware, DetectorAwareLoss

    loss = DetectorAwareLoss()
    y = torch.tensor([0])
    undetected = torch.tensor([[2.0, 0.0, 0.0, 1.0]])  # detector margin 1 - 2 < 0: no penalty
    detected = torch.tensor([[2.0, 0.0, 0.0, 5.0]])  # margin 5 - 2 = 3: penalised by 3
    ce = torch.nn.functional.cross_entropy(undetected[:, :3], y)
    assert torch.isclose(loss(undetected, y), ce) and torch.isclose(loss(detected, y), ce - 3.0)

    class Toy(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3]

        def detect(self, x):
            return x.flatten(1)[:, 3:5]

    wrapped = DetectorAware(Toy())
    clf = art_classifier(wrapped, torch.zeros(1, 1, 8), 4, (0.0, 1.0))
    assert clf._loss is wrapped.attack_loss
