"""Reporting sub-commands (`export`, `merge`) and the hook plugins' sub-commands, added to the CLI's parser."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ecgbench.store.io import atomic_write

__all__ = ["add_report_commands", "cmd_export", "cmd_merge"]


def cmd_export(args: argparse.Namespace) -> int:
    from ecgbench.report.export import export_entries
    from ecgbench.report.tables import row_name

    entries = export_entries(Path(args.run_dir))
    if args.json or args.out:
        text = json.dumps(entries, indent=2, sort_keys=True) + "\n"
        if args.out:
            atomic_write(Path(args.out), lambda fh: fh.write(text.encode()))
            print(f"{len(entries)} model entries written to {args.out}")
        else:
            print(text, end="")
        return 0
    for e in entries:
        wb = (e["robust_accuracy"]["white_box"] or {}).get("mean")
        print(f"{e['dataset']} {row_name(e)}: clean {e['clean_accuracy']['mean'] * 100:.1f}%, white-box worst "
              f"{'—' if wb is None else f'{wb * 100:.1f}%'} at eps {e['threat_model']['eps']:g}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ecgbench.report.export import merge_runs

    written = merge_runs([Path(r) for r in args.runs], Path(args.out))
    print(f"merged {len(args.runs)} runs into {args.out}/ ({len(written)} files written)")
    return 0


def add_report_commands(sub: argparse._SubParsersAction) -> None:
    """`export`, `merge`, then whatever sub-commands installed hook plugins register."""
    e = sub.add_parser("export", help="one JSON entry per model (RobustBench-style): accuracies, intervals, threat model, provenance")
    e.add_argument("run_dir")
    e.add_argument("--json", action="store_true", help="print the entries as JSON (default: a one-line summary per model)")
    e.add_argument("--out", default=None, help="write the JSON to this file instead of standard output")
    e.set_defaults(func=cmd_export)

    m = sub.add_parser("merge", help="combine run folders' cells (shards, CPU and GPU runs) into one leaderboard")
    m.add_argument("runs", nargs="+", help="run folders with cells/ and run.json")
    m.add_argument("--out", required=True, help="new folder for the merged cells and report")
    m.set_defaults(func=cmd_merge)

    from ecgbench.contracts import hooks

    hooks.register_commands(sub)
