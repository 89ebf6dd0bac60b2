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
import signal
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ecgbench import log
from ecgbench.contracts.registry import registry
from ecgbench.engine.progress import Deadline
from ecgbench.execute.scheduler import Outcome, schedule, threads_per_task
from ecgbench.config.run import RunConfig
from ecgbench.execute.worker import Worker
from ecgbench.plan.tasks import Task

__all__ = ["run_ray", "probe", "node_lacks", "gpu_shares", "unmasked"]

_WORKERS: dict[str, Any] = {}


def _task(cfg: RunConfig, task: Task) -> dict:
    """Runs in a Ray worker: one `Worker` per configuration (it pins torch's threads), kept for the tasks that follow."""
    import ray

    from ecgbench.store.io import cache_key

    key = cache_key(repr(cfg))
    if key not in _WORKERS:
        _WORKERS.clear()
        _WORKERS[key] = Worker(cfg)
    out = _WORKERS[key].run(task)
    ctx = ray.get_runtime_context()
    out["timing"].update(node=_node_name(ctx.get_node_id(), ray.util.get_node_ip_address()), attempt=_attempt())
    return out


def _node_name(node_id: str, ip: str) -> str:
    """A node as the probe and the timeline name it: its address and the start of its Ray node id."""
    return f"{ip} ({node_id[:8]})"


def _attempt() -> int:
    """Which attempt of its task this is (1, or 2 after a worker or node was lost and Ray retried it).

    Ray (2.60) has no public call for it: its core worker's, which Ray's own task events use, or 1 where that
    is missing (tests/test_executors.py loses a node mid-task and checks that attempt 2 is recorded)."""
    import ray

    try:
        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number()) + 1
    except Exception:  # noqa: BLE001 - another Ray: not known
        return 1


def _data_files(cfg: RunConfig, reg: Any) -> dict[str, str]:
    """Per dataset, a digest of its raw files' names and sizes as this node sees them (or why it cannot)."""
    from ecgbench.store.io import cache_key

    out = {}
    for name in cfg.datasets:
        try:
            files = reg.get("datasets", name)(cfg.data_dir).files()
            out[name] = cache_key([(str(p.relative_to(cfg.data_dir)), p.stat().st_size) for p in files])
        except Exception as exc:  # noqa: BLE001 - reported by the driver, naming the node
            out[name] = f"unreadable ({type(exc).__name__}: {exc})"
    return out


def probe(cfg: RunConfig, token: str) -> dict:
    """What one node sees: its name, the plugins at their versions, the data, and the driver's token in the shared folders."""
    import ray

    from ecgbench.plan.keys import identities

    shared = {what: (Path(path) / PROBE_FILE).read_text() == token if (Path(path) / PROBE_FILE).exists() else False
              for what, path in (("cache", cfg.cache), ("results", cfg.out))}
    return {"node": _node_name(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()),
            "host": socket.gethostname(), "plugins": identities(registry, cfg),
            "data": _data_files(cfg, registry), "shared": shared}


PROBE_FILE = ".ecgbench-probe"


def _init(cfg: RunConfig) -> bool:
    """Connect to `--ray-address`, or start a local instance; True if we started it (and must stop it).

    An address that does not answer is one line within seconds, not Ray's endless retries. Ray
    installs its own SIGTERM and SIGINT handlers; ours are put back, so a stopped run exits 143 / 130
    and keeps its finished cells as under the other executors. Ray's own log lines show with --verbose."""
    import logging

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    quiet = dict(log_to_driver=cfg.verbose, logging_level=logging.INFO if cfg.verbose else logging.ERROR)
    try:
        if cfg.ray_address:
            _reachable(cfg.ray_address)
            try:
                ray.init(address=cfg.ray_address, include_dashboard=False, **quiet)
            except Exception as exc:  # noqa: BLE001 - Ray's many connection errors become one line
                raise ValueError(_connect_error(cfg.ray_address, exc)) from None
            return False
        ray.init(include_dashboard=False, **quiet)
        return True
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextmanager
def unmasked() -> Iterator[None]:
    """A stop (Ctrl-C, SIGTERM) whose handler raises while the driver waits inside Ray's Cython code (`ray.wait`)
    surfaces as `SystemError: <cyfunction ...> returned a result with an exception set`, the stop chained as its
    cause: raise the stop itself, so the run ends as a stopped run (exit 130 / 143), not as an error (exit 2)."""
    try:
        yield
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if cause is not None and not isinstance(cause, Exception):  # KeyboardInterrupt, the CLI's Stopped
            raise cause from None
        raise


def _reachable(address: str, timeout: float = 5.0) -> None:
    """`host:port` must accept a connection within `timeout` seconds ("auto" and ray:// addresses are Ray's to find)."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(f"--ray-address {address}: nothing answers there within {timeout:g} s ({exc.strerror or exc}); "
                         f"is the head running (`ray start --head --port {port}` on {host}), and are the host and port right?") from None


def _connect_error(address: str, exc: Exception) -> str:
    """The port answered (`_reachable`), yet the driver could not join: most often authentication (Ray prints
    `InvalidAuthToken` from its C++ side, not in the exception), else another Ray version."""
    text = " ".join(str(exc).split())[:300]
    return (f"--ray-address {address}: the head answers but this driver could not join it ({type(exc).__name__}: {text}); "
            "most often authentication: RAY_AUTH_MODE (and with token, the same token: ~/.ray/auth_token or RAY_AUTH_TOKEN) "
            "must be the cluster's on the driver too; else another Ray version than the cluster's")


def _probe_nodes(cfg: RunConfig, reg: Any) -> None:
    """One probe per node, before any work: each must have the driver's plugins (same identities), see the same
    data, and share the cache and results folders (it reads back a token the driver wrote there)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ecgbench.plan.keys import identities
    from ecgbench.store.io import atomic_write

    token = os.urandom(8).hex()
    for folder in (cfg.cache, cfg.out):
        atomic_write(Path(folder) / PROBE_FILE, lambda fh: fh.write(token.encode()))
    try:
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        remote = ray.remote(num_cpus=0)(probe)
        refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(cfg, token) for n in nodes]
        reports = ray.get(refs)
    finally:
        for folder in (cfg.cache, cfg.out):
            (Path(folder) / PROBE_FILE).unlink(missing_ok=True)
    ours = identities(reg, cfg)
    data = _data_files(cfg, reg)
    for report in reports:
        lacks = node_lacks(cfg, report, ours, data)
        if lacks:
            raise ValueError(f"--executor ray: node {report['node']} cannot run this plan: {'; '.join(lacks)} "
                             "(every node needs the same packages and the shared data, cache and results folders)")
    log.info(f"ray: {len(nodes)} node(s) checked: {', '.join(sorted(r['node'] for r in reports))}")


def node_lacks(cfg: RunConfig, report: dict, plugins: dict[str, list], data: dict[str, str]) -> list[str]:
    """What a node's probe `report` shows it lacks, against the driver's `plugins` and `data`: one phrase each."""
    def ident(v: list) -> str:
        return "not installed" if len(v) < 4 else f"{v[1]} {v[2]} (source {v[3]})"

    lacks = [f"plugin {k} {ident(v)}, the driver's {ident(plugins[k])}" for k, v in report["plugins"].items() if v != plugins[k]]
    lacks += [f"dataset {d}: {v}" if v.startswith("unreadable") else f"dataset {d}: other files than the driver's under {cfg.data_dir}"
              for d, v in report["data"].items() if v != data[d]]
    lacks += [f"the {what} folder {cfg.cache if what == 'cache' else cfg.out} is not the driver's (not shared)"
              for what, ok in report["shared"].items() if not ok]
    return lacks


def gpu_shares(cfg: RunConfig, gpu: bool) -> tuple[float, float]:
    """The share of one GPU a task asks Ray for, and a packed training's: 1/`--tasks-per-gpu` and `--gpus-per-pack`
    (default 1: a pack of up to 40 members fills a card), none without a GPU."""
    return (1 / cfg.tasks_per_gpu, cfg.gpus_per_pack) if gpu else (0, 0)


@unmasked()  # every Ray call of the driver: init, the probes, the waits, shutdown
def run_ray(tasks: list[Task], cfg: RunConfig, outcome: Outcome) -> None:
    import ray

    started = _init(cfg)
    try:
        _probe_nodes(cfg, registry)
        cpus = ray.cluster_resources().get("CPU", 1)
        threads = threads_per_task(cfg)
        gpu = cfg.device == "cuda" or (cfg.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        share, pack_share = gpu_shares(cfg, gpu)
        remote = ray.remote(_task).options(num_cpus=threads, num_gpus=share, max_retries=1)
        packed = ray.remote(_task).options(num_cpus=threads, num_gpus=pack_share, max_retries=1)
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

        schedule(tasks, lambda t: (packed if t.kind == "pack" else remote).remote(cfg_ref, t), finished, outcome, slots, Deadline.of(cfg.deadline))
    finally:
        if started:
            ray.shutdown()
