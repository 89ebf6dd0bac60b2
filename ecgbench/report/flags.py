"""A row's sanity flags (`ecgbench.engine.sanity`): the model-level ones its clean cells recorded, and
`black-box-stronger`, read off its attacked cells: a black-box attack whose robust accuracy is lower than
the white-box worst case on the same beats, by more than AutoAttack's margin (0.2 points, `check_square_sr`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ecgbench.engine.sanity import MEANINGS
from ecgbench.report.results import BLACK_BOX, COMMON_EPS, Result, worst_case

__all__ = ["row_flags", "explain", "MARGIN"]

MARGIN = 0.002  # AutoAttack's alpha in check_square_sr


def row_flags(part: Sequence[Result]) -> list[str] | None:
    """The flags of one row's cells of one seed, None where its clean cell predates the checks."""
    clean = next((r for r in part if r.mode == "clean"), None)
    sanity = clean.record.get("sanity") if clean is not None else None
    flags = list(sanity["flags"]) if sanity else []
    if _black_box_stronger([r for r in part if r.mode == "adaptive"]):
        flags.append("black-box-stronger")
    return flags if sanity or flags else None


def _black_box_stronger(rs: Sequence[Result]) -> bool:
    white = worst_case([r for r in rs if r.kind not in BLACK_BOX], COMMON_EPS)
    if white is None:
        return False
    for r in rs:
        if r.kind not in BLACK_BOX:
            continue
        black = worst_case([r], COMMON_EPS)
        if black is None:
            continue
        common, wi, bi = np.intersect1d(white.beats, black.beats, return_indices=True)
        if len(common) and black.correct[bi].mean() < white.correct[wi].mean() - MARGIN:
            return True
    return False


def explain(flags: Sequence[str]) -> str:
    """What the flags mean, for the notes under a table."""
    return "; ".join(f"flag {f}: {MEANINGS[f]}" for f in flags)
