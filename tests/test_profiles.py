"""Profiles as TOML files: the built-ins keep their values (cache keys depend on them), user files and errors."""
from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from importlib import resources
from pathlib import Path

import pytest

from ecgbench.config.profiles import PROFILES, Profile, builtin_names, describe_profiles, get_profile, list_profiles
from ecgbench.store.io import cache_key

ROOT = Path(__file__).resolve().parents[1]

# `Profile.as_dict()` of each built-in profile at commit bd01274, before profiles became files. The
# cache keys of cached checkpoints and cells, and the committed results/*/run.json, hold these; the
# changes since are the budgets of attacks added after bd01274 in smoke and quick: square's queries, and
# apgd-t's iterations (as apgd's; it changed only cell keys, which the microvolt scale had changed anyway),
# and paper's costly_attack_batch (cell keys only: trainings and static sets hash their own fields).
BEFORE = {
    "smoke": {"name": "smoke", "epochs": 3, "subset": True, "train_cap": 250, "test_cap": 40, "smote_target": 250,
              "folds": 1, "val_fraction": 0.1, "batch_size": 128, "attack_batch": 256, "static_train_cap": 200,
              "attack_params": {"boundary": {"queries": 50}, "hsj": {"max_iter": 2, "max_eval": 50, "init_eval": 10},
                                "cw": {"max_iter": 5}, "apgd": {"max_iter": 5}, "apgd-t": {"max_iter": 5}, "pgd": {"max_iter": 5},
                                "square": {"queries": 50}},
              "seed": 0},
    "quick": {"name": "quick", "epochs": 3, "subset": False, "train_cap": 2000, "test_cap": 250, "smote_target": 2000,
              "folds": 1, "val_fraction": 0.1, "batch_size": 128, "attack_batch": 1024, "static_train_cap": 1000,
              "attack_params": {"boundary": {"queries": 200}, "hsj": {"max_iter": 2, "max_eval": 100, "init_eval": 20},
                                "apgd": {"max_iter": 20}, "apgd-t": {"max_iter": 20}, "square": {"queries": 100}},
              "seed": 0},
    "paper": {"name": "paper", "epochs": 100, "subset": False, "train_cap": None, "test_cap": None, "smote_target": 10000,
              "folds": 5, "val_fraction": 0.1, "batch_size": 128, "attack_batch": 1024, "costly_attack_batch": 100,
              "static_train_cap": None, "attack_params": {}, "seed": 0},
}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_builtin_profiles_keep_their_values_and_cache_keys(name):
    d = get_profile(name).as_dict()
    assert d == BEFORE[name]
    assert cache_key(d) == cache_key(BEFORE[name])
    assert PROFILES[name] == get_profile(name)


def test_committed_quick_results_record_the_quick_profile():
    """The committed quick runs were made with today's quick values (their run.json says so), except
    for parameters of attacks those runs did not include (square came later)."""
    import json

    for run in ("mitbih-quick", "mitbih-interpatient-quick", "ptbxl-quick"):
        path = ROOT / "results" / run / "run.json"
        if path.exists():
            recorded = json.loads(path.read_text())
            today = get_profile("quick").as_dict()
            ran = {a.split("@")[0].split(":")[0] for a in recorded["attacks"]}
            for profile in (today, recorded["profile"]):
                profile["attack_params"] = {k: v for k, v in profile["attack_params"].items() if k in ran}
            assert recorded["profile"] == today, run


def test_as_dict_leaves_out_new_fields_only_while_none():
    p = get_profile("quick")
    assert "patience" not in p.as_dict() and "costly_test_cap" not in p.as_dict()
    assert "train_cap" in get_profile("paper").as_dict()  # old optional fields stay, None or not
    s = get_profile("standard").as_dict()
    assert s["patience"] == get_profile("standard").patience and s["costly_test_cap"] == 1000


def test_builtin_files_state_the_defences_defaults_which_leave_the_keys_as_they_were():
    """Each built-in file states every parameter of each built-in defence, at its default (issue 23), and
    as_dict leaves them out (the pinned keys above hold); a value off the default is kept, alone."""
    from ecgbench.contracts.registry import registry

    for p in list_profiles():
        assert set(p.defence_params) == {"pgd-at", "trades"}, p.name
        for name, values in p.defence_params.items():
            assert values == registry.get("defences", name).defaults, (p.name, name)
        assert "defence_params" not in p.as_dict()
    wider = replace(get_profile("quick"), defence_params={"pgd-at": {"eps": 0.02, "steps": 7}, "trades": {"beta": 6}})
    assert wider.as_dict() == {**get_profile("quick").as_dict(), "defence_params": {"pgd-at": {"eps": 0.02}}}


def test_a_user_file_sets_defence_parameters(tmp_path):
    path = tmp_path / "wide.toml"
    path.write_text('base = "quick"\n[defence_params]\npgd-at = { eps = 0.02, eps_step = 0.005 }\n')
    p = get_profile(path)
    assert p.defence_params == {"pgd-at": {"eps": 0.02, "eps_step": 0.005}}  # a table replaces the base's as a whole
    assert p.as_dict()["defence_params"] == p.defence_params and p.attack_params == get_profile("quick").attack_params
    over = get_profile("quick", {"defence_params": {"trades": {"beta": 1.0}}})
    assert over.name == "quick+defence_params" and over.as_dict()["defence_params"] == {"trades": {"beta": 1.0}}


@pytest.mark.parametrize("table, why", [
    ('pgd-at = 3', "'defence_params' must be a table of tables"),
    ('pgd-att = { eps = 0.02 }', "defence_params names defence 'pgd-att', which is not registered; registered: pgd-at, trades"),
    ('pgd-at = { eps = 0.02, beta = 1.0 }', "defence_params sets beta for defence 'pgd-at', which takes eps, eps_step, steps"),
])
def test_bad_defence_parameters_are_one_line_errors_naming_the_file(tmp_path, table, why):
    path = tmp_path / "bad.toml"
    path.write_text(f'base = "smoke"\n[defence_params]\n{table}\n')
    with pytest.raises(ValueError, match=why) as err:
        get_profile(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="profile overrides: defence_params sets steps_ for defence 'trades'"):
        get_profile("smoke", {"defence_params": {"trades": {"steps_": 3}}})


def test_builtin_files_state_every_field_and_ship_as_package_data():
    """Every built-in file names every field (a reader sees all values), and pyproject ships the folder."""
    every = {f.name for f in fields(Profile)} - {"name"}
    folder = resources.files("ecgbench.config").joinpath("profile_files")
    for name in builtin_names():
        table = tomllib.loads(folder.joinpath(f"{name}.toml").read_text())
        assert set(table) == every, name
    assert set(builtin_names()) == {"smoke", "quick", "standard", "paper"}
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ecgbench.config"]
    shipped = {p.name for pattern in package_data for p in (ROOT / "ecgbench" / "config").glob(pattern)}
    assert {f"{n}.toml" for n in builtin_names()} <= shipped


def test_standard_profile_is_the_papers_data_on_the_natural_test_set():
    """Issue 11: all beats, natural test set, SMOTE to 10,000 (paper 3.1), one fold, early stopping
    within the paper's 100 epochs (3.2), full attack budgets, costly attacks on 1,000 beats."""
    s = get_profile("standard")
    assert (s.train_cap, s.test_cap, s.static_train_cap) == (None, None, None)
    assert s.smote_target == 10_000 and s.folds == 1 and s.batch_size == 128 and not s.subset
    assert s.epochs <= 100 and s.patience is not None and 1 <= s.patience < s.epochs
    assert s.costly_test_cap == 1000 and s.attack_params == {}


def test_list_profiles_is_smallest_first():
    assert [p.name for p in list_profiles()] == ["smoke", "quick", "standard", "paper"]


def test_user_file_with_base_overrides_fields(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "quick"\nepochs = 20\npatience = 5\ntrain_cap = "none"\n[attack_params]\npgd = { max_iter = 40 }\n')
    p = get_profile(path)
    quick = get_profile("quick")
    assert p.name == "mine" and p.epochs == 20 and p.patience == 5 and p.train_cap is None
    assert p.attack_params == {"pgd": {"max_iter": 40}}  # a table replaces the base's as a whole
    assert (p.test_cap, p.smote_target, p.static_train_cap) == (quick.test_cap, quick.smote_target, quick.static_train_cap)


def test_base_may_be_a_file_next_to_the_file(tmp_path):
    (tmp_path / "a.toml").write_text('base = "smoke"\nepochs = 7\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\nseed = 3\n')
    p = get_profile(str(tmp_path / "b.toml"))
    assert (p.name, p.epochs, p.seed, p.train_cap) == ("b", 7, 3, 250)


def test_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n')
    with pytest.raises(ValueError, match="loop"):
        get_profile(tmp_path / "a.toml")


def test_misspelled_key_names_file_key_and_the_keys_that_exist(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('base = "quick"\nepoch = 20\n')
    with pytest.raises(ValueError) as err:
        get_profile(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "'epoch'" in msg
    assert "keys: attack_batch, attack_params, base, batch_size, costly_attack_batch, costly_test_cap, defence_params, epochs" in msg


@pytest.mark.parametrize("line, why", [
    ("epochs = 2.5", "'epochs' must be an integer"),
    ("epochs = true", "'epochs' must be an integer"),
    ("epochs = 0", "'epochs' must be at least 1"),
    ('epochs = "none"', "'epochs' must be an integer, got 'none'"),
    ('train_cap = "all"', "'train_cap' must be an integer or \"none\""),
    ("subset = 1", "'subset' must be true or false"),
    ("val_fraction = 1.5", "strictly between 0 and 1"),
    ('attack_params = { pgd = 3 }', "'attack_params' must be a table of tables"),
    ('attack_params = { pgdd = { max_iter = 3 } }', "attack 'pgdd', which is not registered"),
])
def test_wrong_types_and_values_are_one_line_errors(tmp_path, line, why):
    path = tmp_path / "bad.toml"
    path.write_text(f'base = "smoke"\n{line}\n')
    with pytest.raises(ValueError, match=why) as err:
        get_profile(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_file_without_base_needs_epochs_and_takes_defaults(tmp_path):
    (tmp_path / "bare.toml").write_text("seed = 1\n")
    with pytest.raises(ValueError, match="needs 'epochs'"):
        get_profile(tmp_path / "bare.toml")
    (tmp_path / "min.toml").write_text("epochs = 4\n")
    assert get_profile(tmp_path / "min.toml") == Profile("min", epochs=4)


def test_invalid_toml_and_unknown_names_are_one_line_errors(tmp_path):
    (tmp_path / "broken.toml").write_text("epochs = [\n")
    with pytest.raises(ValueError, match=r"broken.toml: not valid TOML"):
        get_profile(tmp_path / "broken.toml")
    with pytest.raises(ValueError, match="unknown profile 'quik'.*smoke, quick, standard, paper"):
        get_profile("quik")
    with pytest.raises(ValueError, match="no such file"):
        get_profile(tmp_path / "absent.toml")


def test_overrides_rename_a_changed_profile():
    p = get_profile("quick", {"epochs": 10, "patience": 3})
    assert p.name == "quick+epochs,patience" and p.epochs == 10 and p.patience == 3
    assert get_profile("quick", {"epochs": 3}) == get_profile("quick")  # nothing changed, same profile and keys
    with pytest.raises(ValueError, match="profile overrides: unknown profile key 'epoch'"):
        get_profile("quick", {"epoch": 10})
    with pytest.raises(ValueError, match="profile overrides: profile key 'test_cap'"):
        get_profile("quick", {"test_cap": "lots"})


def test_describe_profiles_lists_every_profile_and_field():
    text = describe_profiles()
    header = text.splitlines()[0].split()
    assert header == ["name", "smoke", "quick", "standard", "paper", "meaning"]
    for f in fields(Profile):
        if f.name != "name":  # every field, with what it means
            line = next((line for line in text.splitlines() if line.startswith(f.name + " ")), "")
            assert f.metadata["help"] in line, f.name
    assert "hsj: max_iter=2, max_eval=100, init_eval=20" in text


def test_profiles_command_prints_the_table(capsys, tmp_path):
    from ecgbench.cli.main import main

    assert main(["profiles"]) == 0
    assert capsys.readouterr().out.strip() == describe_profiles().strip()
    (tmp_path / "mine.toml").write_text('base = "standard"\npatience = 4\n')
    assert main(["profiles", "quick", str(tmp_path / "mine.toml")]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["name", "quick", "mine", "meaning"]
    assert main(["profiles", "nope"]) == 2


def test_costly_attacks_run_in_the_profiles_costly_batches():
    """standard and paper attack costly attacks 100 beats a call (each call's result saved as it ends), the others 1,024;
    quick and smoke, whose costly attacks take minutes, keep one batch size."""
    from ecgbench.config.attacks import build_attack
    from ecgbench.contracts.registry import registry

    for name, costly in (("standard", 100), ("paper", 100), ("quick", 1024), ("smoke", 256)):
        p = get_profile(name)
        assert p.attack_batch_for(build_attack("square", p, registry)) == costly, name
        assert p.attack_batch_for(build_attack("fgsm", p, registry)) == p.attack_batch, name
