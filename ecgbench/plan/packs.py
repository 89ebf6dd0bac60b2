"""Packing the plan (issue 19): trainings of one architecture become one packed task on the GPU.

One small CNN fills a sliver of a GPU; K trainings of one model class with the same settings and other
data (folds, seeds, static sets) trained as one model of K members (`engine.pack`) give each kernel K
times the work. The plan groups the training tasks of one model on one dataset that train on the same
number of static sets: the clean trainings together, those on one attack's static set together (they
need the static sets, which need a clean training, so the groups never wait on each other), the
paper's defence (every static set: an epoch many times longer) apart, since a pack steps as long as
its longest member. A group of two or more members (folds count: a training of F folds is F members)
becomes a `PackTask` of at most `MAX_MEMBERS` members; each member's own `TrainTask` then waits for
the pack and loads its checkpoint.

`--pack auto` (the default) packs on CUDA only: on the CPU packing measured no gain (0.5-1.0x) and the
CPU's checkpoints stay bit-identical to what they were. `--pack on` packs anywhere, `off` never. A
packed training's checkpoint has the same key and format as a separate one's (packing changes the
speed, not what is trained), and records `packed` in its info.
"""
from __future__ import annotations

from dataclasses import replace

from ecgbench import log
from ecgbench.config.run import RunConfig
from ecgbench.contracts.registry import Registry
from ecgbench.engine.accel import resolve_device
from ecgbench.engine.pack import why_not_packed
from ecgbench.plan.tasks import PackTask, Task, TrainTask
from ecgbench.store.io import cache_key

__all__ = ["packing", "pack_trainings", "MAX_MEMBERS"]

MAX_MEMBERS = 40  # members of one pack (trainings x folds): the largest K measured (issue 19); beats ~100 MB a member


def packing(cfg: RunConfig) -> bool:
    """Whether the run packs its trainings: `--pack on`, or `auto` on a CUDA device."""
    if cfg.pack == "auto":
        return resolve_device(cfg.device).type == "cuda"
    return cfg.pack == "on"


def pack_trainings(tasks: dict[str, Task], cfg: RunConfig, reg: Registry, folds: int) -> dict[str, Task]:
    """`tasks` (by key, in dependency order) with the trainings that can be packed grouped into `PackTask`s.

    A model that cannot be packed trains alone, and one line says why; so does a model trained
    elsewhere (`ecgbench evaluate`: nothing to train).
    """
    outside = {m.name for m in cfg.outside}
    groups: dict[tuple[str, str, int], list[TrainTask]] = {}
    for task in tasks.values():
        if task.kind == "train" and task.error is None and task.model not in outside:
            groups.setdefault((task.dataset, task.model, len(task.statics)), []).append(task)
    alone: dict[str, str] = {}
    packs: list[PackTask] = []
    for (_, model, _), members in groups.items():
        why = why_not_packed(reg.get("models", model))
        if why is not None:
            alone[model] = why
            continue
        per = max(1, MAX_MEMBERS // max(folds, 1))
        for i in range(0, len(members), per):
            chunk = tuple(members[i:i + per])
            if len(chunk) * max(folds, 1) > 1:
                packs.append(PackTask("pack-" + cache_key("pack", [m.key for m in chunk]), chunk))
    for model, why in alone.items():
        log.info(f"{model} trains alone, not packed: {why}")
    if not packs:
        return tasks
    out = dict(tasks)
    for pack in packs:
        out[pack.key] = pack
        for m in pack.members:
            out[m.key] = replace(m, pack=pack.key)
    return _in_dependency_order(out, list(tasks))


def _in_dependency_order(tasks: dict[str, Task], order: list[str]) -> dict[str, Task]:
    """The tasks, each after those it needs, otherwise in their first order (a pack where its first member was)."""
    rank = {key: i for i, key in enumerate(order)}
    for key, task in tasks.items():
        if task.kind == "pack":
            rank[key] = min(rank[m.key] for m in task.members) - 0.5
    out: dict[str, Task] = {}
    pending = sorted(tasks, key=rank.__getitem__)
    while pending:
        for i, key in enumerate(pending):
            if all(d in out or d not in tasks for d in tasks[key].deps):
                out[key] = tasks[pending.pop(i)]
                break
        else:
            raise RuntimeError(f"task graph has a cycle at {tasks[pending[0]].label}")
    return out
