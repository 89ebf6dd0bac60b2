"""Figures from cell files: accuracy bars (one panel per mode), a per-class robust accuracy heatmap, clean vs
attacked beat overlays (paper Fig. 3, one beat per class) and robustness curves over eps."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ecgbench.report.results import COMMON_EPS, classes_of, results
from ecgbench.store.io import atomic_write

__all__ = ["write_figures", "save", "robust_bars", "class_heatmap", "overlays", "curves_figure"]

MODE_TITLES = {"static": "static (paper protocol)", "adaptive": "adaptive (white-box)", "adaptive-detect": "adaptive, with detector"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """Save a figure as PNG atomically (no timestamp in the file, so a rebuilt report is byte-identical) and close it."""
    plt = _plt()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None}))
    plt.close(fig)
    return path


def robust_bars(cells: list[dict], dataset: str):
    """One panel per mode: per attack (and the worst case at eps 0.01), one bar per model; clean as a dashed tick."""
    from ecgbench.report.tables import MODES, leaderboard, row_name

    plt = _plt()
    board = leaderboard(cells)
    if board.empty:  # every cell failed: nothing to draw
        return None
    board = board[board["dataset"] == dataset]
    rs = [r for r in results(cells) if r.dataset == dataset]
    attacks = list(dict.fromkeys(r.attack for r in rs if r.attack))
    worst = {"adaptive": f"worst white-box eps={COMMON_EPS:g}", "adaptive-detect": f"worst with detector eps={COMMON_EPS:g}"}
    panels = [(m, [a for a in attacks if f"{a} {m}" in board and board[f"{a} {m}"].notna().any()]) for m in MODES if m in worst]
    panels = [(m, a) for m, a in panels if a]
    if board.empty or not panels:
        return None
    models = list(board["model"])
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.5, 0.9 * (len(attacks) + 1) * max(1, len(models)) / 3), 2.6 * len(panels)),
                             squeeze=False, sharey=True)
    width = 0.8 / len(models)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (mode, names) in zip(axes[:, 0], panels):
        groups = [f"{a} {mode}" for a in names] + [worst[mode]]
        eps = {a: _eps(rs, a) for a in names}
        labels = [a if eps[a] is None or abs(eps[a] - COMMON_EPS) < 1e-12 else f"{a}\n(eps {eps[a]:g})" for a in names]
        labels += [f"worst case\n(eps {COMMON_EPS:g})"]
        x = np.arange(len(groups))
        for i, (_, row) in enumerate(board.iterrows()):
            vals = [row.get(g, np.nan) * 100 if g in row and not np.isnan(row.get(g, np.nan)) else np.nan for g in groups]
            if np.isnan(vals).all():
                continue  # e.g. a model without a detector in the detector panel
            label = row_name(row) if row["converged"] else f"{row_name(row)} (not converged)"
            ax.bar(x + i * width, vals, width, label=label, color=colors[i % len(colors)])
            ax.hlines(row["clean"] * 100, x[0] - width / 2, x[-1] + 0.8, colors=colors[i % len(colors)], linestyles="dashed", lw=0.8)
        ax.set_xticks(x + 0.4 - width / 2, labels, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        ax.set_title(MODE_TITLES.get(mode, mode), fontsize=9, loc="left")
    axes[0, 0].legend(fontsize=7, ncol=len(models), loc="lower left", bbox_to_anchor=(0, 1.12), frameon=False)
    fig.suptitle(f"{dataset}: accuracy under each attack (bars) and clean (dashed), by mode", fontsize=10, y=1.0)
    fig.tight_layout()
    return fig


def _eps(rs, attack: str) -> float | None:
    """The budget the per-attack column of the leaderboard shows for this attack."""
    from ecgbench.report.tables import pick

    picked = [p for m in ("adaptive", "static", "adaptive-detect") if (p := pick(rs, attack, m)) is not None]
    return picked[0].eps if picked else None


def class_heatmap(cells: list[dict], dataset: str):
    """Model x class robust accuracy under the adaptive worst case at eps 0.01 (see `report.per_class_worst`)."""
    from ecgbench.report.layouts import per_class_worst

    plt = _plt()
    df, note = per_class_worst(cells, dataset)
    if df.empty:
        return None
    classes = [c for c in classes_of(cells, dataset) if c in df.columns]
    values = df[classes].to_numpy(dtype=float) * 100
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(classes), 0.8 + 0.45 * len(df)))
    im = ax.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(df)), df["model"])
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white" if v < 60 else "black")
    fig.colorbar(im, ax=ax, label="robust accuracy (%)")
    exact = note.startswith("Exact")
    ax.set_title(f"{dataset}: per-class robust accuracy, adaptive worst case{'' if exact else ' (strongest single attack)'}", fontsize=9)
    return fig


def overlays(cells: list[dict], dataset: str, model: str, mode: str = "static"):
    """Rows are attacks, columns classes: each class's example beat, clean (red) and attacked (blue), as in Fig. 3."""
    plt = _plt()
    chosen = [c for c in cells if c["cell"]["dataset"] == dataset and c["cell"]["model"] == model and c["cell"]["mode"] == mode
              and c.get("status") == "ok" and "examples" in c and c["cell"].get("seed", 0) in (0, None)]
    chosen = list({c["cell"]["attack"]: c for c in chosen if c["cell"].get("eps") is None or abs(c["cell"]["eps"] - COMMON_EPS) < 1e-12}.values())
    if not chosen:
        return None
    classes = classes_of(cells, dataset)
    n_cols = max(len(c["examples"]["y"]) for c in chosen)
    fig, axes = plt.subplots(len(chosen), n_cols, figsize=(2.2 * n_cols, 1.2 * len(chosen) + 0.6), sharex=True, squeeze=False)
    for row, c in zip(axes, chosen):
        ex = c["examples"]
        for ax, clean, evaluated, y in zip(row, ex["clean"], ex["evaluated"], ex["y"]):
            ax.plot(clean, color="red", lw=1, label="clean")
            ax.plot(evaluated, color="blue", lw=0.7, alpha=0.8, label="attacked")
            ax.set_yticks([])
            if ax is row[0]:
                ax.set_ylabel(c["cell"]["attack"], rotation=0, ha="right", fontsize=8)
        for ax in row[len(ex["y"]):]:
            ax.axis("off")
    for ax, y in zip(axes[0], chosen[0]["examples"]["y"]):
        ax.set_title(f"class {classes[y] if y < len(classes) else y}", fontsize=9)
    axes[0, -1].legend(loc="upper right", fontsize=7)
    fig.suptitle(f"{dataset}: clean vs {mode} adversarial beats, one per class ({'made against the source model' if mode == 'static' else model})", fontsize=9)
    fig.tight_layout()
    return fig


def curves_figure(curve, dataset: str, x: str = "eps"):
    """Robust accuracy vs eps (log axis), one line per model; left white-box, right black-box worst case.
    `x`: "eps" (the [0, 1] beat scale) or "uV" (budgets in microvolts, `--eps-uv`)."""
    plt = _plt()
    cols = [c for c in ("white-box worst", "black-box worst") if c in curve]  # a run without black-box attacks: one
    fig, axes = plt.subplots(1, len(cols), figsize=(4.5 * len(cols), 3.4), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, col in zip(axes, cols):
        for model, part in curve.groupby("model", sort=False):
            ax.plot(part[x], part[col] * 100, marker="o", ms=3, label=model)
        ax.set_xscale("log")
        grid = sorted(curve[x].unique())
        ax.set_xticks(grid, [f"{e:g}" for e in grid])
        ax.minorticks_off()
        ax.set_xlabel("eps (L-inf, [0, 1] beat scale)" if x == "eps" else "budget (L-inf, microvolts on every beat)")
        ax.set_title(col.replace("worst", "worst case"), fontsize=9)
        ax.set_ylim(0, 100)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("robust accuracy (%)")
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"{dataset}: robust accuracy vs {'eps' if x == 'eps' else 'microvolts'} (adaptive attacks)", fontsize=10)
    fig.tight_layout()
    return fig


def write_figures(out: Path, cells: list[dict]) -> list[Path]:
    """Every figure of a run folder, per dataset; returns the PNGs written."""
    from ecgbench.report.curves import curve_tables
    from ecgbench.report.units import uv_tables

    written = []
    curves, uv = curve_tables(cells), uv_tables(cells)
    for d in dict.fromkeys(c["cell"]["dataset"] for c in cells):
        for name, fig in ((f"robust-accuracy-{d}", robust_bars(cells, d)), (f"perclass-{d}", class_heatmap(cells, d))):
            if fig is not None:
                written.append(save(fig, out / f"{name}.png"))
        models = list(dict.fromkeys(c["cell"]["model"] for c in cells if c["cell"]["dataset"] == d))
        # Static attacked sets are shared by all models: one model's overlays show them all; else the first model's adaptive ones.
        fig = next((f for f in (overlays(cells, d, models[0], mode) for mode in ("static", "adaptive")) if f is not None), None) if models else None
        if fig is not None:
            written.append(save(fig, out / f"overlays-{d}.png"))
        if d in curves:
            written.append(save(curves_figure(curves[d][0], d), out / f"robust-curves-{d}.png"))
        if d in uv and uv[d]["uV"].nunique() >= 2:
            written.append(save(curves_figure(uv[d], d, "uV"), out / f"robust-curves-uv-{d}.png"))
    return written
