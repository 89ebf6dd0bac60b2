"""The three plugin contracts: a Dataset yields beats, a Model classifies them, an Attack perturbs them.

A plugin is one class registered under one entry point (`ecgbench.datasets`, `ecgbench.models`,
`ecgbench.attacks`). The base classes below hold the defaults; a plugin overrides what differs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch.nn as nn

__all__ = ["Beats", "Dataset", "Model", "Attack", "Defence", "PluginError"]


class PluginError(RuntimeError):
    """A plugin broke its contract; the message names the plugin and what was expected."""


@dataclass(frozen=True)
class Beats:
    """A set of single-lead beats: `x` float32 [n, window], `y` int64 class index, `groups` patient id.

    `attacked` marks adversarial copies (paper 3.1: E'_x = E_x + E_xadv, each with its attack flag).
    `scale` states the beats in physical units: microvolts per unit of `x`, per beat (for min-max scaled
    beats, each beat's amplitude range before scaling); NaN where unknown (SMOTE's synthetic beats), None
    for a dataset that does not state it. Budgets in microvolts are read off it (issue 23).
    """

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    attacked: np.ndarray = field(default=None)  # type: ignore[assignment]
    scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.attacked is None:
            object.__setattr__(self, "attacked", np.zeros(len(self.y), dtype=bool))

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> "Beats":
        scale = None if self.scale is None else self.scale[idx]
        return Beats(self.x[idx], self.y[idx], self.groups[idx], self.attacked[idx], scale)

    @staticmethod
    def concat(parts: Sequence["Beats"]) -> "Beats":
        """The beats one after the other; a part without a scale counts as unknown (NaN) where another has one."""
        fields = [np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "y", "groups", "attacked")]
        if all(p.scale is None for p in parts):
            return Beats(*fields)
        scale = np.concatenate([np.full(len(p), np.nan, np.float32) if p.scale is None else p.scale for p in parts])
        return Beats(*fields, scale=scale)

    def counts(self, n_classes: int) -> list[int]:
        return np.bincount(self.y, minlength=n_classes).tolist()


class Dataset:
    """A beat dataset: reads raw records from `data_dir` and cuts them into labelled beats.

    Subclasses set the class attributes and implement `load`; `split` may be overridden to add
    named splits (MIT-BIH adds de Chazal's inter-patient split).
    """

    name: ClassVar[str] = ""
    sampling_rate: ClassVar[int] = 360
    window: ClassVar[int] = 280  # paper 3.1: 280 samples centred on the R peak
    classes: ClassVar[tuple[str, ...]] = ()
    value_range: ClassVar[tuple[float, float]] = (0.0, 1.0)  # paper 3.1: min-max normalised beats
    splits: ClassVar[tuple[str, ...]] = ("random", "patient")

    def __init__(self, data_dir: Path | str, records: Sequence[str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.records = list(records) if records is not None else None

    def settings(self) -> dict[str, Any]:
        """Everything that changes the beats; hashed into the cache key."""
        return {"name": self.name, "window": self.window, "records": self.records}

    def load(self) -> Beats:
        raise NotImplementedError

    def files(self) -> list[Path]:
        """The raw files `load` reads; their names, sizes, times (and small files' bytes) key the beats cache.

        The default lists every file under `data_dir`; a dataset that reads fewer names them, so that
        an unrelated file does not invalidate its cache. A missing data folder is an error here, so a
        warm cache can never stand in for data that is not there.
        """
        if not self.data_dir.is_dir():
            raise PluginError(f"--data-dir {self.data_dir}: no such folder (dataset {self.name!r})")
        return sorted(p for p in self.data_dir.rglob("*") if p.is_file())

    def split(self, beats: Beats, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Train and test indices. `random`: stratified 80/20 (paper 3.1); `patient`: no patient on both sides."""
        from ecgbench.contracts.splits import patient_split, stratified_split

        if name == "random":
            return stratified_split(beats.y, 0.2, seed)
        if name == "patient":
            return patient_split(beats.groups, 0.2, seed)
        raise PluginError(f"dataset {self.name!r} has no split {name!r}; choose one of {', '.join(self.splits)}")


class Model(nn.Module):
    """Base for model plugins: a plain `torch.nn.Module` built as `cls(n_classes, window)`.

    `forward` maps beats [batch, 1, window] in the dataset's value range to class logits, so ART
    and foolbox attack every model the same way. The harness reads the class attributes below with
    getattr, so a bare nn.Module with that constructor works too. Optional hooks, called if present:
    `configure_optimizers() -> list[Optimizer]`; `phase_loss(phase, x, y, attacked, carry) -> (loss, carry)`
    (the loss optimiser `phase` minimises, from the weights the earlier phases left; `carry` hands tensors on
    to the next phase: the GAN's D then G), which the harness steps and can train packed on a GPU;
    `training_step(x, y, attacked, optimizers) -> float` (one whole optimisation step on a batch, for
    what `phase_loss` cannot say; such a model trains alone); `augment(train, seed) -> Beats`
    (a model that synthesises its own minority beats instead of SMOTE), `detect(x) -> [batch, 2]`
    logits clean/attacked (an attack detector: scored, and attacked in `adaptive-detect`), and
    `generate(x, y) -> beats` (a generator: its beats are compared with the clean ones by `similarity`,
    paper Table 3).
    """

    lr: ClassVar[float] = 1e-3
    betas: ClassVar[tuple[float, float]] = (0.9, 0.999)
    wants_attacked: ClassVar[bool] = False  # True: also train on attacked beats with flags (paper 3.1)
    oversample: ClassVar[str | None] = "smote"  # None: the model balances classes itself
    packable: ClassVar[bool] = True  # False: never trained packed with other members of its class (engine.pack)
    batch_size: ClassVar[int | None] = None  # the model's own paper's batch (Acharya: 10); None: the run's (128, paper 3.2)

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.window = window

    @staticmethod
    def similarity(generated: np.ndarray, clean: np.ndarray) -> dict[str, float]:
        """How close a generator's beats are to the clean ones (paper 3.4, Table 3); used for models with `generate`.

        The default is the paper's MSE, SSIM, correlation and NRMSE (`ecgbench.metrics.similarity`);
        a model may declare its own measures here.
        """
        from ecgbench.metrics import similarity

        return similarity(generated, clean)


class Attack:
    """An adversarial attack under an L-inf budget `eps` on the dataset's value range.

    One configured attack crosses every model: the model arrives with each call. `bounded` attacks
    never leave the eps-ball (a result outside it is a bug, and the harness asserts so); for
    minimisation attacks (`bounded = False`: Boundary, HopSkipJump, ART's CW) the harness counts a
    success only where the perturbation lies within eps.
    """

    name: ClassVar[str] = ""
    backends: ClassVar[tuple[str, ...]] = ("art",)
    bounded: bool = True  # may differ per back-end (cw@art is unbudgeted): read it off the instance
    kind: ClassVar[str] = "gradient"  # "gradient" (needs the weights), "decision" (labels only) or "score" (logits only)
    costly: bool = False  # thousands of model calls a beat: run on the stratified subset; may differ per back-end (cw@art)
    defaults: ClassVar[dict[str, Any]] = {"eps": 0.01}  # paper 2.3
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    per_beat: bool = False  # a bounded attack that takes one budget per beat: `run_<backend>(..., eps=tensor[batch])`

    def __init__(self, backend: str | None = None, variant: str | None = None, **params: Any) -> None:
        self.backend = backend or self.backends[0]
        if self.backend not in self.backends:
            raise PluginError(f"attack {self.name!r} has no back-end {self.backend!r}; choose one of {', '.join(self.backends)}")
        if variant is not None and variant not in self.variants:
            raise PluginError(f"attack {self.name!r} has no variant {variant!r}; choose one of {', '.join(self.variants) or '(none)'}")
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise PluginError(f"attack {self.name!r} takes no parameter {', '.join(sorted(unknown))}; it takes {', '.join(self.defaults)}")
        self.variant = variant
        self.params = {**self.defaults, **(self.variants.get(variant, {}) if variant else {}), **params}

    @property
    def eps(self) -> float:
        return float(self.params["eps"])

    @property
    def label(self) -> str:
        """The attack as the leaderboard names it: `pgd@art`, `hsj@foolbox:paper-reference`."""
        return f"{self.name}@{self.backend}" + (f":{self.variant}" if self.variant else "")

    def config(self) -> dict[str, Any]:
        """Everything that changes the attacked beats; hashed into the cache key and shown in reports."""
        return {"name": self.name, "backend": self.backend, "variant": self.variant, **self.params}

    def __call__(self, model: Any, x: Any, y: Any, value_range: tuple[float, float], eps: Any = None) -> Any:
        """Return adversarial beats for torch tensors `x` [batch, 1, window] and labels `y` on the model's device.

        `eps`: a budget per beat (tensor [batch]), for a budget in microvolts; only an attack with `per_beat`
        takes one, and its back-end receives it as the keyword `eps`.
        """
        run = getattr(self, f"run_{self.backend}")
        if eps is None:
            return run(model, x, y, value_range)
        if not self.per_beat:
            raise PluginError(f"attack {self.label!r} takes one budget for all beats, not one per beat")
        return run(model, x, y, value_range, eps=eps)


class Defence:
    """A change to how any model trains (adversarial training), named after the model: `kachuee+pgd-at`.

    One configured defence per defended model class: `step(model, x, y, optimizers)` replaces the standard
    cross-entropy step with the defence's (the model's own optimisers, the same batches, folds and seeds),
    and returns the batch loss, detached. `defaults` are its parameters (a profile's `defence_params` may
    override them), recorded in every cell trained with it and hashed into the keys. A model that brings its own
    `training_step` or `phase_loss` (a GAN) cannot be combined.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise PluginError(f"defence {self.name!r} takes no parameter {', '.join(sorted(unknown))}; "
                              f"it takes {', '.join(self.defaults)}")
        self.params = {**self.defaults, **params}

    def config(self) -> dict[str, Any]:
        """Everything that changes the trained model; hashed into the keys and recorded in every cell."""
        return {"name": self.name, **self.params}

    def step(self, model: nn.Module, x: Any, y: Any, optimizers: list) -> Any:
        raise NotImplementedError
