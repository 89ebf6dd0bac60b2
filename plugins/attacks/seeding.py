"""One seeded block for the attacks that draw from global generators (ART: numpy's; foolbox: torch's)."""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """numpy's, Python's and torch's global generators (and the CUDA one of `device`) seeded for the
    block and restored after it, so an attack is a function of its seed and leaves no trace behind."""
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        with torch.random.fork_rng(devices=[device] if device is not None and device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
