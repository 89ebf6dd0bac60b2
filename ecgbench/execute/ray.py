"""The Ray executor: the same task graph on a Ray cluster (`--executor ray [--ray-address auto|host:port]`).

Without an address, a local Ray instance is started for the run (and stopped after it). Each node
must see the same data, cache and results folders (a shared file system) and have ecgbench and the
plugins installed as packages; one probe task per node checks that before the first real task.
Resources per task: `--threads` CPUs (torch's threads set to match inside the task) and, on a GPU,
1/`--tasks-per-gpu` of one, so several small trainings share a card. A worker that crashes is
retried once (`max_retries=1`); an exception inside a task is that task's failure, not a retry.
Workers are reused between tasks, and each keeps its loaded beats for the next task.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from ecgbench import log
from ecgbench.engine.progress import Deadline
from ecgbench.execute.scheduler import Outcome, pin_threads, schedule, threads_per_task
from ecgbench.config.run import RunConfig
from ecgbench.execute.worker import Worker
from ecgbench.plan.tasks import Task

__all__ = ["run_ray", "probe"]

_WORKERS: dict[str, Any] = {}


def _task(cfg: RunConfig, threads: int, task: Task) -> dict:
    """Runs in a Ray worker: one `Worker` per configuration, kept for the tasks that follow."""
    from ecgbench.store.io import cache_key

    pin_threads(threads)
    key = cache_key(repr(cfg))
    if key not in _WORKERS:
        _WORKERS.clear()
        _WORKERS[key] = Worker(cfg)
    return _WORKERS[key].run(task)


def probe(cfg: RunConfig) -> dict:
    """What one node sees: its name, whether the shared folders and the plugins are there."""
    from ecgbench.contracts.registry import registry

    missing = [f"{what} {path}" for what, path in (("data", cfg.data_dir), ("cache", cfg.cache), ("results", cfg.out.parent))
               if not Path(path).exists()]
    unknown = [m for m in cfg.models if m not in registry.names("models")]
    unknown += [d for d in cfg.datasets if d not in registry.names("datasets")]
    return {"node": socket.gethostname(), "missing": missing, "unknown_plugins": unknown}


def _init(cfg: RunConfig) -> bool:
    """Connect to `--ray-address`, or start a local instance; True if we started it (and must stop it)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=True)
        return False
    ray.init(include_dashboard=False, log_to_driver=True)
    return True


def _probe_nodes(cfg: RunConfig) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    remote = ray.remote(num_cpus=0)(probe)
    refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(cfg) for n in nodes]
    for report in ray.get(refs):
        if report["missing"] or report["unknown_plugins"]:
            what = ", ".join(report["missing"] + [f"plugin {p!r} not installed" for p in report["unknown_plugins"]])
            raise ValueError(f"--executor ray: node {report['node']} cannot run this plan: {what} "
                             "(each node needs the shared folders and the same packages installed)")
    log.info(f"ray: {len(nodes)} node(s) checked: {', '.join(sorted({r['node'] for r in ray.get(refs)}))}")


def run_ray(tasks: list[Task], cfg: RunConfig, outcome: Outcome) -> None:
    import ray

    started = _init(cfg)
    try:
        _probe_nodes(cfg)
        cpus = ray.cluster_resources().get("CPU", 1)
        threads = threads_per_task(cfg, int(cpus)) or 1
        gpu = cfg.device == "cuda" or (cfg.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        remote = ray.remote(_task).options(num_cpus=threads, num_gpus=(1 / cfg.tasks_per_gpu) if gpu else 0, max_retries=1)
        cfg_ref = ray.put(cfg)
        slots = max(1, int(cpus // threads))
        if gpu:
            slots = max(slots, int(ray.cluster_resources().get("GPU", 1) * cfg.tasks_per_gpu))

        def finished(refs: list[Any]) -> list[tuple[Any, dict]]:
            done, _ = ray.wait(refs, num_returns=1)
            out = []
            for ref in done:
                try:
                    out.append((ref, ray.get(ref)))
                except ray.exceptions.RayError as exc:  # the worker died twice: the task fails, the run goes on
                    out.append((ref, {"status": "failed", "error": f"ray worker lost: {type(exc).__name__}",
                                      "summary": f"FAILED: ray worker lost ({type(exc).__name__})"}))
            return out

        schedule(tasks, lambda t: remote.remote(cfg_ref, threads, t), finished, outcome, slots, Deadline.of(cfg.deadline))
    finally:
        if started:
            ray.shutdown()
