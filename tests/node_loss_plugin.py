"""A model plugin that loses its Ray node once, for tests/test_executors.py: the retried task is recorded as attempt 2.

Constructed inside a Ray worker on the node whose address is in ECGBENCH_TEST_LOSE_NODE, the first time (a marker
file in ECGBENCH_TEST_LOSE_MARKER records it), it kills that node's raylet and its own process, as a machine that
dies mid-task would. Anywhere else (the driver, the other node, the retry) it is Kachuee.
Not a test module (no `test_` prefix): it is found through a made-up distribution's entry point.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from ecgbench.baselines.kachuee import Kachuee


class LosesItsNode(Kachuee):
    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__(n_classes, window)
        marker = Path(os.environ.get("ECGBENCH_TEST_LOSE_MARKER", "/nonexistent/marker"))
        if "default_worker" not in sys.argv[0] or marker.exists() or not marker.parent.is_dir():
            return
        import ray

        if ray.util.get_node_ip_address() != os.environ.get("ECGBENCH_TEST_LOSE_NODE"):
            return
        marker.touch()
        os.kill(os.getppid(), signal.SIGKILL)  # the raylet: the node is gone
        os._exit(1)
