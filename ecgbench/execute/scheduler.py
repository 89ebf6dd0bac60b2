"""Executors: how a task graph runs. `serial` (in this process), `jobs` (local worker processes), `ray`.

What to run (the plan) is kept apart from how (benchopt's `--n-jobs` / parallel backends), but our
tasks have dependencies, so an executor starts a task only when the tasks it needs are done. Every
task writes its outputs to the store, so a run started under one executor resumes under another;
each task seeds its own random generators and pins torch's threads, so the cell files do not depend
on the executor (timing fields aside).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from ecgbench import log
from ecgbench.config.run import DEFAULT_THREADS, RunConfig
from ecgbench.engine.progress import Deadline
from ecgbench.plan.graph import Graph
from ecgbench.plan.tasks import Task
from ecgbench.store.io import written
from ecgbench.store.layout import attacked_path, checkpoint_path

__all__ = ["Outcome", "schedule", "needed", "in_cache", "threads_per_task", "pin_threads"]

@dataclass
class Outcome:
    """What the driver learns from the tasks: counts, failures and the summary line of each cell."""

    computed: int = 0
    trainings: int = 0
    attack_calls: int = 0
    failures: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # tasks the time limit left for the next invocation
    timeline: list[dict[str, Any]] = field(default_factory=list)  # per task run: what, where, when, how long

    @property
    def stopped(self) -> bool:
        """Whether the time limit left work undone."""
        return bool(self.left)

    def add(self, task: Task, result: dict) -> None:
        if "timing" in result:
            self.timeline.append({"task": task.label, "kind": task.kind, "status": result["status"], **result["timing"]})
        self.trainings += result.get("trainings", 0)
        self.attack_calls += result.get("attack_calls", 0)
        if result["status"] == "stopped":
            self.left.append(task.label)
            log.info(f"left for the next invocation (time limit): {task.label}")
        elif task.kind == "cell":
            self.computed += 1
            log.info(result["summary"])
            if result["status"] != "ok":
                self.failures.append(f"{task.label}: {result['error']}")


def threads_per_task(cfg: RunConfig) -> int:
    """torch threads in each task, the same under every executor: `--threads`, else `DEFAULT_THREADS` (one).

    Floating-point sums split over threads come out in another order, so a thread count that followed
    the executor or the machine (torch's default is every core) gave the same command other tables
    under serial and Ray (issue 20). One thread a task is what every executor can give on any node;
    more throughput comes from more workers (`--executor jobs --jobs N`, Ray)."""
    return cfg.threads or DEFAULT_THREADS


def pin_threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def needed(graph: Graph, todo: Iterable[Task], cached: Callable[[Task], bool] = lambda t: False) -> list[Task]:
    """The tasks to run and every task they need, in the graph's (dependency) order.

    A training or static set that is `cached` is left out, and so is what only it needed (a static
    set in the cache needs no source model). A cached entry found damaged when loaded is recomputed
    by the worker, which then makes what it needs on demand.
    """
    need: set[str] = set()
    stack = [t.key for t in todo]
    while stack:
        key = stack.pop()
        task = graph.tasks[key]
        if key in need or (task.kind != "cell" and cached(task)):
            continue
        need.add(key)
        stack += task.deps
    return [t for k, t in graph.tasks.items() if k in need]


def schedule(tasks: list[Task], submit: Callable[[Task], Any], wait: Callable[[list[Any]], list[tuple[Any, dict]]],
              outcome: Outcome, slots: int, deadline: Deadline | None = None) -> None:
    """Start each task once the tasks it needs are done; a task whose dependency failed fails with its message.

    With several slots, ready trainings and static sets go before ready cells: they unblock further
    work and are the long tasks, and the many short cells then fill the workers to the end (longest
    first). One slot keeps the graph's order, so a serial run reports its first cells early.

    With a `deadline` (`--time-limit`), nothing starts once it has passed; a task it stopped saved its
    progress and is "stopped", and what needs it is left too (not failed): the next invocation
    continues them. Dependencies come first, so every slice moves the same long tasks forward.
    """
    listed = {t.key for t in tasks}
    state: dict[str, str] = {d: "ok" for t in tasks for d in t.deps if d not in listed}  # key -> "ok" | error; unlisted: cached
    waiting = sorted(tasks, key=lambda t: t.kind == "cell") if slots > 1 else list(tasks)  # stable: graph order within
    running: dict[Any, Task] = {}
    while waiting or running:
        if deadline is not None and deadline.left() <= 0:  # time is up: start nothing more, let the running ones stop
            outcome.left += [t.label for t in waiting]
            waiting = []
        for task in list(waiting):
            if len(running) >= slots:
                break
            blocked = [state[d] for d in task.deps if d in state and state[d] != "ok"]
            if "stopped" in blocked:
                waiting.remove(task)
                state[task.key] = "stopped"
                outcome.left.append(task.label)
                continue
            if blocked:
                waiting.remove(task)
                task = replace(task, error=task.error or blocked[0])
                if task.kind != "cell":
                    state[task.key] = task.error
                    continue
                running[submit(task)] = task
            elif all(state.get(d) == "ok" for d in task.deps):
                waiting.remove(task)
                running[submit(task)] = task
        if not running:
            if waiting:  # cannot happen with a well-formed graph; never spin
                raise RuntimeError(f"task graph stuck at {waiting[0].label}")
            break
        for handle, result in wait(list(running)):
            task = running.pop(handle)
            state[task.key] = result["status"] if result["status"] in ("ok", "stopped") else (result.get("error") or "failed")
            if task.kind != "cell" and result["status"] == "failed":
                log.info(f"FAILED {task.label}: {result.get('error')}")
            outcome.add(task, result)


def in_cache(cache: Path, task: Task) -> bool:
    """Whether a training's checkpoint (a pack's: all its members') or a static set is in the cache (present; it is
    verified when loaded)."""
    if task.kind == "train":
        return written(checkpoint_path(cache, task.model, task.key))
    if task.kind == "pack":
        return all(in_cache(cache, m) for m in task.members)
    if task.kind == "static":
        return written(attacked_path(cache, task.attack_name, task.key))
    return False
