"""`ecgbench run --dry-run`: the task graph in numbers, and an estimated wall time on this machine.

Know before you spend: how many trainings and optimisation steps, how many beats each attack
perturbs and roughly how many model queries that takes, and, from a short calibration (a few
training steps of each model, one small attack batch each, on this device), how long the run would
take with the chosen executor. Nothing is written to the results folder.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tabulate import tabulate

from ecgbench.accel import enabled
from ecgbench.executors import threads_per_task
from ecgbench.plan import Cell, RunConfig, build_attack, plan
from ecgbench.keys import Keys, eval_index, resolve_device

__all__ = ["dry_run", "Workload", "workload"]

CAL_BEATS = 32  # beats in the calibration attack batch (a quarter of it for costly attacks)


@dataclass
class Workload:
    trainings: dict[str, int]  # model -> trainings
    steps: dict[str, int]  # model -> optimisation steps, at most (early stopping may end sooner)
    attacked: dict[str, int]  # attack spec -> beats perturbed (static sets and adaptive cells)
    queries: dict[str, int]  # attack spec -> model queries, roughly (forward or forward+backward passes)
    cells: int
    pending_cells: int


def queries_per_beat(params: dict) -> int:
    """Model calls one beat costs: the query budget of a decision or score attack, else iterations x restarts."""
    for key in ("queries", "max_queries"):
        if key in params:
            return int(params[key])
    if "max_eval" in params:
        return int(params.get("max_iter", 1)) * int(params["max_eval"]) + int(params.get("init_eval", 0))
    restarts = int(params.get("num_random_init", 0) or params.get("restarts", 0) or 0)
    return max(1, int(params.get("max_iter", 1))) * max(1, restarts or 1)


def _train_size(keys: Keys, spec: dict) -> int:
    ctx, p = keys.data(spec["dataset"], spec["seed"]), keys.profile(spec["seed"])
    counts = ctx.splits.train.counts(len(ctx.dataset.classes))
    n = sum(max(c, p.smote_target) if c >= 2 else c for c in counts)
    share = (1 - 1 / p.folds) if p.folds > 1 else (1 - p.val_fraction)
    if spec["static_key"]:
        n += min(p.static_train_cap or len(ctx.splits.train), len(ctx.splits.train))
    return int(n * share)


def workload(cfg: RunConfig, keys: Keys, pending: set[str] | None = None) -> Workload:
    graph = plan(cfg, keys)
    w = Workload({}, {}, {}, {}, len(graph.of_kind("cell")), len(pending) if pending is not None else len(graph.of_kind("cell")))
    for task in graph.tasks.values():
        s = task.spec
        if task.kind == "train":
            p = keys.profile(s["seed"])
            w.trainings[s["model"]] = w.trainings.get(s["model"], 0) + 1
            steps = math.ceil(_train_size(keys, s) / p.batch_size) * p.epochs * p.folds
            w.steps[s["model"]] = w.steps.get(s["model"], 0) + steps
        elif task.kind in ("static", "cell"):
            cell = Cell(**s["cell"]) if task.kind == "cell" else None
            if cell is not None and cell.mode in ("clean", "static"):
                continue
            spec, seed = (cell.attack, cell.seed) if cell else (s["attack"], s["seed"])
            ctx, p = keys.data(s.get("dataset") or cell.dataset, seed), keys.profile(seed)
            attack = build_attack(spec, p, keys.reg, cell.eps if cell else None)
            sub = eval_index(ctx.splits.test.y, attack, p)
            n = len(ctx.splits.test) if sub is None else len(sub)
            if task.kind == "static":
                n += min(p.static_train_cap or len(ctx.splits.train), len(ctx.splits.train))
            w.attacked[spec] = w.attacked.get(spec, 0) + n
            w.queries[spec] = w.queries.get(spec, 0) + n * queries_per_beat(attack.params)
    return w


def _step_seconds(keys: Keys, model: str, dataset: str, device: torch.device, batch: int) -> float:
    from ecgbench import train

    cls = keys.reg.get("models", model)
    ds = keys.data(dataset, keys.cfg.seed_list()[0]).dataset
    graphs = device.type == "cuda" and enabled("ECGBENCH_CUDA_GRAPHS", False)  # as `fit` will train
    return float(train.measure_step(cls, len(ds.classes), ds.window, batch, device, steps=3, cuda_graphs=graphs))


def _beat_seconds(keys: Keys, spec: str, model: str, dataset: str, device: torch.device) -> float:
    cfg = keys.cfg
    seed = cfg.seed_list()[0]
    ctx, p = keys.data(dataset, seed), keys.profile(seed)
    attack = build_attack(spec, p, keys.reg)
    from ecgbench import train

    net = train.build(keys.reg.get("models", model), len(ctx.dataset.classes), ctx.dataset.window, 0).to(device).eval()
    n = CAL_BEATS // 4 if getattr(attack, "costly", False) else CAL_BEATS  # seconds a beat: a few beats suffice
    x = torch.as_tensor(ctx.splits.test.x[:n])[:, None].to(device)
    y = torch.as_tensor(ctx.splits.test.y[:n], device=device)
    np.random.seed(0)
    t0 = time.perf_counter()
    attack(net, x, y, ctx.dataset.value_range)
    return (time.perf_counter() - t0) / len(x)


def dry_run(cfg: RunConfig, calibrate: bool = True, keys: Keys | None = None) -> str:
    """The text `--dry-run` prints: counts per model and attack, and the estimate with how it was made."""
    keys = keys or Keys(cfg)
    w = workload(cfg, keys)
    device = resolve_device(cfg.device)
    workers = cfg.jobs if cfg.executor == "jobs" else 1
    step_s: dict[str, float] = {}
    beat_s: dict[str, float] = {}
    if calibrate:  # with the torch threads each task will have, so N workers' speed is N x one task's
        threads, before = threads_per_task(cfg, workers) or torch.get_num_threads(), torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            step_s = {m: _step_seconds(keys, m, cfg.datasets[0], device, cfg.profile.batch_size) for m in w.steps}
            beat_s = {a: _beat_seconds(keys, a, cfg.source_model, cfg.datasets[0], device) for a in w.attacked}
        finally:
            torch.set_num_threads(before)
    rows = [[f"train {m}", w.trainings[m], f"{w.steps[m]:,} steps (at most)",
             f"{step_s[m] * 1e3:.2f} ms/step" if m in step_s else "", _hours(w.steps[m] * step_s.get(m, math.nan))]
            for m in w.steps]
    rows += [[f"attack {a}", "", f"{w.attacked[a]:,} beats, ~{w.queries[a]:,} queries",
              f"{beat_s[a] * 1e3:.2f} ms/beat" if a in beat_s else "", _hours(w.attacked[a] * beat_s.get(a, math.nan))]
             for a in w.attacked]
    serial = sum(w.steps[m] * step_s.get(m, math.nan) for m in w.steps) + sum(w.attacked[a] * beat_s.get(a, math.nan) for a in w.attacked)
    lines = [
        f"dry run: {len(cfg.datasets)} dataset(s) x {len(cfg.models)} model(s) x {len(cfg.attacks)} attack(s), "
        f"profile {cfg.profile.name}, seeds {list(cfg.seed_list())}, device {device}",
        f"{w.cells} cells, {sum(w.trainings.values())} trainings, {len(w.attacked)} attacks; nothing is written",
        tabulate(rows, headers=["task", "count", "work", "calibrated", "time (1 worker)"], tablefmt="github"),
    ]
    if calibrate:
        lines.append(f"estimated wall time: {_hours(serial)} with 1 worker; {_hours(serial / workers)} with "
                     f"{cfg.executor}{f' x {workers}' if workers > 1 else ''} (ideal sharing), on {device} "
                     f"({threads_per_task(cfg, workers) or torch.get_num_threads()} torch threads a task). Calibrated on untrained models and "
                     f"{CAL_BEATS} beats per attack ({CAL_BEATS // 4} for costly ones); training is an upper bound where early stopping applies.")
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    if not math.isfinite(seconds):
        return ""
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"
