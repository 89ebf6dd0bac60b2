"""Cells: one (dataset, model, attack, mode, seed, eps) result of a run, and which cells a run has."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ecgbench.config.attacks import build_attack
from ecgbench.config.run import RunConfig
from ecgbench.contracts.registry import Registry, RegistryError
from ecgbench.store.layout import cell_path

__all__ = ["Cell", "cells_of", "trains_on_static"]


@dataclass(frozen=True)
class Cell:
    dataset: str
    model: str
    attack: str | None  # attack spec (`pgd`, `pgd@foolbox`); None for the clean cell
    mode: str  # clean | static | adaptive | adaptive-detect
    seed: int = 0
    eps: float | None = None  # None: the attack's own budget

    @property
    def label(self) -> str:
        extra = (f"/eps={self.eps:g}" if self.eps is not None else "") + (f"/seed={self.seed}" if self.seed else "")
        return f"{self.dataset}/{self.model}/{self.attack or 'none'}/{self.mode}{extra}"

    def path(self, out: Path) -> Path:
        return cell_path(out, self.dataset, self.model, self.attack, self.mode, self.eps, self.seed)

    def as_dict(self) -> dict:
        return asdict(self)


def cells_of(cfg: RunConfig, reg: Registry) -> list[Cell]:
    """Per seed and dataset: clean cells first, then attack x eps x mode x model.

    `adaptive-detect` only for models with a detector. Bounded attacks run at each `--eps`
    (adaptive modes; the static protocol retrains per set, so it keeps each attack's own budget);
    minimisation attacks run once and are judged at each eps from the L-inf they needed.
    """
    cells = []
    for seed in cfg.seed_list():
        for d in cfg.datasets:
            cells += [Cell(d, m, None, "clean", seed) for m in cfg.models]
            for a in cfg.attacks:
                for mode in cfg.modes:
                    for eps in _eps_list(cfg, reg, a, mode):
                        cells += [Cell(d, m, a, mode, seed, eps) for m in cfg.models
                                  if mode != "adaptive-detect" or _has_detector(reg, m)]
    return cells


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


def trains_on_static(cfg: RunConfig, cell: Cell) -> bool:
    """Whether the cell's model is trained on clean plus static attacked beats (the paper's defence)."""
    return cell.mode != "clean" and "static" in cfg.modes
