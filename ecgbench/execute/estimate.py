"""`ecgbench run --dry-run`: the task graph in numbers, and an estimated wall time on this machine.

Know before you spend: how many trainings and optimisation steps, how many beats each attack
perturbs and roughly how many model queries that takes, and, from a short calibration (a few
training steps of each model, one small attack batch each, on this device), how long the run would
take with the chosen executor. Nothing is written to the results folder.

Attacks are timed on each attacked model after a few training steps on real beats, with the beats'
labels set to the model's own predictions: an untrained net predicts one class everywhere, and on
it a decision attack finds no starting point and stops at once (the first estimator timed Boundary
at 0.85 ms a beat for 2,500 queries). Attacks with a large query budget are timed at a budget of
about `CAL_QUERIES` a beat and scaled back linearly, an upper bound since attacks stop early on
fooled beats.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from ecgbench.config.attacks import build_attack
from ecgbench.config.run import RunConfig
from ecgbench.contracts.registry import registry
from ecgbench.data.catalog import Catalog, eval_index
from ecgbench.engine import train
from ecgbench.engine.steps import batch_of, training_hooks
from ecgbench.engine.accel import enabled, resolve_device
from ecgbench.execute.scheduler import in_cache, needed, threads_per_task
from ecgbench.plan.graph import Graph, Planner, plan
from ecgbench.plan.tasks import Task, TrainTask
from ecgbench.store.layout import is_done

__all__ = ["dry_run", "Workload", "workload", "remaining", "scaled_budget", "queries_per_beat"]

CAL_BEATS = 32  # beats in each calibration attack batch: fewer, and an attack's per-call overhead inflates the estimate
CAL_STEPS = 20  # training steps on real, class-balanced beats before the attacks are timed
CAL_QUERIES = 500  # query budget a beat that costly attacks are timed at; the time scales back linearly


@dataclass
class Workload:
    trainings: dict[str, int]  # model -> trainings
    steps: dict[str, int]  # model -> optimisation steps, at most (early stopping may end sooner)
    attacked_on: dict[tuple[str, str], int]  # (attack spec, attacked model) -> beats perturbed (static sets and adaptive cells)
    queries: dict[str, int]  # attack spec -> model queries, roughly (forward or forward+backward passes)
    cells: int
    pending_cells: int
    static_sets: int = 0  # static sets to make (each attacks a subset of training beats and the test beats)
    packed: dict[str, int] = field(default_factory=dict)  # "pack:<model>:<members>" -> packed steps (`--pack`, issue 19)
    packs: dict[str, int] = field(default_factory=dict)  # "pack:<model>:<members>" -> packs of that size
    packed_trainings: dict[str, int] = field(default_factory=dict)  # "pack:<model>:<members>" -> trainings they hold
    alone: dict[str, int] = field(default_factory=dict)  # model -> trainings not packed
    tasks: list[tuple[Task, str, int]] = field(default_factory=list)  # in run order: task, what prices it, units of it

    @property
    def attacked(self) -> dict[str, int]:
        """Attack spec -> beats perturbed, over every model it attacks."""
        out: dict[str, int] = {}
        for (spec, _), n in self.attacked_on.items():
            out[spec] = out.get(spec, 0) + n
        return out


def queries_per_beat(params: dict) -> int:
    """Model calls one beat costs: the query budget of a decision or score attack, else iterations x restarts."""
    for key in ("queries", "max_queries"):
        if key in params:
            return int(params[key])
    if "max_eval" in params:
        return int(params.get("max_iter", 1)) * int(params["max_eval"]) + int(params.get("init_eval", 0))
    restarts = int(params.get("num_random_init", 0) or params.get("nb_random_init", 0) or params.get("restarts", 0)
                   or params.get("targets", 0) or 0)  # APGD-T: one run per target class
    return max(1, int(params.get("max_iter", 1))) * max(1, restarts or 1)


def _train_size(pl: Planner, task: TrainTask) -> int:
    ctx, p = pl.catalog.data(task.dataset, task.seed), pl.cfg.profile.with_seed(task.seed)
    counts = ctx.splits.train.counts(ctx.n_classes)
    n = sum(max(c, p.smote_target) if c >= 2 else c for c in counts)
    share = (1 - 1 / p.folds) if p.folds > 1 else (1 - p.val_fraction)
    n += len(task.statics) * min(p.static_train_cap or len(ctx.splits.train), len(ctx.splits.train))
    return int(n * share)


def remaining(cfg: RunConfig, graph: Graph) -> tuple[list[Task], int]:
    """What a run would still execute, as the executor would, and how many cells: the tasks its unfinished
    cells need, less what the cache holds. Read-only: a damaged cell file counts as not done."""
    todo = [t for t in graph.of_kind("cell") if cfg.force or not is_done(Path(t.path), t.cell_key, cfg.retry_failed)]
    return needed(graph, todo, lambda t: in_cache(cfg.cache, t)), len(todo)


def workload(pl: Planner) -> Workload:
    """The work left in a run: a fresh run's whole plan, a resumed run's unfinished part."""
    cfg = pl.cfg
    graph = plan(cfg, pl.reg, pl.catalog)
    tasks, pending = remaining(cfg, graph)
    keys = {t.key for t in tasks}
    w = Workload({}, {}, {}, {}, len(graph.of_kind("cell")), pending)
    for task in tasks:
        p = cfg.profile.with_seed(task.seed if task.kind != "cell" else task.cell.seed)
        if task.kind == "train":
            w.trainings[task.model] = w.trainings.get(task.model, 0) + 1
            if task.pack is not None and task.pack in keys:  # its pack trains it: this task loads the checkpoint
                w.tasks.append((task, "", 0))
                continue
            w.alone[task.model] = w.alone.get(task.model, 0) + 1
            batch = batch_of(pl.reg.get("models", task.model), p.batch_size)  # Acharya: its paper's 10
            steps = math.ceil(_train_size(pl, task) / batch) * p.epochs * p.folds
            w.steps[task.model] = w.steps.get(task.model, 0) + steps
            w.tasks.append((task, task.model, steps))
            continue
        if task.kind == "pack":  # one packed step moves every member: as many steps as its longest member's epochs
            price = f"pack:{task.model}:{len(task.members) * cfg.profile.folds}"
            batch = batch_of(pl.reg.get("models", task.model), p.batch_size)
            steps = max(math.ceil(_train_size(pl, m) / batch) for m in task.members) * p.epochs
            w.packed[price] = w.packed.get(price, 0) + steps
            w.packs[price] = w.packs.get(price, 0) + 1
            w.packed_trainings[price] = w.packed_trainings.get(price, 0) + len(task.members)
            w.tasks.append((task, price, steps))
            continue
        if task.kind == "cell" and task.cell.mode in ("clean", "static"):
            w.tasks.append((task, "", 0))
            continue
        if task.kind == "static":
            dataset, spec, eps, on_model = task.dataset, task.attack, None, task.source.model
        else:
            dataset, spec, eps, on_model = task.cell.dataset, task.cell.attack, task.cell.eps, task.cell.model
        ctx = pl.catalog.data(dataset, p.seed)
        attack = build_attack(spec, p, pl.reg, eps)
        sub = eval_index(ctx.splits.test.y, attack, p)
        n = len(ctx.splits.test) if sub is None else len(sub)
        if task.kind == "static":
            w.static_sets += 1
            n += min(p.static_train_cap or len(ctx.splits.train), len(ctx.splits.train))
        w.attacked_on[(spec, on_model)] = w.attacked_on.get((spec, on_model), 0) + n
        w.tasks.append((task, f"{spec}|{on_model}", n))
        w.queries[spec] = w.queries.get(spec, 0) + n * queries_per_beat(attack.params)
    return w


def _step_seconds(pl: Planner, model: str, dataset: str, device: torch.device, batch: int) -> float:
    cls = pl.reg.get("models", model)
    ds = pl.catalog.data(dataset, pl.cfg.seed_list()[0]).dataset
    graphs = device.type == "cuda" and enabled("ECGBENCH_CUDA_GRAPHS", True)  # as `fit` will train
    return float(train.measure_step(cls, len(ds.classes), ds.window, batch, device, steps=3, cuda_graphs=graphs))


def _packed_seconds(pl: Planner, price: str, dataset: str, device: torch.device, batch: int) -> float:
    """Seconds a packed step of `price`'s members takes (`pack:<model>:<members>`), measured as the pack will run."""
    from ecgbench.engine.pack_train import measure_packed_step

    _, model, k = price.split(":")
    ds = pl.catalog.data(dataset, pl.cfg.seed_list()[0]).dataset
    graphs = device.type == "cuda" and enabled("ECGBENCH_CUDA_GRAPHS", True)  # as `fit_packed` will train
    return float(measure_packed_step(pl.reg.get("models", model), len(ds.classes), ds.window, batch, device, int(k),
                                     cuda_graphs=graphs))


def scaled_budget(params: dict, cap: int) -> tuple[dict, float]:
    """`params` with the query budget cut to about `cap` a beat, and the factor the time scales back by."""
    full = queries_per_beat(params)
    if full <= cap:
        return params, 1.0
    cut = dict(params)
    budget_keys = [k for k in ("queries", "max_queries") if k in cut]
    for key in budget_keys:
        cut[key] = max(2, cap)
    if not budget_keys and "max_iter" in cut:  # HopSkipJump, APGD: fewer iterations
        cut["max_iter"] = max(1, int(cut["max_iter"] * cap / full))
    return cut, full / queries_per_beat(cut)


def _calibration_net(pl: Planner, model: str, dataset: str, device: torch.device) -> torch.nn.Module:
    """`model` after CAL_STEPS training steps on real, class-balanced training beats, in eval mode."""
    seed = pl.cfg.seed_list()[0]
    ctx, p = pl.catalog.data(dataset, seed), pl.cfg.profile.with_seed(seed)
    n_classes = ctx.n_classes
    net = train.build(pl.reg.get("models", model), n_classes, ctx.dataset.window, 0).to(device)
    optimizers, step = training_hooks(net)
    rng = np.random.default_rng(0)
    pools = [np.flatnonzero(ctx.splits.train.y == c) for c in range(n_classes)]
    pools = [q for q in pools if len(q)]
    net.train()
    for _ in range(CAL_STEPS):
        idx = np.concatenate([rng.choice(q, p.batch_size // len(pools) + 1) for q in pools])[:p.batch_size]
        x = torch.as_tensor(ctx.splits.train.x[idx], dtype=torch.float32, device=device)[:, None]
        y = torch.as_tensor(ctx.splits.train.y[idx], dtype=torch.long, device=device)
        step(x, y, torch.zeros_like(y), optimizers)
    return net.eval()


def _beat_seconds(pl: Planner, spec: str, net: torch.nn.Module, dataset: str, device: torch.device) -> float:
    """Seconds an attack spends on a beat of `net`, timed on test beats labelled with net's own predictions."""
    seed = pl.cfg.seed_list()[0]
    ctx = pl.catalog.data(dataset, seed)
    attack = copy.copy(build_attack(spec, pl.cfg.profile.with_seed(seed), pl.reg))
    costly = getattr(attack, "costly", False)
    attack.params, factor = scaled_budget(attack.params, CAL_QUERIES) if costly else (attack.params, 1.0)
    idx = np.random.default_rng(0).choice(len(ctx.splits.test), min(CAL_BEATS, len(ctx.splits.test)), replace=False)
    x = torch.as_tensor(ctx.splits.test.x[idx], dtype=torch.float32)[:, None].to(device)
    y = torch.as_tensor(train.predict(net, x, device).argmax(1), device=device)  # every beat starts correct
    np.random.seed(0)
    t0 = time.perf_counter()
    attack(net, x, y, ctx.dataset.value_range)
    return (time.perf_counter() - t0) / len(x) * factor


def dry_run(cfg: RunConfig, calibrate: bool = True, planner: Planner | None = None) -> str:
    """The text `--dry-run` prints: counts per model and attack, and the estimate with how it was made."""
    pl = planner or Planner(cfg, registry, Catalog(registry, cfg.data_dir, cfg.cache, cfg.profile, cfg.split))
    w = workload(pl)
    device = resolve_device(cfg.device)
    workers = cfg.jobs if cfg.executor == "jobs" else 1
    step_s: dict[str, float] = {}
    pair_s: dict[tuple[str, str], float] = {}
    if calibrate:  # with the torch threads each task will have, so N workers' speed is N x one task's
        threads, before = threads_per_task(cfg), torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            step_s = {m: _step_seconds(pl, m, cfg.datasets[0], device, cfg.profile.batch_size) for m in w.steps}
            step_s.update({price: _packed_seconds(pl, price, cfg.datasets[0], device, cfg.profile.batch_size) for price in w.packed})
            nets = {m: _calibration_net(pl, m, cfg.datasets[0], device) for m in {m for _, m in w.attacked_on}}
            pair_s = {(a, m): _beat_seconds(pl, a, nets[m], cfg.datasets[0], device) for a, m in w.attacked_on}
        finally:
            torch.set_num_threads(before)
    rows = [[f"train {m}" + (" (static source)" if m == cfg.source_model and m not in cfg.models else ""), w.alone[m], f"{w.steps[m]:,} steps (at most)",
             f"{step_s[m] * 1e3:.2f} ms/step" if m in step_s else "", _hours(w.steps[m] * step_s.get(m, math.nan))]
            for m in w.steps]
    rows += [[f"train {m}, packed x{k}", f"{w.packed_trainings[price]} in {w.packs[price]} pack(s)", f"{w.packed[price]:,} packed steps (at most)",
              f"{step_s[price] * 1e3:.2f} ms/packed step" if price in step_s else "", _hours(w.packed[price] * step_s.get(price, math.nan))]
             for price in w.packed for _, m, k in [price.split(":")]]
    attacked = w.attacked
    attack_s = {a: sum(n * pair_s.get((b, m), math.nan) for (b, m), n in w.attacked_on.items() if b == a) for a in attacked}
    rows += [[f"attack {a}", "", f"{attacked[a]:,} beats, ~{w.queries[a]:,} queries", _per_beat(a, pair_s), _hours(attack_s[a])]
             for a in attacked]
    serial = sum(w.steps[m] * step_s.get(m, math.nan) for m in w.steps) + sum(attack_s.values())
    serial += sum(w.packed[price] * step_s.get(price, math.nan) for price in w.packed)
    lines = [
        f"dry run: {len(cfg.datasets)} dataset(s) x {len(cfg.models)} model(s) x {len(cfg.attacks)} attack(s), "
        f"profile {cfg.profile.name}, seeds {list(cfg.seed_list())}, device {device}",
        f"{w.cells} cells, {w.pending_cells} to compute: {sum(w.trainings.values())} trainings, {w.static_sets} static sets "
        f"and {sum(attacked.values()):,} attacked beats over {len(attacked)} attack type(s) left (finished cells, cached "
        f"checkpoints and cached static sets are not counted); nothing is written",
        tabulate(rows, headers=["task", "count", "work", "calibrated", "time (1 worker)"], tablefmt="github"),
    ]
    if "static" in cfg.modes and cfg.attacks:
        src = cfg.source_model
        lines.insert(2, f"static sets are made against {src}, trained on clean beats for that purpose"
                        + ("" if src in cfg.models else " (not among --models; choose another with --source)")
                        + f"; each model also gets a paper-defence row, trained on clean beats plus all {len(cfg.attacks)} static sets")
    if calibrate:
        shared = f"; {_hours(serial / workers)} with {cfg.executor} x {workers} (ideal sharing)" if workers > 1 else ""
        lines.append(f"estimated wall time: {_hours(serial)} with 1 worker{shared}, on {device} "
                     f"({threads_per_task(cfg)} torch threads a task). Attacks timed on each attacked "
                     f"model after {CAL_STEPS} training steps on {CAL_BEATS} beats (costly ones at ~{CAL_QUERIES} queries a beat, "
                     f"scaled to the full budget); training and costly attacks are upper bounds "
                     f"where early stopping applies.")
    if calibrate and cfg.time_limit is not None:
        lines.append(_within(cfg, w, step_s, pair_s, workers))
    return "\n".join(lines)


def _within(cfg: RunConfig, w: Workload, step_s: dict[str, float], pair_s: dict[tuple[str, str], float], workers: int) -> str:
    """What `--time-limit` lets this invocation finish, by the calibrated times: the tasks in the scheduler's order
    on `workers` lanes, each starting once the tasks it needs end; the cells that end before the tasks' deadline."""
    from ecgbench.config.run import deadline_for

    def seconds(price: str, units: int) -> float:
        if not price:
            return 0.0
        if "|" in price:
            spec, model = price.split("|")
            return units * pair_s.get((spec, model), 0.0)
        return units * step_s.get(price, 0.0)

    limit = cfg.time_limit or 0.0
    budget = deadline_for(limit, now=0.0)
    order = sorted(w.tasks, key=lambda t: t[0].kind == "cell") if workers > 1 else list(w.tasks)
    lanes, ends = [0.0] * workers, {}
    done_cells, partial = 0, []
    for task, price, units in order:
        lane = min(range(workers), key=lanes.__getitem__)
        start = max([lanes[lane]] + [ends.get(d, 0.0) for d in task.deps])
        end = start + seconds(price, units)
        ends[task.key], lanes[lane] = end, end
        if end <= budget:
            done_cells += task.kind == "cell"
        elif start < budget and task.kind != "cell":
            partial.append(f"{task.label} (about {100 * (budget - start) / max(end - start, 1e-9):.0f}% of it)")
    head = f"with --time-limit {_hours(limit)} (tasks stop {_hours(limit - budget)} before it, to write the report): "
    if done_cells >= w.pending_cells:
        return head + f"all {w.pending_cells} cells left would finish in this invocation"
    left = f"; saved part-way and continued next time: {', '.join(partial)}" if partial else ""
    return (head + f"about {done_cells} of the {w.pending_cells} cells left would finish in this invocation{left}; "
            f"each later invocation continues from there (exit 3 until done)")


def _per_beat(attack: str, pair_s: dict[tuple[str, str], float]) -> str:
    """The calibrated ms a beat of one attack, as a range over the models it attacks."""
    ms = [v * 1e3 for (a, _), v in pair_s.items() if a == attack]
    if not ms:
        return ""
    lo, hi = min(ms), max(ms)
    return f"{lo:.2f} ms/beat" if hi - lo < 0.005 else f"{lo:.2f}-{hi:.2f} ms/beat"


def _hours(seconds: float) -> str:
    if not math.isfinite(seconds):
        return ""
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"
