"""Executors: the same smoke matrix under serial, local jobs and Ray gives the same cell files.

Each run has its own cold cache, so every training and attack is recomputed under each executor;
torch's threads are pinned to one per task (`--threads 1`) so floating point sums in one order.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ctrl_c_as_in_a_terminal

RAY = os.environ.get("ECGBENCH_TEST_RAY_ADDRESS")  # .ci/run starts a local Ray instance; else each test starts its own
MATRIX = ["run", "--dataset", "mitbih", "--models", "kachuee,acharya", "--attacks", "fgsm", "--modes", "static,adaptive",
          "--profile", "smoke", "--source", "kachuee", "--threads", "1", "--no-progress"]
TIMING = ("seconds", "seconds_per_epoch")


def ecgbench(*args: str, cache: Path, data_dir: Path, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache),
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "ecgbench", *args], capture_output=True, text=True, env=env, **kw)


def cells(out: Path) -> dict[str, dict]:
    """Every cell file, timing fields removed."""
    found = {}
    for path in sorted((out / "cells").rglob("*.json")):
        record = json.loads(path.read_text())
        record.pop("seconds", None)
        for key in TIMING:
            record.get("train", {}).pop(key, None)
        found[str(path.relative_to(out))] = record
    return found


@pytest.fixture(scope="module")
def serial(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("serial")
    res = ecgbench(*MATRIX, "--out", str(root / "out"), cache=root / "cache", data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "out"


def test_jobs_executor_writes_the_serial_cells(serial, tmp_path, data_dir):
    res = ecgbench(*MATRIX, "--executor", "jobs", "--jobs", "2", "--out", str(tmp_path / "out"), cache=tmp_path / "cache",
                   data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    ours, theirs = cells(tmp_path / "out"), cells(serial)
    assert len(ours) == 10 and ours == theirs  # 2 models x (2 rows x (clean + fgsm adaptive) + fgsm static)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["executor"]["name"] == "jobs"
    assert_timeline(run["invocations"][-1], cells=10, trainings=4, static_sets=1, slots=2)


def test_without_threads_every_executor_runs_a_task_on_one_thread(serial, tmp_path, data_dir):
    """The default thread count does not follow the executor or the machine: a serial run without `--threads`, on a
    machine whose torch would take two, runs each task on one, records it, and writes the `--threads 1` cells."""
    matrix = [a for a in MATRIX if a not in ("--threads", "1")]
    res = ecgbench(*matrix, "--out", str(tmp_path / "out"), cache=tmp_path / "cache", data_dir=data_dir,
                   env_extra={"OMP_NUM_THREADS": "2"})
    assert res.returncode == 0, res.stderr[-3000:]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["machine"]["threads"] == 1 and {t["threads"] for t in run["invocations"][-1]["timeline"]} == {1}
    assert cells(tmp_path / "out") == cells(serial)


def test_run_json_records_the_machine_of_every_invocation(serial):
    """A resumed run may move to another machine, and the same seed's training gave other weights there: each
    invocation keeps the CPU, the instruction set torch dispatched to and the versions of the libraries it ran with."""
    import numpy
    import torch
    from importlib import metadata

    run = json.loads((serial / "run.json").read_text())
    here = run["invocations"][-1]["machine"]
    assert here == run["machine"] and here["threads"] == 1
    assert here["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and here["cpu"]
    assert here["packages"]["numpy"] == numpy.__version__
    assert here["packages"]["imbalanced-learn"] == metadata.version("imbalanced-learn")


def assert_timeline(inv: dict, cells: int, trainings: int, static_sets: int, slots: int) -> None:
    """run.json's timeline holds every task the invocation ran, never more at once than the executor's slots."""
    tl = inv["timeline"]
    kinds = [t["kind"] for t in tl]
    assert (kinds.count("cell"), kinds.count("train"), kinds.count("static")) == (cells, trainings, static_sets)
    assert all(t["status"] == "ok" and 0 <= t["started"] and t["started"] + t["seconds"] <= inv["wall_seconds"] + 0.5 for t in tl)
    edges = sorted([(t["started"], 1) for t in tl] + [(t["started"] + t["seconds"], -1) for t in tl], key=lambda e: (e[0], e[1]))
    running, most = 0, 0
    for _, step in edges:
        running += step
        most = max(most, running)
    assert 1 <= inv["workers"] <= slots and most <= slots
    assert 0 < inv["busy"] <= 1


def _hold_the_static_set(data_dir: Path, cache: Path):
    """Hold the cache lock of the run's static set, so every task that needs it waits: the run cannot end
    while the test holds it, and the cells that do not need it (the clean-trained rows) can finish."""
    from ecgbench.config.run import run_config
    from ecgbench.contracts.registry import registry
    from ecgbench.data.catalog import Catalog
    from ecgbench.plan.graph import Planner
    from ecgbench.store.layout import attacked_path
    from ecgbench.store.locks import entry_lock

    cfg = run_config({"datasets": "mitbih", "models": "kachuee,acharya", "attacks": "fgsm", "modes": "static,adaptive",
                      "profile": "smoke", "source": "kachuee", "data_dir": str(data_dir), "cache_dir": str(cache)})
    static = Planner(cfg, registry, Catalog(registry, cfg.data_dir, cfg.cache, cfg.profile, cfg.split)).static("mitbih", "fgsm", 0)
    return entry_lock(attacked_path(cache, static.attack_name, static.key))


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped (SIGTERM)")])
def test_ray_executor_writes_the_serial_cells_and_a_killed_ray_run_resumes_serially(serial, tmp_path, data_dir, sig, code, said):
    """Ctrl-C and SIGTERM stop a Ray run as they stop the others (Ray installs its own handlers; ours are put back)."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ecgbench[ray]'")
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "ECGBENCH_DATA": str(data_dir), "ECGBENCH_CACHE": str(cache),
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    where = ["--ray-address", RAY] if RAY else []
    with _hold_the_static_set(data_dir, cache):  # the stop lands before the end, always
        # --device cpu: on a cluster that declares a GPU, tasks would each ask for it and run one at a time
        proc = subprocess.Popen([sys.executable, "-m", "ecgbench", *MATRIX, "--executor", "ray", "--device", "cpu", *where,
                                 "--out", str(out)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=ctrl_c_as_in_a_terminal)
        # generous bounds: on a CPU shared with other work, starting Ray's workers and stopping them both take minutes
        deadline = time.time() + 900
        while time.time() < deadline and len(list((out / "cells").rglob("*.json"))) < 2:
            time.sleep(0.1)
        proc.send_signal(sig)  # the driver stops; finished cells stay
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == code, err[-3000:]
    assert err.splitlines()[-1] == f"ecgbench: {said}; finished cells are kept: rerun the same command to resume"
    kept = cells(out)
    assert 2 <= len(kept) <= 4 and all(kept[k] == cells(serial)[k] for k in kept)  # at most the clean-trained rows
    res = ecgbench(*MATRIX, "--out", str(out), cache=cache, data_dir=data_dir)  # resumed by the serial executor
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{len(kept)} already done" in res.stderr
    assert cells(out) == cells(serial)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, "Stopped"])
def test_a_stop_that_lands_inside_rays_cython_code_stays_a_stop(stop):
    """CPython reports a signal handler's exception raised inside a C/Cython call that then returns a value as
    `SystemError(... returned a result with an exception set)` chained to it (seen in CI: a SIGTERM during
    `ray.wait` made a run exit 2); the executor raises the stop itself. Errors of the code stay errors."""
    from ecgbench.cli.main import Stopped
    from ecgbench.execute.ray import unmasked

    stop = Stopped if stop == "Stopped" else stop
    with pytest.raises(stop):
        with unmasked():
            raise SystemError("<cyfunction CoreWorker.wait> returned a result with an exception set") from stop()
    for cause in (ValueError("a task's error"), None):
        with pytest.raises(SystemError):
            with unmasked():
                raise SystemError("a real one") from cause


def test_ray_on_a_running_cluster_shares_a_gpu_between_tasks(serial, tmp_path, data_dir):
    """`--tasks-per-gpu 2` asks each task for half a GPU; Ray schedules on a declared GPU without one."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ecgbench[ray]'")
    from ecgbench.config.run import RunConfig
    from ecgbench.config.profiles import get_profile
    from ecgbench.execute.runner import Runner

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if RAY:
        ray.init(address=RAY)
    else:
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        cfg = RunConfig(datasets=["mitbih"], models=["kachuee", "acharya"], attacks=["fgsm"], profile=get_profile("smoke"),
                        out=tmp_path / "out", data_dir=data_dir, cache=tmp_path / "cache", modes=("static", "adaptive"),
                        source="kachuee", progress=False, executor="ray", threads=1, tasks_per_gpu=2, device="auto")
        manifest = Runner(cfg).run()
    finally:
        ray.shutdown()
    assert manifest["failures"] == []
    assert cells(tmp_path / "out") == cells(serial)
    timeline = manifest["invocations"][-1]["timeline"]
    assert all(re.fullmatch(r"\S+ \([0-9a-f]{8}\)", t["node"]) and t["attempt"] == 1 for t in timeline)  # address (node id)


def test_ray_asks_a_share_of_a_gpu_per_task_and_per_pack(tmp_path, data_dir):
    """Each task asks Ray for 1/`--tasks-per-gpu` of a GPU, a packed training for `--gpus-per-pack` (default a whole
    one); without a GPU, none; a share outside (0, 1] is one line naming the option."""
    from ecgbench.config.run import run_config
    from ecgbench.execute.ray import gpu_shares

    base = {"models": "kachuee", "attacks": "fgsm", "out": str(tmp_path / "out"), "data_dir": str(data_dir),
            "cache_dir": str(tmp_path / "cache")}
    assert gpu_shares(run_config(base), True) == (1.0, 1.0)
    assert gpu_shares(run_config({**base, "tasks_per_gpu": 4, "gpus_per_pack": 0.5}), True) == (0.25, 0.5)
    assert gpu_shares(run_config({**base, "gpus_per_pack": 0.5}), False) == (0, 0)
    with pytest.raises(ValueError, match=r"^--gpus-per-pack 1.5: .*must be a share of one GPU in \(0, 1\], got 1.5$"):
        run_config({**base, "gpus_per_pack": 1.5})


def test_an_unreachable_ray_address_is_one_line_within_seconds(tmp_path, data_dir):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ecgbench[ray]'")
    t0 = time.time()
    res = ecgbench("run", "--profile", "smoke", "--models", "kachuee", "--attacks", "fgsm", "--modes", "adaptive",
                   "--executor", "ray", "--ray-address", "127.0.0.1:9", "--out", str(tmp_path / "out"),
                   cache=tmp_path / "cache", data_dir=data_dir)
    assert res.returncode == 2 and time.time() - t0 < 60
    assert res.stderr.splitlines()[-1].startswith("ecgbench: error: --ray-address 127.0.0.1:9: nothing answers there within 5 s")
    assert "ray start --head --port 9" in res.stderr


def test_the_probe_names_what_a_node_lacks(tmp_path, data_dir):
    """A node with another version of an attack plugin, other data and its own results folder: each is named."""
    from ecgbench.config.run import run_config
    from ecgbench.execute.ray import node_lacks

    cfg = run_config({"models": "kachuee", "attacks": "fgsm", "profile": "smoke", "out": str(tmp_path / "out"),
                      "data_dir": str(data_dir), "cache_dir": str(tmp_path / "cache")})
    ours = {"attacks/fgsm": ["fgsm", "ecgbench-atk", "0.2.0", "aaaa"], "models/kachuee": ["kachuee", "ecgbench-atk", "0.2.0", "bbbb"]}
    report = {"node": "10.0.0.3 (12345678)", "plugins": {**ours, "attacks/fgsm": ["fgsm", "unloadable"]},
              "data": {"mitbih": "other"}, "shared": {"cache": True, "results": False}}
    assert node_lacks(cfg, report, ours, {"mitbih": "mine"}) == [
        "plugin attacks/fgsm not installed, the driver's ecgbench-atk 0.2.0 (source aaaa)",
        f"dataset mitbih: other files than the driver's under {data_dir}",
        f"the results folder {tmp_path / 'out'} is not the driver's (not shared)"]
    assert node_lacks(cfg, {**report, "plugins": ours, "data": {"mitbih": "mine"}, "shared": {"cache": True, "results": True}},
                      ours, {"mitbih": "mine"}) == []


def test_a_wrong_executor_setting_is_one_line(tmp_path, data_dir):
    res = ecgbench(*MATRIX, "--executor", "jobs", "--jobs", "0", "--out", str(tmp_path / "o"), cache=tmp_path, data_dir=data_dir)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--jobs 0" in res.stderr


def test_with_several_slots_ready_trainings_and_static_sets_start_before_ready_cells():
    """Synthetic graph: two clean trainings, each with a cell; a static set needing the first, with a training
    and a cell after it. Every task starts after what it needs; with two slots, no cell starts while
    a training or static set is ready; with one slot, the graph's order is kept."""
    from ecgbench.execute.scheduler import Outcome, schedule
    from ecgbench.plan.cells import Cell
    from ecgbench.plan.tasks import CellTask, StaticTask, TrainTask

    def cell(key, train):
        return CellTask(key, Cell("d", train.model, None, "clean"), "k", "p", train)

    a, b = TrainTask("A", "d", "A", 0), TrainTask("B", "d", "B", 0)
    s = StaticTask("S", "d", "fgsm", "fgsm", 0, a)
    a_s = TrainTask("AS", "d", "A", 0, (s,))
    graph = [a, cell("cA", a), b, cell("cB", b), s, a_s, cell("cAS", a_s)]
    deps = {g.key: g.deps for g in graph}
    for slots in (2, 1):
        started: list[str] = []
        queue: list[str] = []
        done: set[str] = set()

        def submit(task):
            if slots > 1 and task.kind == "cell":
                ready = [g.key for g in graph if g.kind != "cell" and g.key not in started and set(g.deps) <= done]
                assert not ready, f"cell {task.key} started while {ready} was ready"
            started.append(task.key)
            queue.append(task.key)
            return task.key

        def wait(handles):  # the oldest running task finishes first
            key = queue.pop(0)
            done.add(key)
            return [(key, {"status": "ok", "summary": key})]

        schedule(graph, submit, wait, Outcome(), slots)
        assert sorted(started) == sorted(deps)
        assert all(started.index(d) < started.index(k) for k in started for d in deps[k])
        if slots == 1:
            assert started == [g.key for g in graph]
        else:
            assert started[:3] == ["A", "B", "S"]


def test_a_task_whose_input_is_cached_runs_without_it():
    """`needed` leaves out a cached static set and the source training only it needed; the scheduler then
    starts the training that reads the set at once instead of waiting for the left-out task."""
    from ecgbench.execute.scheduler import Outcome, needed, schedule
    from ecgbench.plan.cells import Cell
    from ecgbench.plan.graph import Graph
    from ecgbench.plan.tasks import CellTask, StaticTask, TrainTask

    src = TrainTask("src", "d", "m", 0)
    static = StaticTask("S", "d", "a", "a", 0, src)
    trained = TrainTask("T", "d", "m", 0, (static,))
    graph = Graph()
    for task in (src, static, trained, CellTask("c", Cell("d", "m", "a", "static"), "k", "p", trained)):
        graph.add(task)
    tasks = needed(graph, [graph.tasks["c"]], cached=lambda t: t.key == "S")
    assert [t.key for t in tasks] == ["T", "c"]
    started: list[str] = []
    schedule(tasks, lambda t: started.append(t.key) or t.key, lambda h: [(h[0], {"status": "ok", "summary": ""})], Outcome(), 2)
    assert started == ["T", "c"]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A two-node Ray cluster on one machine, as a user's head and worker nodes: loopback addresses 127.0.0.2 and
    127.0.0.3, one CPU each, started in the foreground (`--block`) so that stopping them stops only them."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ecgbench[ray]'")
    import shutil
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    plugin = _node_loss_plugin(tmp_path_factory.mktemp("plugin"))
    marker = tmp_path_factory.mktemp("marker") / "lost"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin), os.environ.get("PYTHONPATH")])),
           "ECGBENCH_TEST_LOSE_NODE": "127.0.0.3", "ECGBENCH_TEST_LOSE_MARKER": str(marker)}
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts", "start", "--num-cpus", "1", "--disable-usage-stats", "--block"]
    head = subprocess.Popen([*ray_cli, "--head", "--node-ip-address", "127.0.0.2", "--port", str(port),
                             "--include-dashboard=false", "--temp-dir", temp], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = [head]
    try:
        address = f"127.0.0.2:{port}"
        count = "import ray; ray.init(address='%s', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))" % address
        deadline = time.time() + 120
        while time.time() < deadline:
            if len(nodes) == 1 and subprocess.run([sys.executable, "-c", count], env=env, capture_output=True).returncode == 0:
                nodes.append(subprocess.Popen([*ray_cli, "--address", address, "--node-ip-address", "127.0.0.3"], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if len(nodes) == 2:
                alive = subprocess.run([sys.executable, "-c", count], env=env, capture_output=True, text=True)
                if alive.stdout.strip() == "2":
                    break
            time.sleep(1)
        else:
            pytest.fail("the two-node Ray cluster did not come up in 120 s")
        yield {"address": address, "env": {k: env[k] for k in ("PYTHONPATH", "ECGBENCH_TEST_LOSE_MARKER")}}
    finally:
        for proc in reversed(nodes):
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_two_node_cluster_runs_the_plan_across_both_nodes_with_the_serial_tables(serial, two_nodes, tmp_path, data_dir):
    """The README's recipe on two nodes: the probe checks both, tasks run on both, the cells equal the serial run's."""
    out = tmp_path / "out"
    res = ecgbench(*MATRIX, "--executor", "ray", "--ray-address", two_nodes["address"], "--device", "cpu", "--out", str(out),
                   cache=tmp_path / "cache", data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"ray: 2 node\(s\) checked: 127\.0\.0\.2 \([0-9a-f]{8}\), 127\.0\.0\.3 \([0-9a-f]{8}\)", res.stderr)
    assert cells(out) == cells(serial)
    timeline = json.loads((out / "run.json").read_text())["invocations"][-1]["timeline"]
    assert {t["node"].split(" ")[0] for t in timeline} == {"127.0.0.2", "127.0.0.3"}


def _node_loss_plugin(folder: Path) -> Path:
    """A made-up installed distribution whose model `loses-its-node` is tests/node_loss_plugin.py's (on PYTHONPATH)."""
    import shutil

    shutil.copy(Path(__file__).with_name("node_loss_plugin.py"), folder)
    info = folder / "ecgbench_test_node_loss-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ecgbench-test-node-loss\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[ecgbench.models]\nloses-its-node = node_loss_plugin:LosesItsNode\n")
    return folder


def test_a_node_lost_mid_task_is_retried_on_the_other_recorded_as_attempt_2_and_kept_out_of_the_log(two_nodes, tmp_path,
                                                                                                   data_dir):
    """A worker node dies while it trains (its raylet killed): Ray retries the task on the head, the timeline records
    attempt 2 there, the run ends complete, and Ray's report of the dead node stays out of ecgbench's output.
    Two seeds: two trainings start at once, one on each one-CPU node. Runs last: the cluster has one node after it."""
    out = tmp_path / "out"
    res = ecgbench("run", "--dataset", "mitbih", "--models", "loses-its-node", "--attacks", "fgsm", "--modes", "adaptive",
                   "--profile", "smoke", "--seeds", "0,1", "--threads", "1", "--no-progress", "--executor", "ray",
                   "--ray-address", two_nodes["address"], "--device", "cpu", "--out", str(out), cache=tmp_path / "cache",
                   data_dir=data_dir, env_extra=two_nodes["env"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert Path(two_nodes["env"]["ECGBENCH_TEST_LOSE_MARKER"]).exists()  # the node was lost
    inv = json.loads((out / "run.json").read_text())["invocations"][-1]
    retried = [t for t in inv["timeline"] if t["attempt"] == 2]
    assert [t["kind"] for t in retried] == ["train"] and retried[0]["node"].startswith("127.0.0.2 ")
    assert inv["cells_computed"] == 4 and not inv["failures"]
    assert "raylet" not in res.stderr.lower() and len(res.stderr.splitlines()) < 40, res.stderr


def test_a_cluster_with_token_authentication_takes_a_driver_with_its_token_and_names_it_to_one_without(tmp_path, data_dir):
    """Ray's token authentication, as the README says to set it: the same RAY_AUTH_MODE and token on the nodes and
    the driver. A driver without them gets one line naming authentication; with them, the run goes through."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ecgbench[ray]'")
    import socket
    import tempfile

    home = tmp_path / "home"  # the token lives in ~/.ray/auth_token: a home of its own for the cluster and the driver
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus", "1",
                             "--node-ip-address", "127.0.0.2", "--port", str(port), "--include-dashboard=false",
                             "--disable-usage-stats", "--temp-dir", temp], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = ["run", "--profile", "smoke", "--models", "kachuee", "--attacks", "fgsm", "--modes", "adaptive", "--no-progress",
               "--executor", "ray", "--ray-address", f"127.0.0.2:{port}", "--device", "cpu"]
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.2", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        refused = ecgbench(*run, "--out", str(tmp_path / "a"), cache=tmp_path / "cache", data_dir=data_dir)
        assert refused.returncode == 2
        assert "the head answers but this driver could not join it" in refused.stderr.splitlines()[-1]
        assert "most often authentication" in refused.stderr.splitlines()[-1]
        joined = ecgbench(*run, "--out", str(tmp_path / "b"), cache=tmp_path / "cache", data_dir=data_dir,
                          env_extra={"HOME": str(home), "RAY_AUTH_MODE": "token"})
        assert joined.returncode == 0, joined.stderr[-3000:]
    finally:
        head.terminate()
        head.wait(timeout=60)
