"""The local back-ends: `serial` (tasks in this process, in the graph's order) and `jobs` (worker processes).

Both hand the scheduler a way to start a task and a way to wait for one; the scheduler decides
what may start. `jobs` uses spawned processes, each with its own `Worker`.
"""
from __future__ import annotations

import os
from typing import Any

from ecgbench.engine.progress import Deadline
from ecgbench.execute.scheduler import Outcome, schedule
from ecgbench.execute.worker import Worker
from ecgbench.plan.graph import RunConfig, Task

__all__ = ["run_serial", "run_jobs"]


def run_serial(tasks: list[Task], cfg: RunConfig, worker: Worker, outcome: Outcome) -> None:
    """Run the tasks one after another in this process, with `worker` (which keeps its models between tasks)."""
    results: dict[int, dict] = {}

    def run_now(task: Task) -> int:
        results[len(results)] = worker.run(task)
        return len(results) - 1

    schedule(tasks, run_now, lambda handles: [(handles[0], results[handles[0]])], outcome, 1, Deadline.of(cfg.deadline))


_WORKER: Any = None


def _init_worker(cfg: RunConfig, log_level: str) -> None:
    global _WORKER
    os.environ["ECGBENCH_LOG"] = log_level
    _WORKER = Worker(cfg)  # it pins torch's threads


def _run_in_worker(task: Task) -> dict:
    return _WORKER.run(task)


def run_jobs(tasks: list[Task], cfg: RunConfig, outcome: Outcome) -> None:
    """Run the tasks in `cfg.jobs` spawned worker processes; on an interrupt the workers stop at once."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    jobs = max(1, cfg.jobs)
    # spawn, not fork: a forked child of a process that already ran torch can deadlock in its thread pools
    pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(cfg, os.environ.get("ECGBENCH_LOG", "normal")))
    try:
        def finished(handles: list[Any]) -> list[tuple[Any, dict]]:
            done, _ = wait(handles, return_when=FIRST_COMPLETED)
            return [(f, f.result()) for f in done]

        schedule(tasks, lambda t: pool.submit(_run_in_worker, t), finished, outcome, jobs, Deadline.of(cfg.deadline))
    except BaseException:
        for proc in list(getattr(pool, "_processes", {}).values()):  # stop now; finished files are already on disk
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
