"""Executors: how a task graph runs. `serial` (in this process), `jobs` (local worker processes), `ray`.

What to run (the plan) is kept apart from how (benchopt's `--n-jobs` / parallel backends), but our
tasks have dependencies, so an executor starts a task only when the tasks it needs are done. Every
task writes its outputs to the store, so a run started under one executor resumes under another;
each task seeds its own random generators and pins torch's threads, so the cell files do not depend
on the executor (timing fields aside).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from ecgbench import log
from ecgbench.plan import Graph, RunConfig, Task

__all__ = ["Outcome", "execute", "needed", "EXECUTORS", "threads_per_task"]

EXECUTORS = ("serial", "jobs", "ray")


@dataclass
class Outcome:
    """What the driver learns from the tasks: counts, failures and the summary line of each cell."""

    computed: int = 0
    trainings: int = 0
    attack_calls: int = 0
    failures: list[str] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)  # per task run: what, where, when, how long

    def add(self, task: Task, result: dict) -> None:
        if "timing" in result:
            self.timeline.append({"task": task.label, "kind": task.kind, "status": result["status"], **result["timing"]})
        self.trainings += result.get("trainings", 0)
        self.attack_calls += result.get("attack_calls", 0)
        if task.kind == "cell":
            self.computed += 1
            log.info(result["summary"])
            if result["status"] != "ok":
                self.failures.append(f"{task.label}: {result['error']}")


def threads_per_task(cfg: RunConfig, workers: int) -> int:
    """torch threads in each task: `--threads`, else the cores shared out between the workers (0: torch's choice)."""
    if cfg.threads:
        return cfg.threads
    return 0 if workers <= 1 else max(1, (os.cpu_count() or 1) // workers)


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


def _schedule(tasks: list[Task], submit: Callable[[Task], Any], wait: Callable[[list[Any]], list[tuple[Any, dict]]],
              outcome: Outcome, slots: int) -> None:
    """Start each task once the tasks it needs are done; a task whose dependency failed fails with its message.

    With several slots, ready trainings and static sets go before ready cells: they unblock further
    work and are the long tasks, and the many short cells then fill the workers to the end (longest
    first). One slot keeps the graph's order, so a serial run reports its first cells early.
    """
    listed = {t.key for t in tasks}
    state: dict[str, str] = {d: "ok" for t in tasks for d in t.deps if d not in listed}  # key -> "ok" | error; unlisted: cached
    waiting = sorted(tasks, key=lambda t: t.kind == "cell") if slots > 1 else list(tasks)  # stable: graph order within
    running: dict[Any, Task] = {}
    while waiting or running:
        for task in list(waiting):
            if len(running) >= slots:
                break
            blocked = [state[d] for d in task.deps if d in state and state[d] != "ok"]
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
            state[task.key] = "ok" if result["status"] == "ok" else (result.get("error") or "failed")
            if task.kind != "cell" and result["status"] != "ok":
                log.info(f"FAILED {task.label}: {result.get('error')}")
            outcome.add(task, result)


def execute(graph: Graph, todo: list[Task], cfg: RunConfig, worker: Any, outcome: Outcome | None = None) -> Outcome:
    """Run the cells in `todo` and what they need, with the executor `cfg.executor`.

    `outcome` fills as tasks finish, so a caller that is interrupted still knows what was done.
    """
    from ecgbench.tasks import in_cache

    tasks = needed(graph, todo, lambda t: in_cache(cfg.cache, t))
    outcome = outcome if outcome is not None else Outcome()
    if not tasks:
        return outcome
    if cfg.executor == "serial":
        pin_threads(threads_per_task(cfg, 1))
        results: dict[int, dict] = {}

        def run_now(task: Task) -> int:
            results[len(results)] = worker.run(task)
            return len(results) - 1

        _schedule(tasks, run_now, lambda handles: [(handles[0], results[handles[0]])], outcome, 1)
    elif cfg.executor == "jobs":
        _run_jobs(tasks, cfg, outcome)
    elif cfg.executor == "ray":
        from ecgbench.ray_executor import run_ray

        run_ray(tasks, cfg, outcome)
    else:
        raise ValueError(f"--executor {cfg.executor!r}: choose one of {', '.join(EXECUTORS)}")
    return outcome


# -- local worker processes -------------------------------------------------------------------------
_WORKER: Any = None


def _init_worker(cfg: RunConfig, threads: int, log_level: str) -> None:
    global _WORKER
    os.environ["ECGBENCH_LOG"] = log_level
    pin_threads(threads)
    from ecgbench.tasks import Worker

    _WORKER = Worker(cfg)


def _run_in_worker(task: Task) -> dict:
    return _WORKER.run(task)


def _run_jobs(tasks: list[Task], cfg: RunConfig, outcome: Outcome) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    jobs = max(1, cfg.jobs)
    # spawn, not fork: a forked child of a process that already ran torch can deadlock in its thread pools
    pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(cfg, threads_per_task(cfg, jobs), os.environ.get("ECGBENCH_LOG", "normal")))
    try:
        def finished(handles: list[Any]) -> list[tuple[Any, dict]]:
            done, _ = wait(handles, return_when=FIRST_COMPLETED)
            return [(f, f.result()) for f in done]

        _schedule(tasks, lambda t: pool.submit(_run_in_worker, t), finished, outcome, jobs)
    except BaseException:
        for proc in list(getattr(pool, "_processes", {}).values()):  # stop now; finished files are already on disk
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


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
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'ecgbench[ray]' (or pip install ray)") from None
    if cfg.executor != "serial" and sys.platform == "win32":  # pragma: no cover
        raise ValueError(f"--executor {cfg.executor}: not supported on Windows")
