"""Shared fixtures: the real data folder (ECGBENCH_DATA) and one beat cache for the whole session; and how a test
starts a run it will interrupt."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """ECGBENCH_DATA, else the `shared/data` folder beside the checkout (where CI lays it)."""
    path = Path(os.environ.get("ECGBENCH_DATA") or REPO.parent / "shared" / "data")
    if not (path / "mitdb" / "RECORDS").exists():
        pytest.fail(f"no MIT-BIH data at {path / 'mitdb'}; set ECGBENCH_DATA to the folder holding mitdb/")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ecgbench-cache")


def pytest_configure(config: pytest.Config) -> None:
    # Test batches are small: one thread per process beats torch's pool on a 2-core machine,
    # for this process and for the CLI subprocesses the tests start.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def ctrl_c_as_in_a_terminal() -> None:
    """`preexec_fn` of a run a test will Ctrl-C: SIGINT at its default, as a terminal's Ctrl-C finds it. A shell's
    background job (`cmd &` without job control, as scripts start CI) inherits SIGINT ignored, and Python then
    never raises KeyboardInterrupt: the run would ignore the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
