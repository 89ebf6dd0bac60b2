"""Why Shaker trails on the quick profile: its DCGAN-balanced training set against SMOTE (issue 11).

Shaker et al. balance the classes with beats from per-class DCGANs; ecgbench's reconstruction gives
each DCGAN a fixed CPU budget (`Shaker.dcgan_steps`). This script trains the same Shaker CNN through
the harness (`ecgbench.train.fit`, the quick profile's data, epochs and validation rule) three ways,
for several seeds, and scores each on the quick test set: the reconstruction as published
(250 DCGAN steps a class), a six-times larger DCGAN budget, and SMOTE (what the other models get).
It writes `results.json` and `README.md` beside itself.

    ECGBENCH_DATA=... python results/shaker-augmentation/ablation.py [--seeds 0,1,2] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ecgbench.baselines.shaker import Shaker
from ecgbench.config.profiles import get_profile
from ecgbench.config.run import RunConfig
from ecgbench.contracts.registry import registry
from ecgbench.data.beats import smote
from ecgbench.data.catalog import Catalog
from ecgbench.engine.train import fit, predict
from ecgbench.store.io import write_json

HERE = Path(__file__).resolve().parent


class ShakerLongerGan(Shaker):
    dcgan_steps = 1500


class ShakerSmote(Shaker):
    smote_target = 2000  # the quick profile's

    def augment(self, train, seed):  # noqa: ANN001 - the harness's own SMOTE, as every other model gets
        return smote(train, self.smote_target, seed)

VARIANTS = {"dcgan-250 (published reconstruction)": Shaker, "dcgan-1500": ShakerLongerGan, "smote": ShakerSmote}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=os.environ.get("ECGBENCH_CACHE", str(Path.home() / ".cache" / "ecgbench")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    profile = get_profile("quick")
    ShakerSmote.smote_target = profile.smote_target
    cfg = RunConfig(["mitbih"], ["shaker"], [], profile, HERE / "out", Path(os.environ["ECGBENCH_DATA"]), Path(args.cache_dir))
    catalog = Catalog(registry, cfg.data_dir, cfg.cache, cfg.profile, cfg.split)
    rows = []
    start = time.time()
    for seed in seeds:
        ctx, p = catalog.data("mitbih", seed), profile.with_seed(seed)
        s, k = ctx.splits, len(ctx.dataset.classes)
        for name, cls in VARIANTS.items():
            torch.manual_seed(p.seed)
            res = fit(cls, k, ctx.dataset.window, s.train, s.folds, epochs=p.epochs, batch_size=p.batch_size,
                      smote_target=p.smote_target, device=torch.device("cpu"), seed=p.seed, progress=False, patience=p.patience)
            net = cls(k, ctx.dataset.window)
            net.load_state_dict(res.state)
            pred = predict(net, s.test.x, torch.device("cpu")).argmax(1)
            sens = [float((pred[s.test.y == c] == c).mean()) for c in range(k)]
            rows.append({"seed": seed, "variant": name, "val_balanced_accuracy": res.info["val_balanced_accuracy"],
                         "test_balanced_accuracy": float(np.mean(sens)), "sensitivity": dict(zip(ctx.dataset.classes, sens)),
                         "seconds": res.info["seconds"]})
            print(f"seed {seed} {name}: test balanced accuracy {np.mean(sens):.3f} "
                  f"(S {sens[1]:.2f}) in {res.info['seconds']:.0f} s", flush=True)
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, {args.threads} torch thread(s), torch {torch.__version__}"
    command = "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:])
    write_json(HERE / "results.json", {"command": command, "machine": machine, "wall_seconds": time.time() - start, "rows": rows})
    write_readme(rows, command, machine, time.time() - start, ctx.dataset.classes)


def write_readme(rows: list[dict], command: str, machine: str, wall: float, classes) -> None:
    lines = ["# Shaker's class balancing: DCGAN beats vs SMOTE (quick profile, MIT-BIH random split)", "",
             f"Command: `{command}` (with `ECGBENCH_DATA` set)  ", f"Machine: {machine}  ", f"Wall time: {wall / 60:.1f} min", "",
             "Test balanced accuracy (%) on the quick profile's class-balanced test set, per seed, and per-class "
             "sensitivity (%) averaged over seeds. Same CNN, data, epochs and model selection; only the beats that "
             "balance the training set differ.", "",
             "| variant | " + " | ".join(f"seed {s}" for s in sorted({r['seed'] for r in rows})) + " | mean | "
             + " | ".join(f"{c} sens." for c in classes) + " |",
             "|---|" + "---:|" * (len({r['seed'] for r in rows}) + 1 + len(classes))]
    for name in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]
        acc = [100 * r["test_balanced_accuracy"] for r in mine]
        sens = [np.mean([100 * r["sensitivity"][c] for r in mine]) for c in classes]
        lines.append(f"| {name} | " + " | ".join(f"{a:.1f}" for a in acc) + f" | {np.mean(acc):.1f} | "
                     + " | ".join(f"{v:.1f}" for v in sens) + " |")
    (HERE / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
