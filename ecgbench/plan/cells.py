"""Cells: one (dataset, model, training, attack, mode, seed, eps) result of a run, and which cells a run has.

A budget is `eps` on the [0, 1] beat scale (None: the attack's own) or, with `eps_uv`, microvolts: each
beat's own eps (its amplitude range sets how many microvolts one unit is), for the attacks that take one
budget per beat (`per_beat`) and the minimisation attacks (judged per beat).

A leaderboard row is one trained model: a model and how it was trained (`training`):
- `clean`: on clean beats;
- `defence`: the paper's defence (3.1, Fig. 1: E'x = Ex + Exadv), on clean beats plus the static
  sets of all the run's attacks together; a run with the static mode has this row beside `clean`;
- `static`: the paper's protocol, per attack a model trained on clean beats plus that attack's
  static set, scored on that attack's static test set (static-mode cells only; no row of its own).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ecgbench.config.attacks import build_attack
from ecgbench.config.run import RunConfig
from ecgbench.contracts.registry import Registry, RegistryError
from ecgbench.store.layout import cell_path

__all__ = ["Cell", "TRAININGS", "cells_of", "trainings_of", "takes_uv", "without_uv"]

TRAININGS = ("clean", "defence", "static")


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    attack: str | None  # attack spec (`pgd`, `pgd@foolbox`); None for the clean cell
    mode: str  # clean | static | adaptive | adaptive-detect
    seed: int = 0
    eps: float | None = None  # None: the attack's own budget
    training: str = "clean"  # clean | defence | static (see the module's docstring)
    eps_uv: float | None = None  # a budget in microvolts (then `eps` is None)

    @property
    def label(self) -> str:
        extra = (f"/eps={self.eps:g}" if self.eps is not None else "") + (f"/eps={self.eps_uv:g}uV" if self.eps_uv is not None else "")
        extra += f"/seed={self.seed}" if self.seed else ""
        trained = "/defence" if self.training == "defence" else ""
        return f"{self.dataset}/{self.model}{trained}/{self.attack or 'none'}/{self.mode}{extra}"

    def path(self, out: Path) -> Path:
        return cell_path(out, self.dataset, self.model, self.attack, self.mode, self.eps, self.seed, self.training, self.eps_uv)

    def as_dict(self) -> dict:
        """The cell's fields; `eps_uv` only when set, so cells without it keep the keys they had before it existed."""
        d = asdict(self)
        if d["eps_uv"] is None:
            del d["eps_uv"]
        return d


def trainings_of(cfg: RunConfig) -> tuple[str, ...]:
    """The rows each model has: trained on clean beats, and with the static mode the paper's defence."""
    return ("clean", "defence") if "static" in cfg.modes and cfg.attacks else ("clean",)


def cells_of(cfg: RunConfig, reg: Registry) -> list[Cell]:
    """Per seed and dataset: each row's clean cells first, then attack x mode x eps x row x model.

    A row (model x training) is scored clean and attacked adaptively; a static cell is the paper's
    protocol (its own model per attack). `adaptive-detect` only for models with a detector. Bounded
    attacks run at each `--eps` (adaptive modes; the static protocol keeps each attack's own budget);
    minimisation attacks run once and are judged at each eps from the L-inf they needed.
    """
    cells = []
    trainings = trainings_of(cfg)
    uv = {a: cfg.eps_uv if takes_uv(cfg, reg, a) else () for a in cfg.attacks} if cfg.eps_uv else {}  # built once
    for seed in cfg.seed_list():
        for d in cfg.datasets:
            cells += [Cell(d, m, None, "clean", seed, None, t) for t in trainings for m in cfg.models]
            for a in cfg.attacks:
                for mode in cfg.modes:
                    if mode == "static":
                        cells += [Cell(d, m, a, mode, seed, None, "static") for m in cfg.models]
                        continue
                    budgets = [(eps, None) for eps in _eps_list(cfg, reg, a, mode)]
                    budgets += [(None, u) for u in uv.get(a, ())]
                    for eps, u in budgets:
                        cells += [Cell(d, m, a, mode, seed, eps, t, u) for t in trainings for m in cfg.models
                                  if mode != "adaptive-detect" or _has_detector(reg, m)]
    return cells


def takes_uv(cfg: RunConfig, reg: Registry, spec: str) -> bool:
    """Whether an attack can run at a budget in microvolts: it takes one budget per beat, or minimises
    (and is judged per beat). One that does not build is planned, and fails its cells with its error."""
    try:
        attack = build_attack(spec, cfg.profile, reg)
    except Exception:  # noqa: BLE001
        return True
    return bool(getattr(attack, "per_beat", False)) or not getattr(attack, "bounded", True)


def without_uv(cfg: RunConfig, reg: Registry) -> list[str]:
    """The run's attacks that `--eps-uv` leaves out: they take one budget for all beats."""
    return [a for a in cfg.attacks if not takes_uv(cfg, reg, a)] if cfg.eps_uv else []


def _eps_list(cfg: RunConfig, reg: Registry, spec: str, mode: str) -> list[float | None]:
    if not cfg.eps or mode == "static":
        return [None]
    try:
        attack = build_attack(spec, cfg.profile, reg)
    except Exception:  # noqa: BLE001 - an attack that does not build fails its cells later, once
        return [None]
    if not getattr(attack, "bounded", True):
        return [None]
    return [None if abs(e - attack.eps) < 1e-12 else float(e) for e in cfg.eps]


def _has_detector(reg: Registry, model: str) -> bool:
    try:
        return hasattr(reg.get("models", model), "detect")
    except RegistryError:
        return False
