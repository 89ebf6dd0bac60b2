"""Command line: `ecgbench run | report | compare | list | plugins | check | data download`.

Errors are caught once, here, and printed as one line (`--debug` shows the traceback).
"""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ecgbench import __version__
from ecgbench.config.run import DATA_ENV, data_dir
from ecgbench.contracts.registry import KINDS, registry

INCOMPLETE = 3  # exit code: the run stopped at --time-limit with work left (0 done, 1 cells failed, 2 error)
EXIT_CODES = ("exit codes: 0 every cell done; 1 some cells failed (their files say why); 2 an error before or during the "
              "run (one line); 3 stopped by --time-limit with work left (rerun to continue); 130 interrupted; 143 SIGTERM")

if TYPE_CHECKING:
    from ecgbench.config.run import RunConfig



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


def run_options(args: argparse.Namespace) -> dict:
    """The run options given on the command line, under the configuration's key names (None: not given)."""
    seeds = args.seeds if args.seeds is not None else (None if args.seed is None else str(args.seed))
    return {"datasets": args.dataset, "models": args.models, "attacks": args.attacks, "modes": args.modes,
            "profile": args.profile, "split": args.split, "source": args.source, "out": args.out, "data_dir": args.data_dir,
            "cache_dir": args.cache_dir, "device": args.device, "pack": args.pack, "threads": args.threads, "seeds": seeds, "eps": args.eps,
            "eps_uv": args.eps_uv, "executor": args.executor, "jobs": args.jobs, "ray_address": args.ray_address, "tasks_per_gpu": args.tasks_per_gpu,
            "gpus_per_pack": args.gpus_per_pack}


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run's configuration from the options (and `--config`), every value checked: a fault is one line."""
    from ecgbench.config.run import run_config as resolve

    return resolve(run_options(args), args.config, command="ecgbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                   force=args.force, retry_failed=args.retry_failed, progress=not args.no_progress, verbose=args.verbose,
                   time_limit=args.time_limit, checkpoint_every=args.checkpoint_every)


def cmd_run(args: argparse.Namespace) -> int:
    from ecgbench import log

    log.configure(quiet=args.quiet, verbose=args.verbose, progress=not args.no_progress)
    cfg = run_config(args)
    out = cfg.out
    if args.dry_run:
        from ecgbench.execute.estimate import dry_run

        print(dry_run(cfg, calibrate=not args.no_calibrate))
        return 0
    from ecgbench.report.write import write_report
    from ecgbench.execute.runner import Runner

    if args.from_bundle:
        _unbundle(args.from_bundle, cfg.out, cfg.cache, expect=cfg)
    manifest = Runner(cfg).run(wait=args.wait)
    inv = manifest["invocations"][-1]
    stopped = inv.get("stopped") == "time limit"
    if not stopped or any((out / "cells").rglob("*.json")):  # a slice that finished no cell yet has no table to write
        write_report(out)
        print(f"tables and figures written to {out}/: open {out}/leaderboard.html in a browser (also leaderboard.md, .csv, .json)")
    if stopped:
        print(f"ecgbench: time limit reached: {inv['cells_computed']} cell(s) computed, {inv['cells_left']} left, "
              f"running work saved; rerun the same command to continue (exit {INCOMPLETE})", file=sys.stderr)
        return INCOMPLETE
    if manifest["failures"]:
        print(f"{len(manifest['failures'])} cell(s) failed; first: {manifest['failures'][0]}", file=sys.stderr)
        return 1
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from ecgbench import log
    from ecgbench.config.run import parse_duration
    from ecgbench.execute.bundles import bundle_run

    log.configure(quiet=True)
    m = bundle_run(Path(args.run_dir), Path(args.o), cache=args.cache_dir and Path(args.cache_dir),
                   data_dir=args.data_dir and Path(args.data_dir),
                   leave_out_under=parse_duration("--leave-out-under", args.leave_out_under or 0))
    kinds = {k: sum(f["bytes"] for f in m["files"] if f["name"].startswith(k)) for k in ("results/", "cache/")}
    print(f"{args.o}: {m['size'] / 1e6:.1f} MB, {len(m['files'])} files ({kinds['results/'] / 1e6:.1f} MB of cells and "
          f"run.json, {kinds['cache/'] / 1e6:.1f} MB of cache entries, before compression); {m['cells_left']} cell(s) "
          f"left to compute; continue elsewhere with `ecgbench unbundle {args.o} --out {args.run_dir}` and the same run command")
    return 0


def _unbundle(file: str, out: Path, cache: Path, expect: RunConfig | None = None) -> None:
    from ecgbench.execute.bundles import unbundle

    placed = unbundle(Path(file), out, cache, expect=expect)
    print(f"{file}: checked; {placed.written} file(s) written to {out}/ and {cache}/, {placed.same} already there"
          + (f", {placed.kept} kept that differ from the bundle's (the files here win)" if placed.kept else ""))


def cmd_unbundle(args: argparse.Namespace) -> int:
    from ecgbench.store.layout import cache_dir

    _unbundle(args.file, Path(args.out), cache_dir(args.cache_dir))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ecgbench.report.write import write_report

    for path in write_report(Path(args.run_dir)):
        print(path)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ecgbench.report.compare import compare_with_paper

    print(compare_with_paper(Path(args.run_dir), args.mode))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ecgbench.kit.check import check_plugin

    for line in check_plugin(args.kind, args.name, data_dir(args.data_dir)):
        print(line)
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    """`ecgbench profiles [NAME_OR_PATH ...]`: the built-in profiles, or the ones named, as a table."""
    from ecgbench.config.profiles import describe_profiles, get_profile, list_profiles

    print(describe_profiles([get_profile(n) for n in args.names] if args.names else list_profiles()))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ecgbench.data.download import download

    print(download(args.database, data_dir(args.to)))
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors in one line (`ecgbench run: error: ...`), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="ecgbench", description="Adversarial-robustness benchmark for ECG beat classifiers.")
    p.add_argument("--version", action="version", version=f"ecgbench {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train and attack every model x attack, write cells and tables", epilog=EXIT_CODES)
    r.add_argument("--config", default=None, help="a run.toml: any option below; the command line overrides it")
    r.add_argument("--dataset", "--datasets", default=None, help="dataset name(s), globs or 'all' (default mitbih)")
    r.add_argument("--models", default=None, help="model names, globs ('kach*') or 'all' (default)")
    r.add_argument("--attacks", default=None, help="attack specs: 'all' (default), 'fgsm,pgd', 'pgd@foolbox', 'hsj@art:paper-reference'")
    r.add_argument("--modes", default=None, help="any of static (paper 3.1), adaptive, adaptive-detect (default all three)")
    r.add_argument("--profile", default=None, help="smoke | quick (default) | standard | paper | path/to/profile.toml")
    r.add_argument("--split", default=None, help="random (paper; default) | inter-patient (mitbih) | patient | strat-fold (ptbxl)")
    r.add_argument("--source", default=None, help="model the static attacks are made against (default ecg-atk-gan, paper 2.3)")
    r.add_argument("--seed", type=int, default=None, help="one seed for splits, weights and attacks (default: the profile's, 0)")
    r.add_argument("--seeds", default=None, help="several seeds, '0,1,2': the plan runs per seed, tables show mean and spread")
    r.add_argument("--eps", default=None, help="budgets for robustness curves, '0.001,0.003,0.01,0.03,0.1' (adaptive modes)")
    r.add_argument("--eps-uv", default=None, help="budgets in microvolts, '5,15,50,150': each beat's own eps on its "
                   "[0, 1] scale (attacks that take one budget for all beats are left out, and named)")
    r.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<profile>)")
    r.add_argument("--data-dir", default=None, help=f"data root holding mitdb/, ptbxl/ ... (default ${DATA_ENV}, else ./data)")
    r.add_argument("--cache-dir", default=None, help="cache for beats, checkpoints, attacked sets (default $ECGBENCH_CACHE, else ~/.cache/ecgbench)")
    r.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    r.add_argument("--pack", default=None, choices=["auto", "on", "off"],
                   help="train the trainings of one model as one packed model (default auto: on CUDA only; speed, not results)")
    r.add_argument("--executor", default=None, choices=["serial", "jobs", "ray"], help="how tasks run (default serial)")
    r.add_argument("--jobs", type=int, default=None, help="worker processes for --executor jobs")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads per task (default: torch's choice; cores/jobs with jobs)")
    r.add_argument("--ray-address", default=None, help="auto | host:port of a running Ray cluster (default: start a local one)")
    r.add_argument("--tasks-per-gpu", type=int, default=None, help="Ray tasks sharing one GPU (each asks for 1/K of it)")
    r.add_argument("--gpus-per-pack", type=float, default=None, help="the share of one GPU a packed training asks Ray for (default 1)")
    r.add_argument("--time-limit", default=None, metavar="DURATION",
                   help="end by itself within this time (90s, 8m, 2h, 1h30m), saving running work; exit 3 if work is left")
    r.add_argument("--checkpoint-every", default=None, metavar="DURATION",
                   help="a running training or attack saves its state at least this often (default 5m; 0: every epoch)")
    r.add_argument("--from-bundle", default=None, metavar="FILE",
                   help="first check and unpack a bundle (`ecgbench bundle`) made by this same run elsewhere, then continue it")
    r.add_argument("--dry-run", action="store_true", help="print the task graph and an estimated wall time; compute nothing")
    r.add_argument("--no-calibrate", action="store_true", help="with --dry-run: counts only, no timing of steps and attacks")
    r.add_argument("--wait", action="store_true", help="if another run holds the results folder, wait for it instead of stopping")
    r.add_argument("--force", action="store_true", help="recompute every cell")
    r.add_argument("--retry-failed", action="store_true", help="recompute failed cells")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")
    r.add_argument("--verbose", "-v", action="store_true", help="also each epoch and task")
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

    b = sub.add_parser("bundle", help="pack a run's cells and the cache entries its unfinished work needs, to continue elsewhere")
    b.add_argument("run_dir", help="a run folder (with run.json)")
    b.add_argument("-o", required=True, metavar="FILE", help="the bundle to write (a .tar.gz)")
    b.add_argument("--cache-dir", default=None, help="the cache the run used (default $ECGBENCH_CACHE, else ~/.cache/ecgbench)")
    b.add_argument("--data-dir", default=None, help=f"data root (default ${DATA_ENV}); the plan needs the data's digests")
    b.add_argument("--leave-out-under", default=None, metavar="DURATION",
                   help="leave out finished trainings that took less than this (they are recomputed where the bundle goes)")
    b.set_defaults(func=cmd_bundle)
    ub = sub.add_parser("unbundle", help="check a bundle and put its cells and cache entries in place")
    ub.add_argument("file")
    ub.add_argument("--out", required=True, help="the run folder to continue (the same command's --out)")
    ub.add_argument("--cache-dir", default=None, help="the cache to fill (default $ECGBENCH_CACHE, else ~/.cache/ecgbench)")
    ub.set_defaults(func=cmd_unbundle)

    pr = sub.add_parser("profiles", help="the run profiles and their fields (the built-in ones, or those named)")
    pr.add_argument("names", nargs="*", help="profile names or paths to .toml files (default: every built-in profile)")
    pr.set_defaults(func=cmd_profiles)

    from ecgbench.cli.commands import add_report_commands  # export, merge and hook plugins' sub-commands
    from ecgbench.cli.evaluate import add_evaluate_commands  # evaluate, zoo

    add_evaluate_commands(sub)
    add_report_commands(sub)
    return p


class Stopped(BaseException):
    """SIGTERM: unwind like Ctrl-C (atomic writes leave every file whole), then exit 143."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Stopped()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except (KeyboardInterrupt, Stopped) as exc:
        what = "stopped (SIGTERM)" if isinstance(exc, Stopped) else "interrupted"
        print(f"ecgbench: {what}; finished cells are kept: rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(exc, Stopped) else 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become a message
        if args.debug:
            raise
        print(f"ecgbench: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
