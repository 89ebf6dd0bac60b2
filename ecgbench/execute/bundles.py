"""Moving a run between machines: `ecgbench bundle` packs a run folder's cells and exactly the cache
entries its unfinished work needs; `ecgbench unbundle` (or `run --from-bundle`) checks and places them.

What a bundle holds is decided by the plan, as a resumed run would see it: for each cell still to
compute, the finished trainings and static sets it reads, and the saved state of every training,
static set and attack still under way. The beats cache is never carried (it is rebuilt from the
data in seconds); `leave_out_under` also leaves out finished trainings that took less than that.

A bundle records the run's configuration and each plugin's identity (name, distribution, version,
source hash: what cache keys hash). Unbundling refuses a bundle whose plugins differ from the ones
installed here, or whose configuration differs from the run folder it goes to (or from the command
given with `--from-bundle`), naming the first difference. Files already there are never overwritten
with other content: they are kept and counted.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecgbench import __version__, log
from ecgbench.config.run import EXECUTOR_KEYS, OPTIONAL_SETTINGS, RUN_KEYS, SETTINGS, RunConfig, run_config
from ecgbench.contracts.registry import Registry, registry as default_registry
from ecgbench.execute.runner import Runner
from ecgbench.execute.scheduler import in_cache, needed
from ecgbench.plan.graph import Graph
from ecgbench.plan.keys import identities, identity
from ecgbench.plan.tasks import Task
from ecgbench.store.bundle import BundleError, difference, read_bundle, write_bundle
from ecgbench.store.io import atomic_write, meta_path, read_json, write_json
from ecgbench.store.layout import attacked_path, checkpoint_path, partial_path, read_checkpoint, state_paths

__all__ = ["bundle_run", "unbundle", "configuration", "Placed"]


def configuration(run: dict[str, Any]) -> dict[str, Any]:
    """What must agree for two machines to continue one run: the settings run.json records that change cache keys."""
    return {k: run.get(k) for k in SETTINGS} | {k: run[k] for k in OPTIONAL_SETTINGS if run.get(k)}


def _run_config(run_dir: Path, cache: Path | None, data_dir: Path | None) -> tuple[RunConfig, dict]:
    """The run's configuration as its run.json records it, pointed at this machine's folders."""
    path = run_dir / "run.json"
    if not path.exists():
        raise ValueError(f"{run_dir}: no run.json; bundle a folder that `ecgbench run --out` wrote")
    run = read_json(path)
    options = dict((run.get("config") or {}).get("options") or {})
    if not options:
        raise ValueError(f"{path}: records no options (written by an ecgbench older than 0.2); rerun it once to update it")
    overrides = options.pop("profile_overrides", None)
    if overrides:  # the [profile] table form: its base and the fields it overrides
        options["profile"] = {"base": options.get("profile", "quick"), **overrides}
    given = {k: v for k, v in options.items() if k in RUN_KEYS or k in EXECUTOR_KEYS}
    given.update(out=str(run_dir), **({"cache_dir": str(cache)} if cache else {}), **({"data_dir": str(data_dir)} if data_dir else {}))
    return run_config(given, command=run.get("command", "")), run


def _entry(path: Path) -> list[Path]:
    return [p for p in (path, meta_path(path)) if p.exists()]


def _states(final: Path) -> list[Path]:
    return [p for slot in state_paths(final) for p in _entry(slot)]


def _partial_files(cache: Path, task: Task) -> list[Path]:
    """The saved state of a task still under way (a training or a pack, the two halves of a static set, a cell's attack)."""
    if task.kind in ("train", "pack"):  # a pack's running state lives beside its own (never written) entry
        return _states(checkpoint_path(cache, task.model, task.key))
    if task.kind == "static":
        return [p for part in ("train", "test") for p in _states(partial_path(cache, task.attack_name, task.key, part))]
    return sorted(p for p in (cache / "attacked").glob(f"*-{task.cell_key}.cell.state*"))


def _final_files(cache: Path, task: Task, leave_out_under: float) -> list[Path]:
    """A finished training's checkpoint or a static set, unless it is a training quicker than `leave_out_under` seconds."""
    if task.kind == "train":
        path = checkpoint_path(cache, task.model, task.key)
        if leave_out_under > 0 and path.exists():
            found = read_checkpoint(path)
            if found is not None and float(found[1].get("seconds", 0.0)) < leave_out_under:
                return []
        return _entry(path)
    return _entry(attacked_path(cache, task.attack_name, task.key)) if task.kind == "static" else []


def needed_files(cfg: RunConfig, graph: Graph, todo: list[Task], leave_out_under: float = 0.0) -> list[Path]:
    """The cache files the unfinished cells `todo` need to continue elsewhere without redoing finished work."""
    cache = cfg.cache
    run = needed(graph, todo, lambda t: in_cache(cache, t))
    running = {t.key for t in run}
    files: list[Path] = []
    for task in run:
        files += _partial_files(cache, task)
        for dep in task.deps:
            if dep not in running:
                files += _final_files(cache, graph.tasks[dep], leave_out_under)
    return sorted(set(files))


def bundle_run(run_dir: Path, dest: Path, *, cache: Path | None = None, data_dir: Path | None = None,
               leave_out_under: float = 0.0, reg: Registry | None = None) -> dict[str, Any]:
    """Write the bundle of the run in `run_dir` to `dest`; returns its manifest (with `size`, the file's bytes)."""
    reg = reg or default_registry
    run_dir = Path(run_dir)
    cfg, run = _run_config(run_dir, cache, data_dir)
    runner = Runner(cfg, reg)
    graph = runner.prepare()
    todo, _ = runner.pending(graph)
    files = {f"results/{p.relative_to(run_dir).as_posix()}": p for p in [run_dir / "run.json", *sorted((run_dir / "cells").rglob("*.json"))]}
    files.update({f"cache/{p.relative_to(cfg.cache).as_posix()}": p for p in needed_files(cfg, graph, todo, leave_out_under)})
    manifest = write_bundle(Path(dest), files, {
        "ecgbench": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": run.get("command"),
        "configuration": configuration(run), "plugins": identities(reg, cfg), "cells_left": len(todo),
        "leave_out_under": leave_out_under})
    return {**manifest, "size": Path(dest).stat().st_size}


@dataclass
class Placed:
    """What unbundling did: files written, files already there (same bytes), files kept that differ."""

    written: int = 0
    same: int = 0
    kept: int = 0
    manifest: dict[str, Any] | None = None


def unbundle(file: Path, out: Path, cache: Path, *, expect: RunConfig | None = None, reg: Registry | None = None) -> Placed:
    """Check the bundle `file` and put its run folder files in `out` and its cache entries in `cache`.

    Refused (`BundleError`, one line, nothing written): a damaged or crafted bundle; a plugin whose
    identity differs from the one installed here; a configuration other than `out`'s run.json (if
    there is one) or `expect`'s (the command a `run --from-bundle` was given).
    """
    reg = reg or default_registry
    file, out, cache = Path(file), Path(out), Path(cache)
    staged = read_bundle(file, cache)
    try:
        m = staged.manifest
        _check_plugins(file, m.get("plugins") or {}, reg)
        theirs = m.get("configuration") or {}
        if (out / "run.json").exists():
            _check_same(file, theirs, configuration(read_json(out / "run.json")), f"the run in {out}")
        if expect is not None:
            _check_same(file, theirs, expect.settings(), "this command")
        placed = Placed(manifest=m)
        for name in staged.names():
            top, rel = name.split("/", 1)
            target = (out if top == "results" else cache) / rel
            if rel == "run.json":
                _merge_run_json(staged.path(name), target)
                placed.written += 1
            else:
                _place(staged.path(name), target, placed)
        return placed
    finally:
        staged.discard()


def _check_plugins(file: Path, theirs: dict[str, list], reg: Registry) -> None:
    for key, ident in sorted(theirs.items()):
        kind, name = key.split("/", 1)
        here = identity(reg, kind, name)
        if here != ident:
            raise BundleError(file, f"plugin {key} differs: the bundle's is {_ident(ident)}, here {_ident(here)}; "
                                    "install the same version on both machines")


def _ident(ident: list) -> str:
    return "not loadable" if len(ident) < 4 else f"{ident[1]} {ident[2]} (source {ident[3]})"


def _check_same(file: Path, theirs: dict, ours: dict, what: str) -> None:
    diff = difference(theirs, ours)
    if diff:
        raise BundleError(file, f"made for another configuration than {what}: {diff}")


def _place(src: Path, target: Path, placed: Placed) -> None:
    """Move a checked file into place atomically, unless a file is there: same bytes count as placed, others are kept."""
    if target.exists():
        if target.read_bytes() == src.read_bytes():
            placed.same += 1
        else:
            placed.kept += 1
            log.info(f"kept {target}: it differs from the bundle's copy (the file here wins)")
        return
    with open(src, "rb") as fh:
        atomic_write(target, lambda out: shutil.copyfileobj(fh, out, 1 << 20))
    placed.written += 1


def _merge_run_json(src: Path, target: Path) -> None:
    """run.json: the bundle's, or, where one is here, this one with the bundle's invocations it lacks (by start and command)."""
    theirs = read_json(src)
    if not target.exists():
        write_json(target, theirs)
        return
    ours = read_json(target)
    known = {(i.get("started"), i.get("command")) for i in ours.get("invocations", [])}
    extra = [i for i in theirs.get("invocations", []) if (i.get("started"), i.get("command")) not in known]
    ours["invocations"] = sorted(ours.get("invocations", []) + extra, key=lambda i: str(i.get("started")))
    write_json(target, ours)
