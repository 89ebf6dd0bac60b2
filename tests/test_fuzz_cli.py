"""The command line's options, fuzzed: whatever a user types, the answer is a run configuration or one line.

`run_config` is everything `ecgbench run` does before it touches data, so each example costs
milliseconds; argparse's own errors exit 2 with one line (`ecgbench run: error: ...`).
"""
from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecgbench.contracts import PluginError
from ecgbench.cli.main import parser, run_config
from ecgbench.config.run import RunConfig
from ecgbench.contracts.registry import RegistryError

OPTIONS = {
    "--dataset": st.sampled_from(["mitbih", "ptbxl", "all", "mit*", "nope", "", ","]),
    "--models": st.sampled_from(["all", "kachuee", "kach*,acharya", "nope", "", "kachuee,,"]),
    "--attacks": st.sampled_from(["all", "", "fgsm", "pgd@foolbox", "pgd@nope", "hsj@art:paper-reference", "hsj:nope", "x@y:z"]),
    "--modes": st.sampled_from(["static", "adaptive,adaptive-detect", "", "clean", "static,nope"]),
    "--profile": st.sampled_from(["smoke", "quick", "standard", "paper", "nope", "/no/such.toml", ""]),
    "--seeds": st.one_of(st.sampled_from(["0", "0,1,2", "-1", "a", "1.5", "", ",,"]), st.text(max_size=6)),
    "--seed": st.sampled_from(["0", "7", "-3", "x", ""]),
    "--eps": st.one_of(st.sampled_from(["0.01", "0.001,0.1", "0", "-1", "nan", "inf", "x", ""]), st.text(max_size=6)),
    "--executor": st.sampled_from(["serial", "jobs", "ray", "dask", ""]),
    "--jobs": st.sampled_from(["1", "2", "0", "-1", "two"]),
    "--threads": st.sampled_from(["0", "1", "-2", "x"]),
    "--tasks-per-gpu": st.sampled_from(["1", "4", "0", "x"]),
    "--device": st.sampled_from(["auto", "cpu", "cuda", "tpu"]),
    "--split": st.sampled_from(["random", "inter-patient", "patient"]),
}
FLAGS = ["--force", "--retry-failed", "--no-progress", "--quiet", "--verbose", "--wait", "--nope"]


@st.composite
def argv(draw) -> list[str]:
    args = ["run"]
    for name in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=5, unique=True)):
        args += [name, draw(OPTIONS[name])]
    args += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    return args


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ECGBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(args=argv())
def test_any_command_line_is_a_configuration_or_one_line(args):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser().parse_args(args)
    except SystemExit as exc:  # argparse: usage errors
        assert exc.code == 2 and err.getvalue().count("\n") == 1 and err.getvalue().startswith("ecgbench")
        return
    try:
        cfg = run_config(ns)
    except (ValueError, RegistryError, PluginError) as exc:  # ours: one line naming the option or value
        assert "\n" not in str(exc) and str(exc)
        return
    assert isinstance(cfg, RunConfig) and cfg.models and cfg.datasets
    assert all(e > 0 for e in cfg.eps) and all(s >= 0 for s in cfg.seeds) and cfg.jobs >= 1


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,a"], "--seeds '0,a': 'seeds' must be a list of integers"),
    (["--eps", "0,0.01"], "--eps '0,0.01': 'eps' must be a list of positive numbers"),
    (["--eps-uv", "5,-1"], "--eps-uv '5,-1': 'eps_uv' must be a list of positive numbers"),
    (["--jobs", "0", "--executor", "jobs"], "--jobs 0: 'executor.jobs' must be an integer >= 1"),
    (["--modes", "static,nope"], "--modes 'static,nope': unknown mode 'nope'"),
    (["--profile", "nope"], "nope"),
])
def test_bad_values_name_the_option(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_config(parser().parse_args(["run", *args]))
