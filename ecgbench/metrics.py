"""Scores: the paper's accuracy, per-class sensitivity and specificity (Table 1), and perturbation size."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["similarity", "classification", "perturbation", "success_rate", "bootstrap_interval", "seed_summary", "auc_log_eps"]

BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0


def classification(y: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, and one-vs-rest sensitivity TP/(TP+FN) and specificity TN/(TN+FP) per class (paper 3.3)."""
    out: dict = {"accuracy": float((y == pred).mean()) if len(y) else float("nan"), "n": int(len(y))}
    for c, name in enumerate(classes):
        pos, hit = y == c, pred == c
        out[f"sensitivity_{name}"] = float(hit[pos].mean()) if pos.any() else float("nan")
        out[f"specificity_{name}"] = float((~hit[~pos]).mean()) if (~pos).any() else float("nan")
    return out


def success_rate(y: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray) -> float:
    """Share of beats classified correctly when clean that the attack pushed to a wrong class."""
    right = clean_pred == y
    return float((adv_pred[right] != y[right]).mean()) if right.any() else float("nan")


def perturbation(x: np.ndarray, x_adv: np.ndarray) -> dict:
    """L-inf and L2 size of the perturbation, and its SNR in dB (signal power over perturbation power)."""
    d = (x_adv - x).reshape(len(x), -1).astype(np.float64)
    linf, l2 = np.abs(d).max(1), np.sqrt((d**2).sum(1))
    power = (x.reshape(len(x), -1).astype(np.float64) ** 2).sum(1)
    moved = l2 > 0
    snr = 10 * np.log10(power[moved] / l2[moved] ** 2) if moved.any() else np.array([np.inf])
    return {
        "linf_mean": float(linf.mean()), "linf_max": float(linf.max()), "linf_median": float(np.median(linf)),
        "l2_mean": float(l2.mean()), "snr_db": float(np.mean(snr)),
    }


def bootstrap_interval(parts: Sequence[np.ndarray], level: float = 0.95, draws: int = BOOTSTRAP_DRAWS,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval over test beats for a mean of per-seed accuracies.

    `parts` holds one 0/1 vector per seed. Resampling n beats with replacement from a 0/1 vector with
    k ones gives a Binomial(n, k/n) count, so each seed's resampled accuracy is drawn as such (exactly
    the nonparametric bootstrap of a mean, without materialising n x draws indices); seeds are
    resampled independently and averaged. Seeded, so a report is reproducible byte for byte.
    """
    parts = [np.asarray(p, dtype=bool) for p in parts if len(p)]
    if not parts:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.mean([rng.binomial(len(p), p.mean(), draws) / len(p) for p in parts], axis=0)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def seed_summary(parts: Sequence[np.ndarray]) -> dict:
    """Mean accuracy over seeds, its sample standard deviation (NaN for one seed) and the bootstrap interval."""
    accs = [float(np.mean(p)) for p in parts if len(p)]
    if not accs:
        return {"mean": float("nan"), "sd": float("nan"), "lo": float("nan"), "hi": float("nan"), "seeds": 0, "n": 0}
    lo, hi = bootstrap_interval(parts)
    return {"mean": float(np.mean(accs)), "sd": float(np.std(accs, ddof=1)) if len(accs) > 1 else float("nan"),
            "lo": lo, "hi": hi, "seeds": len(accs), "n": int(min(len(p) for p in parts))}


def auc_log_eps(eps: Sequence[float], acc: Sequence[float]) -> float:
    """Area under robust accuracy vs log10(eps), trapezoid rule, divided by the log-eps range: in [0, 1].

    1.0 means fully robust at every budget of the grid; NaN if fewer than two budgets or a missing point.
    """
    e, a = np.asarray(eps, dtype=float), np.asarray(acc, dtype=float)
    if len(e) < 2 or np.isnan(a).any():
        return float("nan")
    order = np.argsort(e)
    x = np.log10(e[order])
    y = a[order]
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def similarity(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> dict[str, float]:
    """MSE, SSIM, Pearson correlation and NRMSE of beats `b` against reference beats `a` (paper 3.4, Table 3).

    Each metric is computed per beat ([window] or [n, window] arrays) and averaged. SSIM is scikit-
    image's on 1D signals with Wang et al. 2004's Gaussian window (sigma 1.5, population covariance);
    NRMSE is scikit-image's ||a - b|| / ||a||. Fractions, not the table's percentages; the correlation
    of a constant beat is undefined (NaN).
    """
    from skimage.metrics import normalized_root_mse, structural_similarity

    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.shape != b.shape:
        raise ValueError(f"similarity needs beats of one shape, got {a.shape} and {b.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = [(
            float(np.mean((p - q) ** 2)),
            structural_similarity(p, q, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False),
            float(np.corrcoef(p, q)[0, 1]),
            normalized_root_mse(p, q),
        ) for p, q in zip(a, b)]
    mse, ssim, corr, nrmse = np.mean(rows, axis=0)
    return {"mse": float(mse), "ssim": float(ssim), "correlation": float(corr), "nrmse": float(nrmse)}
