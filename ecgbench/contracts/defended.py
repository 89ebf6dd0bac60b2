"""A registered model trained under a registered defence, as one model class: `kachuee+pgd-at`.

The class is the model's own, subclassed with the defence's training step; its name, forward pass,
optimisers and everything else stay the model's, so it trains, caches, resumes and is attacked like any
model, and a row of the board is `kachuee+pgd-at` beside `kachuee`.
"""
from __future__ import annotations

from typing import Any

__all__ = ["SEPARATOR", "split", "defended"]

SEPARATOR = "+"


def split(name: str) -> tuple[str, str | None]:
    """`kachuee+pgd-at` -> (`kachuee`, `pgd-at`); a plain name -> (name, None)."""
    base, _, defence = name.partition(SEPARATOR)
    return base, defence or None


def defended(model_cls: type, defence_cls: type, name: str) -> type:
    """`model_cls` trained with `defence_cls`'s step (its default parameters)."""
    from ecgbench.contracts.base import PluginError  # here: listing plugins must not import torch
    if hasattr(model_cls, "training_step"):
        raise PluginError(f"model {name!r}: {model_cls.__name__} brings its own training step (training_step), so "
                          f"defence {defence_cls.name!r} cannot change how it trains")
    defence = defence_cls()

    def training_step(self: Any, x: Any, y: Any, attacked: Any, optimizers: list) -> Any:
        return defence.step(self, x, y, optimizers)

    return type(f"{model_cls.__name__}_{defence_cls.__name__}", (model_cls,),
                {"training_step": training_step, "defence": defence.config(), "__module__": model_cls.__module__,
                 "__doc__": f"{model_cls.__name__} trained with {defence_cls.__name__}: {defence.config()}"})
