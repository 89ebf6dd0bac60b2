"""Scores: the paper's accuracy, per-class sensitivity and specificity (Table 1), and perturbation size."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["classification", "perturbation", "success_rate"]


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
