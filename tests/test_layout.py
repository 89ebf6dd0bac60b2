"""The core's shape: folders in one layer order, no import circles, no private name used across modules, small modules.

Read from the source (every `import`, also those inside functions), so a lazy import cannot hide a circle.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import ecgbench

ROOT = Path(ecgbench.__file__).parent
# Each folder (and leaf module) may import only those before it.
LAYERS = ["log", "metrics", "store", "contracts", "config", "data", "engine", "plan", "execute", "report", "kit", "api", "cli",
          "__main__", "__init__"]  # the CLI is a shell over the public API (api.evaluate)
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("ecgbench", *path.relative_to(ROOT).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = path
    return out


def _imports() -> dict[str, set[tuple[str, str]]]:
    """Module -> {(module it imports, name imported)} within ecgbench."""
    mods, edges = _modules(), defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ecgbench"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    edges[name].add((full if full in mods else node.module, alias.name))
            elif isinstance(node, ast.Import):
                edges[name] |= {(a.name, "") for a in node.names if a.name.startswith("ecgbench")}
    return edges


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in ("baselines", "plugins"):
        return LAYERS.index("kit")  # the built-in plugins: only the kit and the CLI import them, by entry point otherwise
    return LAYERS.index(top)


def test_every_folder_imports_only_the_layers_before_it():
    wrong = [f"{a} imports {b}" for a, targets in _imports().items() for b, _ in targets
             if b != "ecgbench" and _layer(b) > _layer(a)]
    assert not wrong, wrong


def test_no_import_circles_between_modules():
    graph = {a: {b for b, _ in t if b != a} for a, t in _imports().items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, " -> ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in list(graph):
        if module not in state:
            visit(module, [module])


def test_no_private_name_is_used_across_modules():
    private = [f"{a} uses {b}.{n}" for a, targets in _imports().items() for b, n in targets
               if n.startswith("_") and not n.startswith("__") and b != a]
    assert not private, private


def test_modules_stay_small():
    big = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, big
