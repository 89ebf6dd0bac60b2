"""The table of README.md, printed from the four clean cells of this folder."""
import json
import pathlib

HERE = pathlib.Path(__file__).parent
print("| trained on | weights | epochs (best) | val balanced acc | clean on DS2 | sensitivity N / S / V / F |")
print("|---|---|---:|---:|---:|---|")
for d in ["earlier-host", "this-host-long-run", "this-host", "avx2"]:
    c = json.loads((HERE / d / "cells/mitbih/acharya/none.clean.json").read_text())
    t, m = c["train"], c["metrics"]
    sens = " / ".join(f"{100 * m['sensitivity_' + k]:.1f}" for k in "NSVF")
    print(f"| {d} | {c['weights']} | {t['epochs_run']} ({t['best_epoch']}) | {t['val_balanced_accuracy']:.3f} | {100 * m['accuracy']:.1f} | {sens} |")
