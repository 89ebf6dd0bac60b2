"""An attack plugin module that fails to import: it needs a library that is not installed."""
from __future__ import annotations

import ecgbench_test_no_such_library  # noqa: F401 - the point: this import fails

from ecgbench.contracts import Attack


class Unimportable(Attack):
    name = "unimportable"
