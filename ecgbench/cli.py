"""Command line: `ecgbench run | report | compare | list | plugins | check | data download`.

Errors are caught once, here, and printed as one line (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from ecgbench import __version__
from ecgbench.registry import KINDS, registry

DATA_ENV = "ECGBENCH_DATA"


def _data_dir(value: str | None) -> Path:
    return Path(value or os.environ.get(DATA_ENV) or "data")


def cmd_list(args: argparse.Namespace) -> int:
    for kind in KINDS:
        print(f"{kind}: {', '.join(registry.names(kind)) or '(none)'}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    entries = [e.as_dict() for e in registry.entries]
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        for e in entries:
            print(f"{e['kind']:<9} {e['name']:<14} {e['dist']} {e['version']}  ({e['value']})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ecgbench.profiles import get_profile
    from ecgbench.report import write_report
    from ecgbench.registry import RegistryError
    from ecgbench.runner import MODES, RunConfig, Runner, build_attack
    from ecgbench.store import cache_dir

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"--modes: unknown mode {bad[0]!r}; choose from {', '.join(MODES)}")
    datasets = registry.select("datasets", args.dataset)
    models = registry.select("models", args.models)
    attacks = registry.select("attacks", args.attacks) if args.attacks.strip() else []
    profile = get_profile(args.profile)
    for spec in attacks:  # a mistyped back-end, variant or parameter stops here, before any training
        try:
            build_attack(spec, profile, registry)
        except RegistryError:
            pass  # a plugin that fails to import fails only its own cells
    out = Path(args.out or f"runs/{datasets[0]}-{profile.name}")
    cfg = RunConfig(datasets=datasets, models=models, attacks=attacks, profile=profile, out=out,
                    data_dir=_data_dir(args.data_dir), cache=cache_dir(args.cache_dir), split=args.split, modes=modes,
                    source=args.source, device=args.device, force=args.force, retry_failed=args.retry_failed,
                    progress=not args.no_progress, command="ecgbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    manifest = Runner(cfg).run()
    write_report(out)
    print(f"tables written to {out}/ (leaderboard.md, .csv, .json)")
    if manifest["failures"]:
        print(f"{len(manifest['failures'])} cell(s) failed; first: {manifest['failures'][0]}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ecgbench.report import write_report

    for path in write_report(Path(args.run_dir)):
        print(path)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ecgbench.compare import compare_with_paper

    print(compare_with_paper(Path(args.run_dir), args.mode))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ecgbench.check import check_plugin

    for line in check_plugin(args.kind, args.name, _data_dir(args.data_dir)):
        print(line)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ecgbench.download import download

    print(download(args.database, _data_dir(args.to)))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecgbench", description="Adversarial-robustness benchmark for ECG beat classifiers.")
    p.add_argument("--version", action="version", version=f"ecgbench {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train and attack every model x attack, write cells and tables")
    r.add_argument("--dataset", "--datasets", default="mitbih", help="dataset name(s), globs or 'all' (default mitbih)")
    r.add_argument("--models", default="all", help="model names, globs ('kach*') or 'all'")
    r.add_argument("--attacks", default="all", help="attack specs: 'all', 'fgsm,pgd', 'pgd@foolbox', 'hsj@art:paper-reference'")
    r.add_argument("--modes", default="static,adaptive,adaptive-detect", help="any of static (paper 3.1), adaptive, adaptive-detect")
    r.add_argument("--profile", default="quick", help="smoke | quick | paper")
    r.add_argument("--split", default="random", help="random (paper) | inter-patient (mitbih) | patient | strat-fold (ptbxl)")
    r.add_argument("--source", default=None, help="model the static attacks are made against (default ecg-atk-gan, paper 2.3)")
    r.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<profile>)")
    r.add_argument("--data-dir", default=None, help=f"data root holding mitdb/, ptbxl/ ... (default ${DATA_ENV}, else ./data)")
    r.add_argument("--cache-dir", default=None, help="cache for beats, checkpoints, attacked sets (default $ECGBENCH_CACHE, else ~/.cache/ecgbench)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    r.add_argument("--force", action="store_true", help="recompute every cell")
    r.add_argument("--retry-failed", action="store_true", help="recompute failed cells")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="rebuild tables and figures from a run folder's cell files")
    rep.add_argument("run_dir")
    rep.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="our Table 1/2 numbers beside the paper's, cell by cell")
    c.add_argument("run_dir")
    c.add_argument("--paper", action="store_true", help="compare with the ECG-ATK-GAN paper (the only reference so far)")
    c.add_argument("--mode", default="static", choices=["static", "adaptive"])
    c.set_defaults(func=cmd_compare)

    sub.add_parser("list", help="registered datasets, models and attacks").set_defaults(func=cmd_list)
    pl = sub.add_parser("plugins", help="every entry point with its distribution and version")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins)

    ch = sub.add_parser("check", help="run the plugin contract checks on one registered plugin")
    ch.add_argument("kind", choices=[k[:-1] for k in KINDS])
    ch.add_argument("name")
    ch.add_argument("--data-dir", default=None)
    ch.set_defaults(func=cmd_check)

    d = sub.add_parser("data", help="data utilities")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dl = dsub.add_parser("download", help="download a PhysioNet database with wfdb (needs internet)")
    dl.add_argument("database", help="mitdb | ptbdb | ptbxl")
    dl.add_argument("--to", default=None, help=f"data root (default ${DATA_ENV}, else ./data)")
    dl.set_defaults(func=cmd_download)

    from ecgbench.commands import add_report_commands  # export, merge and hook plugins' sub-commands

    add_report_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become a message
        if args.debug:
            raise
        print(f"ecgbench: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
