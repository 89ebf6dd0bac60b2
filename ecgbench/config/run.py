"""The run's configuration, by one path: defaults < profile < `--config` file < command line.

`run_config` turns the merged settings into a checked `RunConfig`; the CLI, the Python API and the
tests all go through it. Run configuration files (`ecgbench run --config run.toml`) are read with the
standard library's tomllib.

A file holds any of the run's settings (see `examples/run.toml`):

    datasets = ["mitbih"]             # names, globs or "all"; a comma string works too
    models = ["kachuee", "acharya"]
    attacks = ["fgsm", "pgd@foolbox"]
    modes = ["adaptive"]
    split = "random"
    seeds = [0, 1, 2]
    eps = [0.003, 0.01, 0.03]
    profile = "quick"                 # a built-in name or a path; or a [profile] table:
    [profile]                         #   base = "quick", then any Profile field to override
    [executor]                        #   executor = "serial" | "jobs" | "ray", jobs, ray_address, tasks_per_gpu, gpus_per_pack

plus device, pack, out, data_dir, cache_dir, threads and source. Paths in a file (profile, out, data_dir,
cache_dir) are relative to the file's folder, so a committed configuration means the same from any
working directory. Command-line options override the file (`merge_config`). Every key and value is
checked when the file is read; an error is one line naming the file, the key and the keys that exist.
"""
from __future__ import annotations

import os
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecgbench.config.profiles import Profile, builtin_names, check_fields, get_profile

__all__ = ["RunConfig", "run_config", "read_run_config", "merge_config", "resolve_profile", "check_executor", "data_dir",
           "parse_duration", "deadline_for", "RUN_KEYS", "EXECUTOR_KEYS", "DEFAULTS", "MODES", "EXECUTORS", "DEVICES", "PACKS",
           "DEFAULT_SOURCE", "DATA_ENV", "DEFAULT_THREADS", "SETTINGS", "OPTIONAL_SETTINGS"]

MODES = ("static", "adaptive", "adaptive-detect")
EXECUTORS = ("serial", "jobs", "ray")
DEVICES = ("auto", "cpu", "cuda")
PACKS = ("auto", "on", "off")
DEFAULT_SOURCE = "ecg-atk-gan"  # paper 2.3: attacks are made against ECG-ATK-GAN's discriminator
DATA_ENV = "ECGBENCH_DATA"
SETTINGS = ("datasets", "split", "profile", "seeds", "eps", "source")  # RunConfig.settings(), as run.json names them
OPTIONAL_SETTINGS = ("eps_uv",)  # settings added later, recorded only when set, so older runs keep their configuration
DEFAULT_THREADS = 1  # torch threads a task without --threads, under every executor (execute.scheduler.threads_per_task)

LISTS = ("datasets", "models", "attacks", "modes", "seeds", "eps", "eps_uv")
PLUGIN_KINDS = {"datasets": "datasets", "models": "models", "attacks": "attacks", "source": "models"}
RUN_KEYS = ("attacks", "cache_dir", "data_dir", "datasets", "device", "eps", "eps_uv", "executor", "models", "modes", "out",
            "pack", "profile", "seeds", "source", "split", "threads")
EXECUTOR_KEYS = ("executor", "jobs", "ray_address", "tasks_per_gpu", "gpus_per_pack")
PATHS = ("out", "data_dir", "cache_dir")
# What `ecgbench run` does with no option and no file (its argparse defaults today).
DEFAULTS: dict[str, Any] = {"datasets": ["mitbih"], "models": ["all"], "attacks": ["all"], "modes": list(MODES),
                            "split": "random", "profile": "quick", "profile_overrides": {}, "device": "auto", "threads": 0, "pack": "auto",
                            "executor": "serial", "jobs": 1, "tasks_per_gpu": 1}


def _fail(source: str, key: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"{source}: {key!r} must be {expected}, got {value!r}")


def _int(source: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(source, key, f"an integer >= {low}", value)
    return value


def _str(source: str, key: str, value: Any, choices: tuple[str, ...] = ()) -> str:
    if not isinstance(value, str) or not value or (choices and value not in choices):
        raise _fail(source, key, f"one of {', '.join(choices)}" if choices else "a non-empty string", value)
    return value


def _list(source: str, key: str, value: Any) -> list:
    """A list value; a comma-separated string (the command line's form) is split."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or (not value and key != "attacks"):  # no attacks: a clean-only run
        raise _fail(source, key, "a non-empty list (or a comma-separated string)", value)
    if key == "seeds":
        return [_int(source, "seeds", _number(source, key, v, int), 0) for v in value]
    if key in ("eps", "eps_uv"):
        eps = [_number(source, key, v, float) for v in value]
        if any(e <= 0 for e in eps):
            raise _fail(source, key, "a list of positive numbers", value)
        return eps
    if not all(isinstance(v, str) and v for v in value):
        raise _fail(source, key, "a list of names", value)
    return value


def _number(source: str, key: str, value: Any, kind: type) -> Any:
    if isinstance(value, str):  # from a command-line comma string
        try:
            value = kind(value)
        except ValueError:
            raise _fail(source, key, f"a list of {'integers' if kind is int else 'numbers'}", value) from None
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok:
        raise _fail(source, key, f"a list of {'integers' if kind is int else 'numbers'}", value)
    return kind(value)


def _check_names(source: str, cfg: dict[str, Any]) -> None:
    """Plugin names and globs must match registered plugins; modes must be known modes."""
    from ecgbench.contracts.registry import RegistryError, registry

    for key, kind in PLUGIN_KINDS.items():
        if key in cfg:
            try:
                registry.select(kind, cfg[key]) if key != "source" else registry.entry(kind, cfg[key])
            except (RegistryError, ValueError) as exc:
                raise ValueError(f"{source}: {key}: {' '.join(str(exc).split())}") from exc
    if "modes" in cfg:
        bad = [m for m in cfg["modes"] if m not in MODES]
        if bad:
            raise ValueError(f"{source}: modes: unknown mode {bad[0]!r}; choose from {', '.join(MODES)}")


def _normalise(source: str, raw: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    """Checked, typed values of the run keys present in `raw`; relative paths joined to `folder`."""
    cfg: dict[str, Any] = {}
    for key, value in raw.items():
        if key in LISTS:
            cfg[key] = _list(source, key, value)
        elif key == "profile":
            if isinstance(value, dict):  # [profile]: base = ..., then field overrides
                if "base" in value:
                    cfg["profile"] = _path(folder, _str(source, "profile.base", value["base"]), profile=True)
                cfg["profile_overrides"] = check_fields(f"{source} [profile]", value, extra=("base",))
            else:
                cfg["profile"] = _path(folder, _str(source, key, value), profile=True)
        elif key == "executor" and isinstance(value, dict):
            cfg.update(_executor(source, value))
        elif key == "executor":
            cfg["executor"] = _str(source, key, value, EXECUTORS)
        elif key in ("split", "source"):
            cfg[key] = _str(source, key, value)
        elif key == "device":
            cfg[key] = _str(source, key, value, DEVICES)
        elif key == "pack":
            cfg[key] = _str(source, key, value, PACKS)
        elif key == "threads":
            cfg[key] = _int(source, key, value, 0)
        elif key in PATHS:
            cfg[key] = _path(folder, _str(source, key, value))
        else:
            raise ValueError(f"{source}: unknown key {key!r}; keys: {', '.join(RUN_KEYS)}")
    return cfg


def _executor(source: str, table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "executor":
            out[key] = _str(source, "executor.executor", value, EXECUTORS)
        elif key in ("jobs", "tasks_per_gpu"):
            out[key] = _int(source, f"executor.{key}", value, 1)
        elif key == "ray_address":
            out[key] = _str(source, "executor.ray_address", value)
        elif key == "gpus_per_pack":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise _fail(source, "executor.gpus_per_pack", "a share of one GPU in (0, 1]", value)
            out[key] = float(value)
        else:
            raise ValueError(f"{source}: unknown key {key!r} in [executor]; keys: {', '.join(EXECUTOR_KEYS)}")
    return out


def _path(folder: Path | None, value: str, profile: bool = False) -> str:
    """A path relative to the configuration file's folder; a profile name (no `.toml`, no folder) stays a name."""
    if profile and (value in builtin_names() or not (value.endswith(".toml") or len(Path(value).parts) > 1)):
        return value
    path = Path(value).expanduser()
    return str(path if folder is None or path.is_absolute() else folder / path)


def read_run_config(path: str | Path) -> dict[str, Any]:
    """The checked settings of a run configuration file, holding only the keys the file sets.

    Keys: RUN_KEYS, with `[profile]` split into `profile` (its base) and `profile_overrides` (checked Profile fields),
    and `[executor]` flattened into EXECUTOR_KEYS. Lists are lists, paths absolute or relative to the working directory.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ValueError(f"--config: no such file {source!r}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not valid TOML: {exc}") from exc
    cfg = _normalise(source, raw, path.resolve().parent)
    _check_names(source, cfg)
    if "profile" in cfg or "profile_overrides" in cfg:  # the profile must resolve: a bad base or override stops here
        try:
            resolve_profile({**DEFAULTS, **cfg})
        except ValueError as exc:
            raise ValueError(str(exc) if str(exc).startswith(source) else f"{source}: profile: {exc}") from exc
    return cfg


def merge_config(file_cfg: dict[str, Any], cli_overrides: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's settings: defaults, then the file, then the options given on the command line.

    `cli_overrides` uses the file's key names (`datasets`, `data_dir`, ...); a value of None means
    "not given" and is skipped, so argparse options should default to None. Comma strings are split
    and checked as in a file. A `--profile` replaces the file's base profile; the file's `[profile]`
    field overrides still apply on top of it (the profile's name then shows them: `paper+epochs`).
    The result is plain JSON (lists, strings, numbers): what run.json records.
    """
    cli: dict[str, Any] = {}
    for key, value in cli_overrides.items():
        if value is None:
            continue
        try:
            cli.update(_executor("command line", {key: value}) if key in EXECUTOR_KEYS and key != "executor"
                       else _normalise("command line", {key: value}, None))
        except ValueError as exc:  # name the option as typed: `--seeds '0,x': ...`
            raise ValueError(f"--{key.replace('_', '-')} {value!r}: {str(exc).split(': ', 1)[-1]}") from None
        bad = [m for m in cli.get("modes", ()) if m not in MODES] if key == "modes" else []
        if bad:
            raise ValueError(f"--modes {value!r}: unknown mode {bad[0]!r}; choose from {', '.join(MODES)}")
    return {**(DEFAULTS if defaults is None else defaults), **file_cfg, **cli}


def resolve_profile(cfg: dict[str, Any]) -> Profile:
    """The Profile a merged configuration asks for: its base with its field overrides."""
    return get_profile(cfg.get("profile", DEFAULTS["profile"]), cfg.get("profile_overrides") or None)


@dataclass
class RunConfig:
    """A checked run: what to run, how, where, and how it was asked for (recorded in run.json)."""

    # what
    datasets: list[str]
    models: list[str]
    attacks: list[str]
    profile: Profile
    # where
    out: Path
    data_dir: Path
    cache: Path
    split: str = "random"
    modes: tuple[str, ...] = MODES
    source: str | None = None  # model the static attacks target; default ecg-atk-gan (paper 2.3)
    seeds: tuple[int, ...] = ()  # () -> the profile's seed
    eps: tuple[float, ...] = ()  # () -> each attack's own budget
    eps_uv: tuple[float, ...] = ()  # absolute budgets in microvolts (issue 23), one per beat on the beat scale
    # how
    device: str = "auto"
    executor: str = "serial"  # serial | jobs | ray
    jobs: int = 1
    threads: int = 0  # torch threads per task; 0: DEFAULT_THREADS, under every executor
    pack: str = "auto"  # pack trainings of one model (issue 19): auto (on CUDA), on, off; speed only, keys unchanged
    ray_address: str | None = None
    tasks_per_gpu: int = 1
    gpus_per_pack: float = 1.0  # the share of a GPU a packed training asks Ray for (a pack fills one by default)
    force: bool = False
    retry_failed: bool = False
    progress: bool = True
    verbose: bool = False
    time_limit: float | None = None  # seconds (`--time-limit`), recorded in run.json
    deadline: float | None = None  # time.time() by which tasks stop (from `--time-limit`); None: no limit
    checkpoint_seconds: float = 300.0  # a running training saves its state at least this often (and every 5 epochs)
    outside: tuple = ()  # `ecgbench.contracts.outside.Outside`s: trained elsewhere, evaluated as they are
    # provenance
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # the resolved configuration, for run.json

    @property
    def source_model(self) -> str:
        return self.source or DEFAULT_SOURCE

    def seed_list(self) -> tuple[int, ...]:
        return self.seeds or (self.profile.seed,)

    def settings(self) -> dict[str, Any]:
        """The run's settings that change its keys, under run.json's names (`SETTINGS`): what two machines
        must agree on to continue one run."""
        return {"datasets": self.datasets, "split": self.split, "profile": self.profile.as_dict(),
                "seeds": list(self.seed_list()), "eps": list(self.eps),
                "source": self.source_model if "static" in self.modes else None,
                **({"eps_uv": list(self.eps_uv)} if self.eps_uv else {})}

    def plugins(self) -> list[tuple[str, str]]:
        """(kind, name) of every plugin the run uses: its datasets, models, attacks and, with static sets, their source."""
        from ecgbench.contracts.registry import attack_name

        used = [("datasets", d) for d in self.datasets] + [("models", m) for m in self.models]
        used += [("attacks", attack_name(a)) for a in self.attacks]
        if "static" in self.modes:
            used.append(("models", self.source_model))
        return sorted(set(used))


DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(option: str, value: str | float | int) -> float:
    """Seconds in a duration such as `90s`, `8m`, `2h`, `1h30m` or a plain number of seconds; a bad one is one line."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        parts = DURATION.findall(text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif parts and "".join(n + u for n, u in parts) == text:
            seconds = sum(float(n) * UNITS[u] for n, u in parts)
        else:
            raise ValueError(f"{option} {value!r}: not a duration; write e.g. 90s, 8m, 2h or 1h30m")
    if seconds < 0:
        raise ValueError(f"{option} {value!r}: must not be negative")
    return seconds


def deadline_for(limit: float, now: float | None = None) -> float:
    """The moment tasks must stop for a run limited to `limit` seconds from `now`: a tenth of it, at most a minute,
    is kept back for what ends a run (run.json, the report's tables and figures)."""
    return (time.time() if now is None else now) + limit - min(60.0, 0.1 * limit)


def data_dir(value: str | Path | None) -> Path:
    """`--data-dir`, else ECGBENCH_DATA, else ./data."""
    return Path(value or os.environ.get(DATA_ENV) or "data")


def check_executor(cfg: RunConfig) -> None:
    """A wrong executor setting is one line before anything runs."""
    if cfg.executor not in EXECUTORS:
        raise ValueError(f"--executor {cfg.executor!r}: choose one of {', '.join(EXECUTORS)}")
    if cfg.jobs < 1:
        raise ValueError(f"--jobs {cfg.jobs}: must be at least 1")
    if cfg.tasks_per_gpu < 1:
        raise ValueError(f"--tasks-per-gpu {cfg.tasks_per_gpu}: must be at least 1")
    if cfg.executor == "ray":
        try:
            import ray  # noqa: F401 - only whether it is installed
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'ecgbench-atk[ray]' (or pip install ray)") from None
    if cfg.executor != "serial" and sys.platform == "win32":  # pragma: no cover
        raise ValueError(f"--executor {cfg.executor}: not supported on Windows")


def run_config(given: dict[str, Any], config_file: str | Path | None = None, *, command: str = "", force: bool = False,
               retry_failed: bool = False, progress: bool = True, verbose: bool = False, time_limit: str | float | None = None,
               checkpoint_every: str | float | None = None, outside: tuple = ()) -> RunConfig:
    """The checked run configuration: defaults < profile < `config_file` < `given` (the command line's options).

    `given` uses the file's key names (`datasets`, `data_dir`, `jobs`, ...); None means "not given".
    Plugin names and globs are expanded through the registry, and every attack spec is built once, so a
    mistyped name, back-end, variant or parameter is one line before any training.

    `time_limit` (`--time-limit`, e.g. "2h"): the run stops itself in time, counted from now
    (`deadline_for`). `checkpoint_every` (`--checkpoint-every`, default 5m): how often a running
    training or attack saves its state at the least (a training also every 5 epochs; 0: every epoch).
    `outside`: trained models from elsewhere (`ecgbench.contracts.outside`), the run's models instead of `models`.
    """
    limit = None if time_limit is None else parse_duration("--time-limit", time_limit)
    every = 300.0 if checkpoint_every is None else parse_duration("--checkpoint-every", checkpoint_every)
    from ecgbench.config.attacks import build_attack
    from ecgbench.contracts.registry import RegistryError, registry
    from ecgbench.store.layout import cache_dir

    file_cfg = read_run_config(config_file) if config_file else {}
    o = merge_config(file_cfg, given)
    datasets = registry.select("datasets", o["datasets"])
    models = [m.name for m in outside] if outside else registry.select("models", o["models"])
    attacks = registry.select("attacks", o["attacks"]) if o["attacks"] else []
    for option, chosen, asked in (("--dataset", datasets, o["datasets"]), ("--models", models, o["models"])):
        if not chosen:
            raise ValueError(f"{option} {','.join(asked)!r}: names nothing to run; try 'all'")
    profile = resolve_profile(o)
    for spec in attacks:  # a mistyped back-end, variant or parameter stops here, before any training
        try:
            build_attack(spec, profile, registry)
        except RegistryError:
            pass  # a plugin that fails to import fails only its own cells
    cfg = RunConfig(datasets=datasets, models=models, attacks=attacks, profile=profile,
                    out=Path(o.get("out") or f"runs/{datasets[0]}-{profile.name}"), data_dir=data_dir(o.get("data_dir")),
                    cache=cache_dir(o.get("cache_dir")), split=o["split"], modes=tuple(o["modes"]), source=o.get("source"),
                    seeds=tuple(o.get("seeds") or ()), eps=tuple(o.get("eps") or ()), eps_uv=tuple(o.get("eps_uv") or ()),
                    device=o["device"], pack=o.get("pack", "auto"),
                    executor=o["executor"], jobs=o["jobs"], threads=o["threads"], ray_address=o.get("ray_address"),
                    tasks_per_gpu=o["tasks_per_gpu"], gpus_per_pack=o.get("gpus_per_pack", 1.0), force=force, retry_failed=retry_failed, progress=progress,
                    verbose=verbose, command=command, time_limit=limit,
                    deadline=None if limit is None else deadline_for(limit), checkpoint_seconds=every,
                    outside=tuple(outside),
                    extra={"options": o, "config_file": str(config_file) if config_file else None, "config": file_cfg,
                           **({"outside": [m.describe() | {"name": m.name} for m in outside]} if outside else {})})
    check_executor(cfg)
    return cfg
