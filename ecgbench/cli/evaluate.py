"""`ecgbench evaluate` (a model trained elsewhere, on the board's beats and attacks), `ecgbench zoo` (the
benchmark's trained checkpoints: list them, or add a finished run's) and `ecgbench certify` (certified accuracy
of a finished run's models by randomized smoothing)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ecgbench.config.run import DATA_ENV, data_dir

__all__ = ["add_evaluate_commands"]


def _expects(args: argparse.Namespace) -> dict:
    out: dict = {}
    if args.window is not None:
        out["window"] = args.window
    if args.rate is not None:
        out["rate"] = args.rate
    if args.value_range is not None:
        try:
            lo, hi = (float(v) for v in args.value_range.split(","))
        except ValueError:
            raise ValueError(f"--value-range {args.value_range!r}: give LOW,HIGH, e.g. 0,1") from None
        out["value_range"] = (lo, hi)
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ecgbench import log
    from ecgbench.api import evaluate
    from ecgbench.report.tables import row_name

    log.configure(quiet=args.quiet, verbose=args.verbose, progress=not args.no_progress)
    model, checkpoint = args.model, args.checkpoint
    if args.zoo:
        from ecgbench.store import zoo

        entry = next((e for e in zoo.entries(args.zoo_dir) if e["name"] == args.zoo), None)
        if entry is None:
            raise ValueError(f"--zoo {args.zoo!r}: no such model in {zoo.zoo_dir(args.zoo_dir)}; `ecgbench zoo` lists them")
        from ecgbench.contracts.registry import registry

        cls = registry.get("models", entry["model"])
        model, checkpoint = f"{cls.__module__}:{cls.__qualname__}", str(zoo.zoo_dir(args.zoo_dir) / entry["file"])
        args.name = args.name or f"{entry['model']}-zoo"
    if not model or not checkpoint:
        raise ValueError("evaluate: give --model and --checkpoint, or --zoo NAME")
    result = evaluate(model, checkpoint, name=args.name, dataset=args.dataset, split=args.split, attacks=args.attacks,
                      profile=args.profile, seed=args.seed, eps=args.eps, out=args.out, transform=args.transform,
                      expects=_expects(args), data_dir=args.data_dir, cache_dir=args.cache_dir, device=args.device,
                      threads=args.threads, progress=not args.no_progress,
                      command="ecgbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    row = result.row
    if row:
        worst = row.get("worst white-box eps=0.01")
        print(f"{row_name(row)}: clean {row['clean'] * 100:.1f}%, white-box worst (eps 0.01) "
              f"{'—' if worst is None or worst != worst else f'{worst * 100:.1f}%'}, flags: {row.get('flags')}")
    print(f"cells and tables written to {result.out}/; put the row on a board with "
          f"`ecgbench merge BOARD_RUN {result.out} --out MERGED`")
    if result.failures:
        print(f"{len(result.failures)} cell(s) failed; first: {result.failures[0]}", file=sys.stderr)
        return 1
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from ecgbench.store import zoo

    if args.zoo_command == "add":
        from ecgbench import log
        from ecgbench.report.zoo import add_run
        from ecgbench.store.layout import cache_dir

        log.configure(quiet=True)
        added = add_run(Path(args.run_dir), cache_dir(args.cache_dir), data_dir(args.data_dir), args.zoo_dir)
        for e in added:
            print(f"{e['name']}: {e['bytes'] / 1e6:.2f} MB, sha256 {e['sha256'][:16]}, clean {e['accuracy']['clean'] * 100:.1f}%")
        print(f"{len(added)} model(s) added to {zoo.zoo_dir(args.zoo_dir)}")
        return 0
    print(zoo.describe(args.zoo_dir))
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    from ecgbench import log
    from ecgbench.report.certify import certified_table, write_certified
    from ecgbench.store.layout import cache_dir

    log.configure(quiet=True)
    try:
        radii = [float(r) for r in args.radii.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"--radii {args.radii!r}: give positive numbers, e.g. 0.005,0.01") from None
    if not radii or min(radii) <= 0:
        raise ValueError(f"--radii {args.radii!r}: give positive numbers, e.g. 0.005,0.01")
    if args.sigma <= 0 or args.samples < 1 or args.beats < 1:
        raise ValueError("--sigma, --samples and --beats must be positive")
    settings = {"sigma": args.sigma, "n0": 100, "n": args.samples, "alpha": 0.001, "beats": args.beats, "radii": radii}
    table = certified_table(Path(args.run_dir), cache_dir(args.cache_dir), data_dir(args.data_dir), sigma=args.sigma,
                            radii=radii, beats=args.beats, n=args.samples)
    for path in write_certified(Path(args.run_dir), table, settings):
        print(path)
    return 0


def add_evaluate_commands(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="evaluate a model trained elsewhere (class + checkpoint) without retraining it")
    e.add_argument("--model", default=None, help="its class: path/to/file.py:Class or package.module:Class")
    e.add_argument("--checkpoint", default=None, help="its state_dict file (loaded with weights_only=True)")
    e.add_argument("--zoo", default=None, metavar="NAME", help="instead of --model/--checkpoint: a model of the zoo")
    e.add_argument("--zoo-dir", default=None, help="the zoo folder (default $ECGBENCH_ZOO, else the package's)")
    e.add_argument("--name", default=None, help="its row's name (default: the class name, lower-case)")
    e.add_argument("--dataset", default="mitbih", help="dataset (default mitbih)")
    e.add_argument("--split", default="random", help="random (default) | inter-patient | patient | strat-fold")
    e.add_argument("--attacks", default="all", help="attack specs, as for run (default all: the board's suite)")
    e.add_argument("--profile", default="quick", help="budgets and test subsets: smoke | quick (default) | standard | paper")
    e.add_argument("--seed", type=int, default=None, help="the split's and attacks' seed (default: the profile's)")
    e.add_argument("--eps", default=None, help="budgets for robustness curves, as for run")
    e.add_argument("--transform", default="none", help="adapt the beats to the model: none (default) | zscore")
    e.add_argument("--window", type=int, default=None, help="the beat length the model expects (checked)")
    e.add_argument("--rate", type=int, default=None, help="the sampling rate (Hz) it was trained on (checked)")
    e.add_argument("--value-range", default=None, metavar="LOW,HIGH", help="the value range of its inputs (checked; --value-range=-1,1 for a negative LOW)")
    e.add_argument("--out", default=None, help="results folder (default runs/evaluate-<name>-<dataset>-<profile>)")
    e.add_argument("--data-dir", default=None, help=f"data root (default ${DATA_ENV}, else ./data)")
    e.add_argument("--cache-dir", default=None, help="cache (default $ECGBENCH_CACHE, else ~/.cache/ecgbench)")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (default one, as for run)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors")
    e.add_argument("--verbose", "-v", action="store_true", help="also each task")
    e.set_defaults(func=cmd_evaluate)

    z = sub.add_parser("zoo", help="the benchmark's trained models: list them (default), or add a finished run's")
    z.add_argument("--zoo-dir", default=None, help="the zoo folder (default $ECGBENCH_ZOO, else the package's)")
    zsub = z.add_subparsers(dest="zoo_command")
    za = zsub.add_parser("add", help="add the rows trained on clean beats of a finished run (checkpoints from its cache)")
    za.add_argument("run_dir")
    za.add_argument("--cache-dir", default=None, help="the cache the run used")
    za.add_argument("--data-dir", default=None, help=f"data root (default ${DATA_ENV}): flags are checked on its test beats")
    z.set_defaults(func=cmd_zoo)

    c = sub.add_parser("certify", help="certified accuracy of a finished run's models by randomized smoothing (Cohen 2019)")
    c.add_argument("run_dir")
    c.add_argument("--sigma", type=float, default=0.01, help="noise standard deviation on the [0, 1] beat scale (default 0.01)")
    c.add_argument("--samples", type=int, default=1000, help="noisy copies per beat for the bound (default 1000; fewer on a CPU)")
    c.add_argument("--beats", type=int, default=200, help="test beats per model, a fixed stratified subset (default 200)")
    c.add_argument("--radii", default="0.005,0.01,0.02,0.05", help="L2 radii to report (default 0.005,0.01,0.02,0.05)")
    c.add_argument("--cache-dir", default=None, help="the cache the run used (its checkpoints)")
    c.add_argument("--data-dir", default=None, help=f"data root (default ${DATA_ENV})")
    c.set_defaults(func=cmd_certify)
