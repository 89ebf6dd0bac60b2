"""Host round trips of each attack back-end (issue 19): per model query, how many torch operations it launches and how
many of them wait for the device (`.item()`, `bool(tensor)`, `.cpu()`, `.numpy()`, `.tolist()`, `nonzero`).

On a GPU every such call stalls the host until the device catches up, and every launched operation costs a few
microseconds of host time, so these two counts say how far an attack can keep a GPU busy, measured anywhere
(a `TorchFunctionMode` counts the calls; no GPU needed). One table:

    ECGBENCH_DATA=/path/to/data python benchmarks/host_syncs.py [--beats-per-class 4] [--out FILE]

The model is the kit's reference Kachuee (`ecgbench.kit.testing.reference_setup`: trained briefly on MIT-BIH
smoke beats), each attack at a small budget so that the table takes a minute on one CPU core.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate
from torch.overrides import TorchFunctionMode

SYNCS = {"item", "__bool__", "tolist", "numpy", "cpu", "__int__", "__float__", "__index__", "nonzero", "__array__"}
# (attack, back-end, parameters): small budgets, same for every back-end of an attack
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("boundary", "foolbox", {"queries": 500}),
    ("boundary", "art", {"queries": 500}),
    ("hsj", "foolbox", {"max_iter": 3, "max_eval": 200}),
    ("hsj", "art", {"max_iter": 3, "max_eval": 200}),
    ("square", "torch", {"queries": 200}),
    ("square", "art", {"queries": 200}),
    ("apgd", "torch", {"max_iter": 20}),
    ("apgd", "art", {"max_iter": 20}),
    ("pgd", "art", {}),
]


class Counting(TorchFunctionMode):
    """Counts every torch call made inside it, and those that wait for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls, self.syncs = 0, collections.Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.calls += 1
        name = getattr(func, "__name__", "")
        if name in SYNCS:
            self.syncs[name] += 1
        return func(*args, **(kwargs or {}))


class Queries(torch.nn.Module):
    """The model, counting its forward calls (queries, each a batch)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.n = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += 1
        return self.model(x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--beats-per-class", type=int, default=4)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from ecgbench.contracts.registry import registry
    from ecgbench.kit.testing import reference_setup

    torch.set_num_threads(1)
    data = os.environ.get("ECGBENCH_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    model, x, y, value_range = reference_setup(data, per_class=args.beats_per_class)
    rows = []
    for name, backend, params in CASES:
        cls = registry.get("attacks", name)
        known = {k: v for k, v in params.items() if k in cls.defaults}
        attack = cls(backend=backend, **known)
        counted, counter = Queries(model).eval(), Counting()
        t0 = time.perf_counter()
        with counter:
            attack(counted, x, y, value_range)
        seconds = time.perf_counter() - t0
        q = max(counted.n, 1)
        rows.append([attack.label, known, counted.n, round(counter.calls / q, 1), round(sum(counter.syncs.values()) / q, 2),
                     ", ".join(f"{k} {v}" for k, v in counter.syncs.most_common()), round(seconds, 1)])
    table = tabulate(rows, headers=["attack", "parameters", "queries (batched forwards)", "torch ops / query",
                                    "host syncs / query", "syncs by kind", "s (CPU)"], tablefmt="github")
    text = (f"{len(y)} beats, one CPU thread, torch {torch.__version__}; python {sys.version.split()[0]}\n\n{table}\n")
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
