"""pluggy hooks for what is not a dataset, model or attack: metrics, report sections, figures, sub-commands.

A distribution implements hooks in a module it names under the entry-point group `ecgbench.hooks`
(`[project.entry-points."ecgbench.hooks"] my-name = "my_pkg.hooks"`); `ECGBENCH_PLUGINS` limits which
distributions load, as for every other plugin (simonw/llm's `register_commands` and datasette's
hook specifications are the models). Every hook receives cell records (plain dicts, see
docs/plugins.md) and never runs a model.
"""
from __future__ import annotations

import argparse
from typing import Any

import pluggy

from ecgbench.contracts.base import PluginError

__all__ = ["hookspec", "hookimpl", "Specs", "manager", "cell_metrics", "model_metrics", "report_sections",
           "register_commands", "GROUP"]

PROJECT = "ecgbench"
GROUP = "ecgbench.hooks"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Specs:
    """The hook specifications. Arguments are passed by name; an implementation may take any subset."""

    @hookspec
    def ecgbench_cell_metrics(self, record: dict) -> dict[str, float] | None:
        """Extra numbers for one finished cell record (a column each in `attacks.csv` / `.md`)."""

    @hookspec
    def ecgbench_model_metrics(self, records: list[dict]) -> dict[str, float] | None:
        """Extra numbers for one model on one dataset, from all its finished cell records (every seed and
        mode); a column each in `leaderboard.csv` / `.json`."""

    @hookspec
    def ecgbench_report_section(self, cells: list[dict], run: dict) -> tuple[str, str] | None:
        """A section `(title, markdown body)` appended to `leaderboard.md` and `leaderboard.html`."""

    @hookspec
    def ecgbench_figures(self, cells: list[dict], run: dict) -> list[tuple[str, Any]] | None:
        """Figures `(file stem, matplotlib Figure)` saved as `<stem>.png` in the run folder and shown in the HTML page."""

    @hookspec
    def register_commands(self, subparsers: argparse._SubParsersAction) -> None:
        """Add sub-commands to `ecgbench` (`subparsers.add_parser(...)`; set `func` to a callable taking the
        parsed arguments and returning an exit code)."""


def manager(load: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the specifications and, if `load`, every allowed `ecgbench.hooks` entry point."""
    from ecgbench.contracts.registry import hook_entries

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(Specs)
    if load:
        for e in hook_entries():
            module = e.load()
            try:
                pm.register(module, name=f"{e.dist}:{e.name}")
            except (pluggy.PluginValidationError, ValueError) as exc:
                raise PluginError(f"hook plugin {e.name!r} from {e.dist} {e.version} ({e.value}) is invalid: {exc}") from exc
    return pm


def _merged(dicts: list[dict | None], what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            if k in out:
                raise PluginError(f"two hook plugins return the {what} {k!r}; rename one")
            out[k] = v
    return out


def cell_metrics(pm: pluggy.PluginManager, record: dict) -> dict[str, float]:
    return _merged(pm.hook.ecgbench_cell_metrics(record=record), "cell metric")


def model_metrics(pm: pluggy.PluginManager, records: list[dict]) -> dict[str, float]:
    return _merged(pm.hook.ecgbench_model_metrics(records=records), "model metric")


def report_sections(pm: pluggy.PluginManager, cells: list[dict], run: dict) -> list[tuple[str, str]]:
    return [s for s in reversed(pm.hook.ecgbench_report_section(cells=cells, run=run)) if s]


def register_commands(subparsers: argparse._SubParsersAction, pm: pluggy.PluginManager | None = None) -> None:
    """Let hook plugins add sub-commands; a plugin that fails to load must not break the CLI, so errors
    are deferred to a command that reports them."""
    try:
        pm = pm or manager()
    except Exception as exc:  # noqa: BLE001 - reported when the user asks for plugins' commands
        p = subparsers.add_parser("plugin-error", help="a hook plugin failed to load: run this for the message")
        p.set_defaults(func=_Failed(str(exc)))
        return
    pm.hook.register_commands(subparsers=subparsers)


class _Failed:
    """The command `plugin-error`: raises the load error of a hook plugin, printed by the CLI in one line."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __call__(self, args: argparse.Namespace) -> int:
        raise PluginError(self.message)
