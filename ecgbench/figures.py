"""Figures from cell files: clean vs attacked beat overlays (paper Fig. 3) and robust accuracy bars."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgbench.store import atomic_write

__all__ = ["write_figures"]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def overlays(cells: list[dict], dataset: str, model: str, mode: str = "static"):
    """One panel per attack: the first beat of each class, clean (red) and attacked (blue), as in Fig. 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [c for c in cells if c["cell"]["dataset"] == dataset and c["cell"]["model"] == model
              and c["cell"]["mode"] == mode and c.get("status") == "ok"]
    if not chosen:
        return None
    fig, axes = plt.subplots(len(chosen), 1, figsize=(7, 1.6 * len(chosen)), sharex=True, squeeze=False)
    for ax, c in zip(axes[:, 0], chosen):
        ex = c["examples"]
        beat = int(np.argmax([np.abs(np.subtract(a, b)).max() for a, b in zip(ex["clean"], ex["evaluated"])]))
        ax.plot(ex["clean"][beat], color="red", lw=1, label="clean")
        ax.plot(ex["evaluated"][beat], color="blue", lw=0.8, alpha=0.8, label="attacked")
        ax.set_ylabel(c["cell"]["attack"], rotation=0, ha="right", fontsize=8)
        ax.set_yticks([])
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("sample (360 Hz)")
    fig.suptitle(f"{dataset}: clean vs {mode} adversarial beats (attacks made against the source model)", fontsize=9)
    return fig


def robust_bars(cells: list[dict], dataset: str):
    """Grouped bars: accuracy per model under each attack, static and adaptive."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [c for c in cells if c.get("status") == "ok" and c["cell"]["dataset"] == dataset]
    models = list(dict.fromkeys(c["cell"]["model"] for c in ok))
    groups = ["clean"] + [f"{a} {m}" for a in dict.fromkeys(c["cell"]["attack"] for c in ok if c["cell"]["attack"]) for m in ("static", "adaptive")]
    acc = {(c["cell"]["model"], "clean" if c["cell"]["mode"] == "clean" else f"{c['cell']['attack']} {c['cell']['mode']}"): c["metrics"]["accuracy"] for c in ok}
    groups = [g for g in groups if any((m, g) in acc for m in models)]
    if not models or not groups:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(groups) * len(models) / 2), 3.5))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        ax.bar(np.arange(len(groups)) + i * width, [acc.get((m, g), np.nan) * 100 for g in groups], width, label=m)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=len(models))
    ax.set_title(f"{dataset}: accuracy per model and attack", fontsize=9)
    return fig


def write_figures(out: Path, cells: list[dict]) -> list[Path]:
    written = []
    for d in dict.fromkeys(c["cell"]["dataset"] for c in cells):
        fig = robust_bars(cells, d)
        if fig is not None:
            written.append(_save(fig, out / f"robust-accuracy-{d}.png"))
        models = list(dict.fromkeys(c["cell"]["model"] for c in cells if c["cell"]["dataset"] == d))
        for model in models[:1]:  # static attacked sets are shared by all models: one model's overlays show them all
            fig = overlays(cells, d, model)
            if fig is not None:
                written.append(_save(fig, out / f"overlays-{d}.png"))
    return written
