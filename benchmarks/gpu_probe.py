"""GPU probe (issue 10): one script, one table, at most `--budget-s` seconds (default 450) on one GPU.

    python benchmarks/gpu_probe.py --out DIR [--device cuda] [--budget-s 450] [--sections steps,concurrency,attacks,matrix]

Run from a checkout; ecgbench need not be installed (the script imports it, its models and its
attacks from the checkout). Sections, in order, each in its own try/except so one failure costs
only its rows, each stopped early when the budget runs out:

- `env`: torch, CUDA, cuDNN, TF32 flags, and which optional packages import.
- `steps` (torch + numpy only): per model, ms per training step at batch 128 (`train.measure_step`):
  `today` (Conv1d, eager, `float(loss)` every step: the harness before issue 10), `fast` (Conv1d run as
  channels-last Conv2d, no host sync), `fast+benchmark` (plus cudnn.benchmark), `fast+bf16` (autocast, for
  information only: the harness is float32), and `fast+graph` (the whole step replayed as a CUDA graph,
  measured in a child process so that a step that cannot be captured cannot upset the probe's CUDA context).
- `concurrency` (torch + numpy only): K = 1, 2, 4, 8 trainings side by side, aggregate steps/s, as
  K processes (each its own CUDA context, graph path) and as K CUDA graphs on K streams in one process.
- `pack` (torch + numpy only): each model's members trained as one packed model (`engine/pack.py`, issue 19),
  member steps per second for K = 1, 3, 9, 40 packed, against one model's steps per second (issue 19's
  target: K=40 at least 20x one model's).
- `attacks` (needs adversarial-robustness-toolbox and foolbox, i.e. scipy, scikit-learn, eagerpy):
  beats/s of every registered attack and back-end on the GPU against a Kachuee model (trained briefly on
  real MIT-BIH beats when wfdb, scikit-learn, imbalanced-learn and ECGBENCH_DATA are there, else on
  synthetic beats), each sized by a pilot call to take about `--attack-seconds`.
- `matrix` (needs every dependency of ecgbench and ECGBENCH_DATA): `ecgbench run --profile quick
  --models all --attacks all --device cuda` in a subprocess, killed at the remaining budget; wall time
  and cells written.

Writes `gpu-probe.md` and `gpu-probe.json` into `--out` after every section (so a run cut short still
leaves what it measured) and prints the table at the end. `--quick` shrinks everything for a CPU smoke run.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("env", "steps", "concurrency", "pack", "attacks", "matrix")
OPTIONAL = ("numpy", "scipy", "sklearn", "imblearn", "art", "foolbox", "eagerpy", "wfdb", "pandas", "tabulate",
            "matplotlib", "skimage", "tqdm", "filelock", "pluggy", "ray")


# -- finding ecgbench, its models and attacks without an install ------------------------------
def import_ecgbench() -> None:
    """Make `ecgbench`, `ecgbench.baselines` and `ecgbench.plugins` importable from this checkout."""
    if importlib.util.find_spec("ecgbench") is None:
        sys.path.insert(0, str(REPO))
    import ecgbench

    for sub in ("baselines", "plugins"):
        name = f"ecgbench.{sub}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:  # not installed: the folder at the top of the checkout (pyproject's package-dir)
            spec = importlib.util.spec_from_file_location(name, REPO / sub / "__init__.py", submodule_search_locations=[str(REPO / sub)])
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            setattr(ecgbench, sub, module)


def entry_points(kind: str) -> dict[str, str]:
    """name -> 'module:attr' for `ecgbench.<kind>`: the installed registry, else pyproject.toml's table."""
    try:
        from ecgbench.contracts.registry import registry

        names = registry.names(kind)
        if names:
            return {n: registry.entry(kind, n).value for n in names}
    except Exception:  # noqa: BLE001 - fall back to the checkout's pyproject
        pass
    text = (REPO / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10: the table's `name = "module:attr"` lines, read by hand
        section = text.split(f'[project.entry-points."ecgbench.{kind}"]', 1)[1].split("\n[", 1)[0]
        pairs = (line.split("=", 1) for line in section.splitlines() if "=" in line and not line.lstrip().startswith("#"))
        return dict(sorted((k.strip(), v.split("#")[0].strip().strip('"')) for k, v in pairs))
    return dict(sorted(tomllib.loads(text)["project"]["entry-points"][f"ecgbench.{kind}"].items()))


def load(value: str) -> Any:
    module, _, attr = value.partition(":")
    return getattr(importlib.import_module(module), attr)


# -- the table --------------------------------------------------------------------------------
class Table:
    """Rows of (section, what, value, unit, note), printed as they come and saved after every section."""

    def __init__(self, out: Path | None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.env: dict[str, Any] = {}
        self.out = out

    def add(self, section: str, what: str, value: float | str | None, unit: str = "", note: str = "", **extra: Any) -> None:
        row = {"section": section, "what": what, "value": value, "unit": unit, "note": note, **extra}
        self.rows.append(row)
        print(f"[{section}] {what}: {_fmt(value)} {unit} {note}".rstrip(), flush=True)

    def markdown(self) -> str:
        lines = ["| section | what | value | unit | note |", "|---|---|---:|---|---|"]
        lines += [f"| {r['section']} | {r['what']} | {_fmt(r['value'])} | {r['unit']} | {r['note']} |" for r in self.rows]
        env = ", ".join(f"{k}: {v}" for k, v in self.env.items())
        return f"# GPU probe\n\n{env}\n\n" + "\n".join(lines) + "\n"

    def save(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in (("gpu-probe.md", self.markdown()),
                           ("gpu-probe.json", json.dumps({"env": self.env, "rows": self.rows}, indent=1, default=str))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)  # atomic: a probe killed mid-write leaves the previous file


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return "" if v is None else str(v)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _known(option: str, asked: list[str] | None, registered: dict[str, str]) -> None:
    unknown = sorted(set(asked or ()) - set(registered))
    if unknown:
        raise ValueError(f"{option}: {', '.join(unknown)} not registered; choose from {', '.join(registered)}")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


# -- sections ---------------------------------------------------------------------------------
def section_env(t: Table, args: argparse.Namespace, budget: Budget) -> None:
    import torch

    t.env.update(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                 device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                 cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                 cudnn_tf32=torch.backends.cudnn.allow_tf32, matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
                 cpu_threads=torch.get_num_threads())
    for name in OPTIONAL:
        try:
            module = importlib.import_module(name)
            t.add("env", name, getattr(module, "__version__", "present"))
        except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
            t.add("env", name, "missing", note=_error(exc)[:80])


STEP_PATHS: dict[str, dict[str, Any]] = {
    "today": dict(accelerated=False, host_sync=True),
    "fast": dict(accelerated=True),
    "fast+benchmark": dict(accelerated=True, benchmark=True),
    "fast+bf16": dict(accelerated=True, autocast="bfloat16"),
}


def _step_time(value: str, device: str, batch: int, steps: int, warmup: int, kw: dict[str, Any]) -> float:
    """Seconds per step of the model at `value` ('module:attr') on one path of STEP_PATHS (or cuda_graphs=True)."""
    import torch

    from ecgbench.engine.train import measure_step

    kw = dict(kw)
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = kw.pop("benchmark", False)
    if "autocast" in kw:
        kw["autocast"] = getattr(torch, kw["autocast"])
    try:
        return measure_step(load(value), 4, 280, batch, device, steps, warmup=warmup, **kw)
    finally:
        torch.backends.cudnn.benchmark = saved


def _graph_steps_worker(models: list[tuple[str, str]], device: str, batch: int, steps: int, warmup: int, out: Any) -> None:
    """The fast+graph rows, in a child process: a capture that fails (a step that syncs with the host) cannot
    leave the probe's own CUDA context in a bad state. Models with their own training step go last."""
    import_ecgbench()
    for name, value in models:
        try:
            out.put((name, _step_time(value, device, batch, steps, warmup, {"accelerated": True, "cuda_graphs": True}), None))
        except Exception as exc:  # noqa: BLE001 - reported as the model's row
            out.put((name, None, _error(exc)))
    out.put(None)


def section_steps(t: Table, args: argparse.Namespace, budget: Budget) -> None:
    models = entry_points("models")
    _known("--models", args.models, models)
    names = args.models or list(models)
    for path, kw in STEP_PATHS.items():
        if path == "fast+benchmark" and args.device != "cuda":
            continue
        for name in names:
            if budget.left() < 5:
                t.add("steps", f"{name} {path}", None, note="skipped: budget spent")
                continue
            try:
                s = _step_time(models[name], args.device, args.batch, args.steps, args.warmup, kw)
                t.add("steps", f"{name} {path}", s * 1e3, "ms/step", f"batch {args.batch}, {args.steps} steps")
            except Exception as exc:  # noqa: BLE001 - a path that fails is a row saying why
                t.add("steps", f"{name} {path}", None, note=_error(exc))
    if args.device != "cuda" or budget.left() < 20:
        return
    order = sorted(names, key=lambda n: hasattr(load(models[n]), "phase_loss"))  # custom steps last: a failed capture ends the child
    def row(item: tuple) -> None:
        name, s, err = item
        t.add("steps", f"{name} fast+graph", None if s is None else s * 1e3, "ms/step" if s else "",
              err or f"batch {args.batch}, {4 * args.steps} steps, child process")
    _in_child(t, "steps", "fast+graph", _graph_steps_worker,
              ([(n, models[n]) for n in order], args.device, args.batch, 4 * args.steps, args.warmup), budget, row)


def _in_child(t: Table, section: str, what: str, worker: Callable[..., None], args: tuple, budget: Budget,
              row: Callable[[tuple], None]) -> None:
    """Run `worker(*args, queue)` in a spawned process (a failed CUDA-graph capture cannot upset the probe's own CUDA
    context) and hand each item it puts to `row`, until it puts None; a child that dies or overruns is one row."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=worker, args=(*args, out))
    proc.start()
    try:
        while (item := out.get(timeout=max(budget.left(), 10))) is not None:
            row(item)
    except Exception as exc:  # noqa: BLE001 - a child that dies or overruns is one row
        t.add(section, what, None, note=f"child process: {_error(exc)}")
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()


def _training_worker(value: str, device: str, batch: int, graphs: bool, seconds: float, barrier: Any, out: Any) -> None:
    """One training in its own process: build, warm up (capture), wait for the others, count steps for `seconds`."""
    try:
        import_ecgbench()
        import torch

        from ecgbench.engine.accel import GraphedStep, accelerate, sync
        from ecgbench.engine.train import build
        from ecgbench.engine.steps import training_hooks

        model = accelerate(build(load(value), 4, 280, 0).to(device), device).train()
        n = 4 * batch
        x, y = torch.rand(n, 1, 280, device=device), torch.arange(n, device=device) % 4
        flag = torch.zeros_like(y)
        optimizers, step = training_hooks(model)
        batches = torch.randperm(n, device=device).split(batch)
        graphed = GraphedStep(step, model, optimizers, x, y, flag, batch) if graphs else None
        run = graphed if graphed is not None else (lambda b: step(x[b], y[b], flag[b], optimizers))
        for i in range(5):
            run(batches[i % len(batches)])
        sync(device)
        barrier.wait(timeout=120)
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for b in batches:
                run(b)
            count += len(batches)
            sync(device)
        out.put((count, time.perf_counter() - t0, None))
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        out.put((0, 0.0, _error(exc)))
        try:
            barrier.abort()
        except Exception:  # noqa: BLE001
            pass


def _processes(value: str, args: argparse.Namespace, k: int, graphs: bool, budget: Budget) -> tuple[float, str]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_training_worker, args=(value, args.device, args.batch, graphs, args.seconds, barrier, out))
             for _ in range(k)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=max(30.0, budget.left())) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    errors = [e for _, _, e in results if e]
    if errors:
        raise RuntimeError(errors[0])
    return sum(c / s for c, s, _ in results), ""


def _streams(value: str, args: argparse.Namespace, k: int) -> tuple[float, str]:
    """K trainings as K CUDA graphs, each replayed on its own stream from one thread."""
    import torch

    from ecgbench.engine.accel import GraphedStep, accelerate
    from ecgbench.engine.train import build
    from ecgbench.engine.steps import training_hooks

    device, n = torch.device(args.device), 4 * args.batch
    runs = []
    for i in range(k):
        model = accelerate(build(load(value), 4, 280, i).to(device), device).train()
        x, y = torch.rand(n, 1, 280, device=device), torch.arange(n, device=device) % 4
        optimizers, step = training_hooks(model)
        runs.append((GraphedStep(step, model, optimizers, x, y, torch.zeros_like(y), args.batch), torch.cuda.Stream(device),
                     torch.randperm(n, device=device).split(args.batch)))
    torch.cuda.synchronize(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        for j in range(len(runs[0][2])):
            for graphed, stream, batches in runs:
                with torch.cuda.stream(stream):
                    graphed(batches[j])
        count += k * len(runs[0][2])
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - t0), ""


def section_concurrency(t: Table, args: argparse.Namespace, budget: Budget) -> None:
    value = entry_points("models")[args.concurrency_model]
    graphs = args.device == "cuda"
    kinds: list[tuple[str, Callable[[int], tuple[float, str]]]] = [
        (f"processes ({'graph' if graphs else 'eager'})", lambda k: _processes(value, args, k, graphs, budget))]
    if graphs:
        kinds += [("streams (graph)", lambda k: _streams(value, args, k)),
                  ("processes (eager)", lambda k: _processes(value, args, k, False, budget))]
    for label, run in kinds:
        for k in args.concurrency:
            if budget.left() < args.seconds + 20:
                t.add("concurrency", f"{args.concurrency_model} x{k} {label}", None, note="skipped: budget spent")
                continue
            try:
                rate, note = run(k)
                t.add("concurrency", f"{args.concurrency_model} x{k} {label}", rate, "steps/s (all)", f"batch {args.batch} {note}".strip())
            except Exception as exc:  # noqa: BLE001
                t.add("concurrency", f"{args.concurrency_model} x{k} {label}", None, note=_error(exc))


def _attack_model(args: argparse.Namespace, t: Table) -> tuple[Any, Any, Any, str]:
    """A Kachuee model with real decisions to flip and beats it classifies, on the device."""
    import torch

    device = torch.device(args.device)
    data = os.environ.get("ECGBENCH_DATA")
    if data:
        try:
            from ecgbench.kit.testing import reference_setup

            model, x, y, _ = reference_setup(data, per_class=64)
            return model.to(device).eval(), x.to(device), y.to(device), "Kachuee, 3 epochs on MIT-BIH smoke records"
        except Exception as exc:  # noqa: BLE001 - fall back to synthetic beats
            t.add("attacks", "real beats", None, note=f"using synthetic beats: {_error(exc)}")
    from ecgbench.engine.train import build
    from ecgbench.engine.steps import training_hooks

    gen = torch.Generator().manual_seed(0)
    n = 2048
    y = torch.arange(n) % 4
    s = torch.linspace(0, 1, 280)
    x = torch.sin(2 * torch.pi * (y[:, None] + 1) * 2 * s) + 0.3 * torch.randn(n, 280, generator=gen)
    x = ((x - x.amin(1, keepdim=True)) / (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)))[:, None]
    model = build(load(entry_points("models")["kachuee"]), 4, 280, 0).to(device).train()
    optimizers, step = training_hooks(model)
    x, y = x.to(device), y.to(device)
    for b in torch.randperm(n, generator=gen).to(device).split(128):
        step(x[b], y[b], torch.zeros_like(y[b]), optimizers)
    return model.eval(), x[:256], y[:256], "Kachuee, one epoch on synthetic sine beats (no MIT-BIH here)"


def section_attacks(t: Table, args: argparse.Namespace, budget: Budget) -> None:
    import copy

    import torch

    from ecgbench.engine.accel import convert, measure_attack

    model, x, y, what = _attack_model(args, t)
    t.add("attacks", "model", what)
    fast = convert(copy.deepcopy(model)).eval()
    attacks = entry_points("attacks")
    _known("--attacks", args.attacks, attacks)
    for name in args.attacks or attacks:
        cls = load(attacks[name])
        for backend in cls.backends:
            for label, net in (("plain", model), ("accelerated", fast)):
                if label == "accelerated" and name not in ("fgsm", "pgd"):
                    continue
                what_ = f"{name}@{backend} ({label} model)"
                if budget.left() < args.attack_seconds * 2 + 10:
                    t.add("attacks", what_, None, note="skipped: budget spent")
                    continue
                try:
                    attack = cls(backend=backend)
                    pilot = min(args.pilot, len(x))  # small: square and ART's cw take seconds per beat on a CPU
                    per_beat = measure_attack(attack, net, x[:pilot], y[:pilot], (0.0, 1.0))
                    n = int(max(pilot, min(len(x), args.attack_seconds / max(per_beat, 1e-6))))
                    idx = torch.arange(n, device=x.device) % len(x)
                    per_beat = measure_attack(attack, net, x[idx], y[idx], (0.0, 1.0))
                    t.add("attacks", what_, 1.0 / per_beat, "beats/s", f"{n} beats, default parameters", params=attack.params)
                except Exception as exc:  # noqa: BLE001
                    t.add("attacks", what_, None, note=_error(exc))


MATRIX_NEEDS = ("scipy", "sklearn", "imblearn", "art", "foolbox", "wfdb", "pandas", "tabulate", "matplotlib", "skimage",
                "tqdm", "filelock", "pluggy")


def section_matrix(t: Table, args: argparse.Namespace, budget: Budget) -> None:
    data = os.environ.get("ECGBENCH_DATA")
    if not data or not (Path(data) / "mitdb" / "RECORDS").exists():
        t.add("matrix", "quick profile", None, note="skipped: set ECGBENCH_DATA to a folder holding mitdb/")
        return
    missing = [m for m in MATRIX_NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        t.add("matrix", "quick profile", None, note=f"skipped: ecgbench run needs {', '.join(missing)}")
        return
    limit = budget.left() - 10
    if limit < 30:
        t.add("matrix", "quick profile", None, note="skipped: budget spent")
        return
    out = Path(tempfile.mkdtemp(prefix="probe-run-"))
    cmd = [sys.executable, "-m", "ecgbench", "run", "--profile", "quick", "--models", "all", "--attacks", "all",
           "--device", args.device, "--out", str(out / "run"), "--cache-dir", str(out / "cache"), "--data-dir", data,
           "--no-progress", *args.matrix_args.split()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit)
        status, tail = f"exit {proc.returncode}", (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    except subprocess.TimeoutExpired as exc:
        status, tail = f"stopped at the {limit:.0f} s budget", (str(exc.stdout or "")).strip().splitlines()[-1:]
    cells = len(list((out / "run" / "cells").rglob("*.json"))) if (out / "run" / "cells").exists() else 0
    t.add("matrix", "quick profile, all models x all attacks", time.perf_counter() - t0, "s",
          f"{status}, {cells} cell files; {' | '.join(tail)[:300]}")


PACK_KS = (1, 3, 9, 40)


def _pack_graph_worker(models: list[tuple[str, str]], ks: tuple[int, ...], device: str, batch: int, steps: int,
                       warmup: int, out: Any) -> None:
    """The pack section's graph rows, in a child process (a failed capture cannot upset the probe's CUDA context):
    per model, one model's graphed step as `fit` trains it on CUDA (k = 0), then K members' graphed packed step."""
    import_ecgbench()
    from ecgbench.engine.pack_train import measure_packed_step
    from ecgbench.engine.train import measure_step
    from ecgbench.engine.steps import batch_of

    for name, value in models:
        cls = load(value)
        b = batch_of(cls, batch)
        for k in (0, *ks):
            try:
                s = (measure_step(cls, 4, 280, b, device, steps=steps, warmup=warmup, cuda_graphs=True) if k == 0 else
                     measure_packed_step(cls, 4, 280, b, device, k, steps=steps, warmup=warmup, cuda_graphs=True))
                out.put((name, k, s, None))
            except Exception as exc:  # noqa: BLE001 - reported as the row
                out.put((name, k, None, _error(exc)))
    out.put(None)


def section_pack(t: Table, args: argparse.Namespace, budget: Budget) -> None:
    """Member steps/s of K packed members (one vmap'd step on K batches of `--batch` beats, or of the model's own
    batch: Acharya's 10) of each registered model that packs, against one model's steps/s as `fit` trains it:
    eager everywhere, and on CUDA also both as CUDA graphs (what `fit` and `fit_packed` run there). Issue 19's
    target: Kachuee K=40 at 20x one model's steps/s or more."""
    from ecgbench.engine.pack import why_not_packed
    from ecgbench.engine.pack_train import measure_packed_step
    from ecgbench.engine.train import measure_step
    from ecgbench.engine.steps import batch_of

    models = entry_points("models")
    ks = (1, 3, 9) if args.quick else PACK_KS
    packing = []
    for name in sorted(models, key=lambda n: (n not in ("kachuee", "shaker", "acharya", "ecg-atk-gan"), n)):
        cls = load(models[name])
        why = why_not_packed(cls)
        if why is not None:
            t.add("pack", f"{name}", None, note=f"trains alone: {why}")
            continue
        packing.append(name)
        batch = batch_of(cls, args.batch)
        try:
            single = 1.0 / measure_step(cls, 4, 280, batch, args.device, steps=args.steps, warmup=args.warmup)
            t.add("pack", f"{name} alone", single, "steps/s", f"batch {batch}, eager, as fit trains it")
        except Exception as exc:  # noqa: BLE001 - the packed rows then go without a ratio
            single = None
            t.add("pack", f"{name} alone", None, note=_error(exc))
        for k in ks:
            if budget.left() < 15:
                t.add("pack", f"{name} K={k} packed", None, note="skipped: budget spent")
                continue
            try:
                rate = k / measure_packed_step(cls, 4, 280, batch, args.device, k, steps=args.steps, warmup=args.warmup)
                t.add("pack", f"{name} K={k} packed", rate, "member steps/s",
                      f"batch {batch} each, {args.steps} steps" + (f"; {rate / single:.1f}x alone" if single else ""))
            except Exception as exc:  # noqa: BLE001 - one K that fails is a row saying why
                t.add("pack", f"{name} K={k} packed", None, note=_error(exc))
    if args.device != "cuda" or budget.left() < 30:
        return
    alone: dict[str, float] = {}

    def row(item: tuple) -> None:
        name, k, s, err = item
        if k == 0:
            alone[name] = 1.0 / s if s else 0.0
            t.add("pack", f"{name} alone+graph", 1.0 / s if s else None, "steps/s" if s else "",
                  err or f"{4 * args.steps} steps, as fit trains it on CUDA")
            return
        rate = k / s if s else None
        ratio = f"; {rate / alone[name]:.1f}x alone+graph" if rate and alone.get(name) else ""
        t.add("pack", f"{name} K={k} packed+graph", rate, "member steps/s" if s else "",
              err or f"{4 * args.steps} steps, as fit_packed trains on CUDA{ratio}")
    _in_child(t, "pack", "packed+graph", _pack_graph_worker,
              ([(n, models[n]) for n in packing], ks, args.device, args.batch, 4 * args.steps, args.warmup), budget, row)


RUNNERS = {"env": section_env, "steps": section_steps, "concurrency": section_concurrency, "pack": section_pack,
           "attacks": section_attacks, "matrix": section_matrix}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="folder for gpu-probe.md and gpu-probe.json")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--budget-s", type=float, default=450.0, help="stop starting new measurements after this many seconds")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    p.add_argument("--models", default=None, help="models for the steps section (default: all registered)")
    p.add_argument("--attacks", default=None, help="attacks for the attacks section (default: all registered)")
    p.add_argument("--quick", action="store_true", help="tiny settings, for a CPU smoke run")
    p.add_argument("--matrix-args", default="", help="extra arguments for the matrix's `ecgbench run`, e.g. '--executor jobs --jobs 4'")
    p.add_argument("--concurrency-model", default="kachuee")
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        p.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = ["env"] + [s for s in sections if s != "env"]
    args.models = args.models.split(",") if args.models else None
    args.attacks = args.attacks.split(",") if args.attacks else None
    args.batch, args.steps, args.warmup = (16, 2, 1) if args.quick else (128, 50, 10)
    args.concurrency, args.seconds = ((1, 2), 0.5) if args.quick else ((1, 2, 4, 8), 3.0)
    args.attack_seconds, args.pilot = (0.5, 2) if args.quick else (4.0, 4)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    table = Table(args.out)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_probe: --device cuda but torch sees no CUDA device; use --device cpu for a smoke run", file=sys.stderr)
        return 2
    import_ecgbench()
    for name in args.sections:
        t0 = time.perf_counter()
        try:
            RUNNERS[name](table, args, budget)
        except Exception as exc:  # noqa: BLE001 - one section's failure costs only its rows
            table.add(name, "section failed", None, note=_error(exc))
            traceback.print_exc()
        table.env[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
        table.save()
    print("\n" + table.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
