"""A registered model trained under a registered defence, as one model class: `kachuee+pgd-at`.

The class is the model's own, subclassed with the defence's training step; its name, forward pass,
optimisers and everything else stay the model's, so it trains, caches, resumes and is attacked like any
model, and a row of the board is `kachuee+pgd-at` beside `kachuee`. The defence trains with the run
profile's `defence_params` over its defaults (`Registry.with_defence_params`).
"""
from __future__ import annotations

from typing import Any

__all__ = ["SEPARATOR", "split", "defended", "as_defaults"]

SEPARATOR = "+"


def split(name: str) -> tuple[str, str | None]:
    """`kachuee+pgd-at` -> (`kachuee`, `pgd-at`); a plain name -> (name, None)."""
    base, _, defence = name.partition(SEPARATOR)
    return base, defence or None


def as_defaults(defaults: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """`params` with an integer given for a float default made a float (TOML's `beta = 6` is 6.0), so equal
    values hash equal in the keys."""
    return {k: float(v) if isinstance(defaults.get(k), float) and type(v) is int else v for k, v in params.items()}


def defended(model_cls: type, defence_cls: type, name: str, params: dict[str, Any] | None = None) -> type:
    """`model_cls` trained with `defence_cls`'s step, configured with `params` over its defaults.

    The one place a defence is built for a model: the registry passes the run profile's `defence_params`
    for the defence (see `Registry.with_defence_params`); the class's `defence` attribute holds the
    parameters in effect, which the keys hash and every cell records.
    """
    from ecgbench.contracts.base import PluginError  # here: listing plugins must not import torch
    own = next((hook for hook in ("training_step", "phase_loss") if hasattr(model_cls, hook)), None)
    if own is not None:
        raise PluginError(f"model {name!r}: {model_cls.__name__} brings its own training step ({own}), so "
                          f"defence {defence_cls.name!r} cannot change how it trains")
    defence = defence_cls(**as_defaults(defence_cls.defaults, params or {}))

    def training_step(self: Any, x: Any, y: Any, attacked: Any, optimizers: list) -> Any:
        return defence.step(self, x, y, optimizers)

    return type(f"{model_cls.__name__}_{defence_cls.__name__}", (model_cls,),
                {"training_step": training_step, "defence": defence.config(), "__module__": model_cls.__module__,
                 "__doc__": f"{model_cls.__name__} trained with {defence_cls.__name__}: {defence.config()}"})
