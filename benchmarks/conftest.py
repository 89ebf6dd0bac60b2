"""Benchmarks share the test suite's data and cache fixtures (tests/conftest.py, loaded by path:
tests/ is not a package), so both find the data the same way: ECGBENCH_DATA, else shared/data."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("ecgbench_tests_conftest", Path(__file__).resolve().parents[1] / "tests" / "conftest.py")
_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tests)

data_dir, cache_dir = _tests.data_dir, _tests.cache_dir
