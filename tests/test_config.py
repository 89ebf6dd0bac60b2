"""Run configuration files: the example parses and resolves; every bad key or value is a one-line error."""
from __future__ import annotations

from pathlib import Path

import pytest

from ecgbench.config.run import DEFAULTS, RUN_KEYS, merge_config, read_run_config, resolve_profile
from ecgbench.config.profiles import get_profile

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "run.toml"


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_example_parses_and_resolves():
    cfg = read_run_config(EXAMPLE)
    assert cfg["datasets"] == ["mitbih"] and cfg["models"] == ["kachuee", "acharya"] and cfg["modes"] == ["adaptive"]
    assert cfg["profile"] == "smoke" and cfg["profile_overrides"] == {"epochs": 2} and cfg["executor"] == "serial"
    merged = merge_config(cfg, {})
    profile = resolve_profile(merged)
    assert profile.name == "smoke+epochs" and profile.epochs == 2 and profile.train_cap == get_profile("smoke").train_cap
    assert merged["split"] == "random" and merged["attacks"] == ["fgsm", "pgd"]


def test_every_key_in_one_file(tmp_path):
    (tmp_path / "mine.toml").write_text('base = "quick"\nepochs = 9\n')
    path = write(tmp_path, """
datasets = "mitbih"
models = ["kach*"]
attacks = ["pgd@foolbox", "hsj@art:paper-reference"]
modes = ["static", "adaptive-detect"]
split = "inter-patient"
seeds = [0, 1, 2]
eps = [0.003, 0.01, 1]
eps_uv = [5, 15.5]
profile = "mine.toml"
device = "cpu"
out = "runs/x"
data_dir = "/abs/data"
cache_dir = "cache"
threads = 2
source = "kachuee"
[executor]
executor = "jobs"
jobs = 3
tasks_per_gpu = 2
gpus_per_pack = 0.5
ray_address = "auto"
""")
    cfg = read_run_config(path)
    assert cfg["datasets"] == ["mitbih"] and cfg["seeds"] == [0, 1, 2] and cfg["eps"] == [0.003, 0.01, 1.0]
    assert cfg["eps_uv"] == [5.0, 15.5]
    assert cfg["out"] == str(tmp_path / "runs/x") and cfg["cache_dir"] == str(tmp_path / "cache") and cfg["data_dir"] == "/abs/data"
    assert cfg["profile"] == str(tmp_path / "mine.toml") and resolve_profile(cfg).epochs == 9
    assert (cfg["executor"], cfg["jobs"], cfg["tasks_per_gpu"], cfg["ray_address"], cfg["threads"]) == ("jobs", 3, 2, "auto", 2)
    assert cfg["gpus_per_pack"] == 0.5
    assert set(cfg) <= set(RUN_KEYS) | {"profile_overrides", "jobs", "tasks_per_gpu", "gpus_per_pack", "ray_address"}


def test_unknown_key_names_file_key_and_keys(tmp_path):
    path = write(tmp_path, 'model = ["kachuee"]\n')
    with pytest.raises(ValueError) as err:
        read_run_config(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: unknown key 'model'; keys: attacks, cache_dir, data_dir, datasets")


@pytest.mark.parametrize("text, why", [
    ("seeds = [0, 1.5]", "'seeds' must be a list of integers"),
    ("seeds = [-1]", "'seeds' must be an integer >= 0"),
    ("eps = [0.01, -0.1]", "'eps' must be a list of positive numbers"),
    ("eps = [true]", "'eps' must be a list of numbers"),
    ("models = []", "'models' must be a non-empty list"),
    ("models = [1]", "'models' must be a list of names"),
    ("threads = -1", "'threads' must be an integer >= 0"),
    ('device = "gpu"', "'device' must be one of auto, cpu, cuda"),
    ("split = 3", "'split' must be a non-empty string"),
    ('models = ["kachu"]', "models: .*'kachu'"),
    ('attacks = ["fgsmm"]', "attacks: .*'fgsmm'"),
    ('source = "nobody"', "source: unknown model 'nobody'"),
    ('modes = ["adaptive", "clean-ish"]', "modes: unknown mode 'clean-ish'; choose from static, adaptive, adaptive-detect"),
    ('profile = "quik"', "unknown profile 'quik'"),
    ("[profile]\nbase = \"quick\"\nepoch = 5", r"\[profile\]: unknown profile key 'epoch'; keys: attack_batch, attack_params, base"),
    ("[profile]\ntrain_cap = \"all\"", r"\[profile\]: profile key 'train_cap' must be an integer or \"none\""),
    ("[profile]\nattack_params = { pgdd = { max_iter = 2 } }", "attack 'pgdd', which is not registered"),
    ("[executor]\nexecutor = \"dask\"", "'executor.executor' must be one of serial, jobs, ray"),
    ("[executor]\njobs = 0", "'executor.jobs' must be an integer >= 1"),
    ("[executor]\nworkers = 2", r"unknown key 'workers' in \[executor\]; keys: executor, jobs, ray_address, tasks_per_gpu, gpus_per_pack"),
    ("[executor]\ngpus_per_pack = 2", r"'executor.gpus_per_pack' must be a share of one GPU in \(0, 1\]"),
    ("datasets = [", "not valid TOML"),
])
def test_bad_values_are_one_line_errors(tmp_path, text, why):
    path = write(tmp_path, text + "\n")
    with pytest.raises(ValueError, match=why) as err:
        read_run_config(path)
    assert "\n" not in str(err.value)
    assert str(path) in str(err.value) or "unknown profile" in str(err.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="--config: no such file"):
        read_run_config(tmp_path / "absent.toml")


def test_command_line_overrides_the_file(tmp_path):
    cfg = read_run_config(write(tmp_path, 'models = ["kachuee"]\nseeds = [0]\nprofile = "quick"\n[executor]\nexecutor = "jobs"\njobs = 2\n'))
    merged = merge_config(cfg, {"models": "acharya,shaker", "seeds": "1,2", "eps": None, "jobs": 4, "profile": "smoke"})
    assert merged["models"] == ["acharya", "shaker"] and merged["seeds"] == [1, 2] and merged["jobs"] == 4
    assert merged["executor"] == "jobs" and merged["profile"] == "smoke" and "eps" not in merged
    assert merged["device"] == DEFAULTS["device"]  # neither file nor command line: the default
    with pytest.raises(ValueError, match="--seeds '0,x': 'seeds' must be a list of integers"):
        merge_config(cfg, {"seeds": "0,x"})


def test_profile_given_on_the_command_line_keeps_the_files_overrides(tmp_path):
    cfg = read_run_config(write(tmp_path, '[profile]\nbase = "quick"\nepochs = 7\n'))
    profile = resolve_profile(merge_config(cfg, {"profile": "paper"}))
    assert profile.name == "paper+epochs" and profile.epochs == 7 and profile.folds == get_profile("paper").folds


def test_merged_configuration_is_plain_json(tmp_path):
    import json

    merged = merge_config(read_run_config(EXAMPLE), {"out": str(tmp_path)})
    assert json.loads(json.dumps(merged)) == merged


def test_a_budget_in_microvolts_keeps_the_keys_and_configuration_of_runs_without_one():
    """`eps_uv` is recorded only where set: cells, run.json settings and a bundle's configuration without it are as
    before it existed, so no finished cell or bundle of an older run is invalidated."""
    from dataclasses import replace

    from ecgbench.config.run import SETTINGS
    from ecgbench.execute.bundles import configuration
    from ecgbench.plan.cells import Cell
    from ecgbench.config.run import RunConfig

    plain = Cell("mitbih", "kachuee", "pgd", "adaptive", 0, 0.03)
    assert list(plain.as_dict()) == ["dataset", "model", "attack", "mode", "seed", "eps", "training"]
    assert Cell("mitbih", "kachuee", "pgd", "adaptive", 0, None, "clean", 15.0).as_dict()["eps_uv"] == 15.0
    assert plain.path(Path("o")).name == "pgd.adaptive.eps0.03.json"
    assert Cell("mitbih", "kachuee", "pgd", "adaptive", 1, None, "clean", 15.0).path(Path("o")).name == "pgd.adaptive.eps15uV.seed1.json"
    cfg = RunConfig(datasets=["mitbih"], models=["kachuee"], attacks=["pgd"], profile=get_profile("smoke"), out=Path("o"),
                    data_dir=Path("d"), cache=Path("c"))
    assert set(cfg.settings()) == set(SETTINGS) and configuration(cfg.settings()) == cfg.settings()
    uv = replace(cfg, eps_uv=(5.0,))
    assert uv.settings()["eps_uv"] == [5.0] and configuration(uv.settings()) == uv.settings()
