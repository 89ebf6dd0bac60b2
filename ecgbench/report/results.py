"""Cell files as reporting sees them: one normalised `Result` per finished cell, and worst cases over them.

Reporting never runs a model; everything here is a function of `results/*/cells/**.json`. Older cells
lack fields added later and are read with the defaults below:

- `cell.seed` missing: the profile's seed (0); `cell.eps` missing or null: the attack's own eps
  (`record["attack"]["eps"]`).
- `attack_kind` missing: from the attack's name (boundary, hsj: decision; square: score; else gradient).
- `eval_index` missing: the cell was scored on every test beat.
- `cell.training` missing (before rows were one model): `static` for static cells and for attacked cells of
  a model trained with a static set (`trained_on`, or, older still, a checkpoint other than the clean
  cell's: see `results`), else `clean`. Such `static`-trained attacked cells belong to no row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ecgbench.store.io import read_json

__all__ = ["Result", "WorstCase", "COMMON_EPS", "KIND_BY_NAME", "BLACK_BOX", "load_cells", "results", "clean_result",
           "worst_case", "robust_at", "classes_of", "not_converged", "CONVERGED_FRACTION", "static_source"]

COMMON_EPS = 0.01  # paper 2.3: every attack but CW runs at 0.01 on the [0, 1] beat scale
EPS_TOL = 1e-9
KIND_BY_NAME = {"boundary": "decision", "hsj": "decision", "square": "score"}
BLACK_BOX = ("decision", "score")  # attacks that need neither weights nor gradients
# "Not converged": validation balanced accuracy closes less than this share of the gap from chance (1/K) to 1.
CONVERGED_FRACTION = 1 / 3


def load_cells(out: Path) -> list[dict]:
    """Every cell record of a run folder, sorted by path; a clear error if there are none."""
    files = sorted((Path(out) / "cells").rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"{out}: no cell files under {Path(out) / 'cells'}; run `ecgbench run --out {out}` first")
    return [read_json(f) for f in files]


@dataclass
class Result:
    """One finished cell: which beats it scored and which of them were robust."""

    dataset: str
    model: str
    attack: str | None
    mode: str
    seed: int
    eps: float | None  # the budget the cell was judged at; None for clean cells
    kind: str | None  # gradient | decision | score; None for clean cells
    correct: np.ndarray  # bool per scored beat
    index: np.ndarray | None  # test-beat indices scored, None = all of them in order
    linf_found: np.ndarray | None = None  # per scored beat, L-inf of the adversarial found (NaN: none found)
    record: dict = field(default_factory=dict, repr=False)
    training: str = "clean"  # clean | defence | static: how the scored model was trained (plan.cells)
    eps_uv: float | None = None  # a budget in microvolts: each beat its own eps (then `eps` is None)

    @property
    def in_row(self) -> bool:
        """Whether the cell is one of a row's (a model trained on clean beats, or the paper's defence)."""
        return self.training in ("clean", "defence")

    @property
    def row(self) -> str:
        """The row's name: the model, or the model with the paper's defence."""
        return self.model if self.training != "defence" else f"{self.model} + paper defence"

    @property
    def name(self) -> str:
        """Attack name without back-end or variant: `pgd@foolbox:x` -> `pgd`."""
        return (self.attack or "").partition(":")[0].partition("@")[0]

    @property
    def beats(self) -> np.ndarray:
        return np.arange(len(self.correct)) if self.index is None else self.index

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")


def _bits(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), dtype=np.uint8) == ord("1")


def from_record(rec: dict) -> Result:
    """Normalise one ok cell record (old or new format)."""
    cell = rec["cell"]
    attack = rec.get("attack") or {}
    name = (cell.get("attack") or "").partition(":")[0].partition("@")[0]
    eps, uv = cell.get("eps"), cell.get("eps_uv")
    if eps is None and cell.get("attack") and uv is None:
        eps = attack.get("eps")
    kind = rec.get("attack_kind") or (KIND_BY_NAME.get(name, "gradient") if cell.get("attack") else None)
    index = rec.get("eval_index")
    found = rec.get("linf_found") if uv is None else None  # a budget per beat: judged per beat already
    training = cell.get("training") or ("static" if cell["mode"] == "static" or rec.get("trained_on", "clean") != "clean"
                                        else "clean")
    return Result(dataset=cell["dataset"], model=cell["model"], attack=cell.get("attack"), mode=cell["mode"],
                  seed=int(cell.get("seed") if cell.get("seed") is not None else 0),
                  eps=None if eps is None else float(eps), kind=kind, correct=_bits(rec["correct"]),
                  index=None if index is None else np.asarray(index, dtype=np.int64),
                  linf_found=None if found is None else np.array([np.nan if v is None else v for v in found], dtype=float),
                  record=rec, training=training, eps_uv=None if uv is None else float(uv))


def results(cells: Iterable[dict], microvolts: bool = False) -> list[Result]:
    """Every finished cell that holds per-beat outcomes, normalised: those with budgets on the beat scale, or
    (`microvolts`) the clean cells and those with budgets in microvolts (`--eps-uv`), which have tables of their own.

    An attacked cell older than `cell.training` and `trained_on` belongs to its model's row only if it
    scored the checkpoint the model's clean cell scored: a static run of that time attacked, in each
    adaptive cell, the model trained with that attack's static set."""
    rs = [from_record(c) for c in cells if c.get("status") == "ok" and "correct" in c]
    rs = [r for r in rs if ((r.attack is None or r.eps_uv is not None) if microvolts else r.eps_uv is None)]
    legacy = [r for r in rs if "training" not in r.record["cell"] and "trained_on" not in r.record]
    clean = {(r.dataset, r.model, r.seed): r.record.get("checkpoint") for r in legacy if r.mode == "clean"}
    for r in legacy:
        mine = clean.get((r.dataset, r.model, r.seed))
        if r.mode != "clean" and mine and r.record.get("checkpoint") not in (None, mine):
            r.training = "static"
    return rs


def robust_at(r: Result, eps: float) -> np.ndarray | None:
    """Which beats survive this cell's attack at budget `eps`; None if the cell cannot say.

    A bounded attack run at budget e0 answers for every eps >= e0 (an attack within a smaller ball is
    admissible in a larger one) and for nothing below e0. A decision-based attack that records the
    L-inf distance of the adversarial it found for each beat (`linf_found`, a minimisation attack)
    answers for every eps from its one run, in the `adaptive` mode: a beat falls at eps if an
    adversarial was found within eps; a beat with none found keeps its recorded outcome.
    """
    if r.linf_found is not None and r.mode == "adaptive" and len(r.linf_found) == len(r.correct):
        found = ~np.isnan(r.linf_found)
        return np.where(found, r.linf_found > eps + EPS_TOL, r.correct)
    if r.eps is None or r.eps <= eps + EPS_TOL:
        return r.correct
    return None


@dataclass
class WorstCase:
    """Robust accuracy under every attack of a set (AutoAttack's rule), on the beats all of them scored."""

    correct: np.ndarray  # bool per beat of `beats`
    beats: np.ndarray
    attacks: list[str]
    intersected: bool  # True when the attacks scored different beat sets and only the common ones count

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")


def worst_case(rs: Sequence[Result], eps: float = float("inf"), kinds: Sequence[str] | None = None) -> WorstCase | None:
    """A beat counts as robust only if it survives every attack in `rs` admissible at `eps` (of `kinds`).

    Cells scored on different beat sets (a costly attack on a stratified subset) are combined on
    the intersection of their beats, and the result says so. None if no cell qualifies.
    """
    parts = []
    for r in rs:
        if r.attack is None or (kinds is not None and r.kind not in kinds):
            continue
        bits = robust_at(r, eps)
        if bits is not None:
            parts.append((r, bits))
    if not parts:
        return None
    beat_sets = [r.beats for r, _ in parts]
    common = beat_sets[0]
    for b in beat_sets[1:]:
        common = np.intersect1d(common, b)
    intersected = any(len(b) != len(common) for b in beat_sets)
    robust = np.ones(len(common), dtype=bool)
    for (r, bits), b in zip(parts, beat_sets):
        pos = {int(v): i for i, v in enumerate(b)} if r.index is not None else None
        take = common if pos is None else np.array([pos[int(v)] for v in common], dtype=np.int64)
        robust &= bits[take]
    return WorstCase(robust, np.asarray(common), sorted({r.attack for r, _ in parts}), intersected)


def clean_result(rs: Sequence[Result]) -> Result | None:
    return next((r for r in rs if r.mode == "clean"), None)


def classes_of(cells: Sequence[dict], dataset: str) -> list[str]:
    """Class names in the dataset's own order (stored in each cell since `classes`; JSON keys alone are sorted)."""
    names: list[str] = []
    for c in cells:
        if c.get("status") != "ok" or c["cell"]["dataset"] != dataset:
            continue
        if "classes" in c:
            return list(c["classes"])
        names = names or [k[len("sensitivity_"):] for k in c.get("metrics", {}) if k.startswith("sensitivity_")]
    paper_order = ["N", "S", "V", "F", "Normal", "NORM", "MI"]
    return sorted(names, key=lambda n: paper_order.index(n) if n in paper_order else len(paper_order))


def validation_score(clean: Result) -> float:
    """The model's validation balanced accuracy; for cells that lack it, the clean test cell's balanced accuracy."""
    val = clean.record.get("train", {}).get("val_balanced_accuracy")
    if val is not None:
        return float(val)
    sens = [v for k, v in clean.record.get("metrics", {}).items() if k.startswith("sensitivity_")]
    return float(np.nanmean(sens)) if sens else float("nan")


def not_converged(scores: Sequence[float], n_classes: int) -> bool:
    """Flag a model whose mean validation balanced accuracy over seeds stays near chance.

    Our rule (the paper has none): the score closes less than a third of the gap from chance (1/K for
    K classes) to 1, i.e. below 0.5 for MIT-BIH's 4 classes and 0.667 for NORM vs MI. Issue 11 calls a
    quick Acharya at 42.9 % clean accuracy (validation 0.485) "near chance"; this rule agrees.
    """
    if not scores or n_classes < 2:
        return False
    chance = 1.0 / n_classes
    return float(np.nanmean(scores)) < chance + CONVERGED_FRACTION * (1 - chance)


def static_source(run: dict) -> bool:
    """Whether a run made static sets (its static mode), so that its source model is worth naming."""
    return bool(run.get("source")) and "static" in run.get("modes", ["static"])
