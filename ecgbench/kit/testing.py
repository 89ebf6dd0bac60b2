"""Contract checks for plugin authors: call `assert_*_contract` from your own tests.

The checks are the ones the harness relies on (`ecgbench.contracts.checks` at the plugin boundary, plus
what the training loop and the attacks assume), run on a few beats so they take seconds. Each
`*_checks` generator yields one line per passed check and raises `PluginError` at the first
failure, saying what came back and what was expected; `ecgbench check KIND NAME` prints those
lines, and the `assert_*` functions run them to the end. No pytest import: usable anywhere.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ecgbench.contracts.base import Beats, PluginError
from ecgbench.contracts.checks import check_adversarial, check_beats, check_logits
from ecgbench.store.io import cache_key

__all__ = [
    "dataset_checks", "model_checks", "attack_checks", "defence_checks", "reference_setup",
    "assert_dataset_contract", "assert_model_contract", "assert_attack_contract", "assert_defence_contract",
]

WINDOWS = (280, 187)  # ECG-ATK-GAN's MIT-BIH window and Kachuee et al.'s 187-sample beats
N_CLASSES = (2, 4)  # PTB's normal/MI and MIT-BIH's four AAMI classes
BATCH = 8


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Any exception inside becomes a PluginError saying which check the plugin broke."""
    try:
        yield
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a plugin raises is reported as its failure
        raise PluginError(f"{what} raised {type(exc).__name__}: {' '.join(str(exc).split()) or '(no message)'}") from exc


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise PluginError(message)


# -- datasets ---------------------------------------------------------------------------------
def dataset_checks(cls: type, data_dir: Path | str, records: Any = "smoke") -> Iterator[str]:
    """Class attributes, settings, the beats of `records` (default: the class's `smoke_records`,
    else every record) through `check_beats`, and every split it names."""
    name = getattr(cls, "name", "")
    _require(isinstance(name, str) and bool(name), f"dataset class {cls.__name__} has no `name`")
    classes, window, vr = tuple(cls.classes), cls.window, tuple(cls.value_range)
    _require(len(classes) >= 2 and len(set(classes)) == len(classes) and all(isinstance(c, str) for c in classes),
             f"dataset {name!r}: `classes` must name two or more distinct classes, got {classes!r}")
    _require(isinstance(window, int) and window > 0, f"dataset {name!r}: `window` must be a positive int, got {window!r}")
    _require(cls.sampling_rate > 0, f"dataset {name!r}: `sampling_rate` must be positive, got {cls.sampling_rate!r}")
    _require(len(vr) == 2 and float(vr[0]) < float(vr[1]), f"dataset {name!r}: `value_range` must be (low, high), got {vr!r}")
    _require(len(cls.splits) > 0, f"dataset {name!r}: `splits` names no split")
    yield (f"class attributes: {len(classes)} classes ({', '.join(classes)}), window {window} at {cls.sampling_rate} Hz, "
           f"value range {list(vr)}, splits {', '.join(cls.splits)}")

    if records == "smoke":
        records = getattr(cls, "smoke_records", None)
    with _step(f"dataset {name!r}: {cls.__name__}(data_dir, records=...)"):
        dataset = cls(Path(data_dir), records=None if records is None else list(records))
    with _step(f"dataset {name!r}: settings()"):
        settings = dataset.settings()
        cache_key(settings)
    _require(isinstance(settings, dict) and settings.get("name") == name,
             f"dataset {name!r}: settings() must be a dict holding at least its name (it is hashed into cache keys), got {settings!r}")
    yield "settings() is a dict naming the dataset and hashes to a cache key"

    t0 = time.perf_counter()
    with _step(f"dataset {name!r}: load()"):
        beats = dataset.load()
    _require(isinstance(beats, Beats), f"dataset {name!r}: load() returned {type(beats).__name__}, expected ecgbench.contracts.base.Beats")
    check_beats(beats, name, window, len(classes), vr)
    counts = beats.counts(len(classes))
    _require(sum(c > 0 for c in counts) >= 2, f"dataset {name!r}: the beats hold one class only ({counts}); a classifier needs two")
    where = f"{len(records)} records" if records is not None else "all records"
    yield (f"load(): {len(beats)} beats from {where} in {time.perf_counter() - t0:.1f} s pass check_beats: "
           + ", ".join(f"{c} {n}" for c, n in zip(classes, counts)))

    for split in cls.splits:
        with _step(f"dataset {name!r}: split(beats, {split!r}, seed=0)"):
            train, test = (np.asarray(i) for i in dataset.split(beats, split, 0))
        _require(train.dtype.kind in "iu" and test.dtype.kind in "iu",
                 f"dataset {name!r}: split {split!r} must return integer index arrays, got {train.dtype} and {test.dtype}")
        _require(len(train) > 0 and len(test) > 0, f"dataset {name!r}: split {split!r} left {len(train)} train and {len(test)} test beats")
        _require(not np.intersect1d(train, test).size, f"dataset {name!r}: split {split!r} puts some beats on both sides")
        both = np.concatenate([train, test])
        _require(both.min() >= 0 and both.max() < len(beats), f"dataset {name!r}: split {split!r} indexes beyond the {len(beats)} beats")
        yield f"split {split!r}: {len(train)} train / {len(test)} test beats, disjoint"


# -- models -----------------------------------------------------------------------------------
def _beats(n: int, window: int, n_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random beats in [0, 1] and labels covering every class: a model must take any beat in range."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.cumsum(torch.randn(n, 1, window, generator=gen), -1)
    x = (x - x.amin(-1, keepdim=True)) / (x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True))
    return x, torch.arange(n) % n_classes


def model_checks(cls: type, name: str | None = None, windows: tuple[int, ...] = WINDOWS,
                 n_classes: tuple[int, ...] = N_CLASSES) -> Iterator[str]:
    """Built as `cls(n_classes, window)` for each pair: logits shape, input gradients, one training step."""
    from ecgbench.engine.train import build
    from ecgbench.engine.steps import training_hooks

    name = name or getattr(cls, "name", None) or cls.__name__
    lr, oversample = getattr(cls, "lr", 1e-3), getattr(cls, "oversample", "smote")
    _require(isinstance(lr, (int, float)) and lr > 0, f"model {name!r}: `lr` must be a positive number, got {lr!r}")
    _require(oversample in (None, "smote"), f"model {name!r}: `oversample` must be 'smote' or None, got {oversample!r}")
    yield f"class attributes: lr {lr}, oversample {oversample}, wants_attacked {bool(getattr(cls, 'wants_attacked', False))}"
    from ecgbench.engine.pack import why_not_packed

    why = why_not_packed(cls)
    yield "packs on a GPU with other trainings of its class" if why is None else f"trains alone on a GPU: {why}"

    for window in windows:
        for k in n_classes:
            where = f"model {name!r} (window {window}, {k} classes)"
            with _step(f"{where}: {cls.__name__}({k}, {window})"):
                model = build(cls, k, window, seed=0)
            x, y = _beats(BATCH, window, k)
            x.requires_grad_(True)
            with _step(f"{where}: forward"):
                logits = model.eval()(x)
            check_logits(logits.detach(), name, BATCH, k)
            _require(logits.requires_grad, f"{where}: logits do not depend on the input through autograd; gradient attacks need them to")
            with _step(f"{where}: backward to the input"):
                (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), x, allow_unused=True)
            _require(grad is not None and bool(torch.isfinite(grad).all()) and bool(grad.abs().sum() > 0),
                     f"{where}: the loss gradient does not reach the input (None, zero or non-finite); gradient attacks need it")
            if hasattr(model, "detect"):
                with _step(f"{where}: detect"), torch.no_grad():
                    flags = model.detect(x.detach())
                _require(tuple(flags.shape) == (BATCH, 2), f"{where}: detect returned shape {tuple(flags.shape)}, expected ({BATCH}, 2)")

            before = [p.detach().clone() for p in model.parameters()]
            attacked = (torch.arange(BATCH) % 2) if getattr(model, "wants_attacked", False) else torch.zeros(BATCH, dtype=torch.long)
            with _step(f"{where}: one training step"):
                model.train()
                optimizers, step = training_hooks(model)
                loss = float(step(x.detach(), y, attacked, optimizers))
            _require(math.isfinite(loss), f"{where}: training step returned loss {loss}")
            _require(any(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters())),
                     f"{where}: one training step changed no parameter")
            yield f"window {window}, {k} classes: logits {tuple(logits.shape)}, input gradient reaches the beat, one training step (loss {loss:.3f})"


# -- defences ---------------------------------------------------------------------------------
class _Probe(torch.nn.Module):
    """A small CNN a defence is checked on: built as `cls(n_classes, window)`, like every model plugin."""

    def __init__(self, n_classes: int, window: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 4, 5, padding=2)
        self.fc = torch.nn.Linear(4 * window, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).flatten(1))


def defence_checks(cls: type, name: str | None = None) -> Iterator[str]:
    """Its parameters and configuration, then the model checks of a small CNN trained with it (its step included)."""
    from ecgbench.contracts.defended import defended

    name = name or getattr(cls, "name", None) or cls.__name__
    defaults = getattr(cls, "defaults", None)
    _require(isinstance(defaults, dict), f"defence {name!r}: `defaults` must be a dict of its parameters, got {defaults!r}")
    with _step(f"defence {name!r}: {cls.__name__}()"):
        config = cls().config()
    _require(isinstance(config, dict) and config.get("name") == getattr(cls, "name", name),
             f"defence {name!r}: config() must be a dict naming it, got {config!r}")
    yield f"parameters: {config}"
    with _step(f"defence {name!r}: combined with a model"):
        model_cls = defended(_Probe, cls, f"probe+{name}")
    yield from model_checks(model_cls, name=f"probe+{name}")


def assert_defence_contract(cls: type, name: str | None = None) -> None:
    """Raise PluginError unless the defence trains a small CNN as the model checks require."""
    for _ in defence_checks(cls, name):
        pass


# -- attacks ----------------------------------------------------------------------------------
def train_reference(train: Beats, n_classes: int, epochs: int = 3, batch: int = 32, seed: int = 0) -> torch.nn.Module:
    """A Kachuee CNN trained briefly with plain Adam on `train`: a real model for attacks to flip, in eval mode."""
    from ecgbench.baselines.kachuee import Kachuee
    from ecgbench.engine.train import build
    from ecgbench.engine.steps import classifier_step, default_optimizers

    model = build(Kachuee, n_classes, train.x.shape[1], seed)
    optimizers, gen = default_optimizers(model), torch.Generator().manual_seed(seed)
    x, y = torch.as_tensor(train.x)[:, None], torch.as_tensor(train.y)
    model.train()
    for _ in range(epochs):
        for b in torch.randperm(len(y), generator=gen).split(batch):
            classifier_step(model, x[b], y[b], torch.zeros(len(b), dtype=torch.long), optimizers)
    return model.eval()


def reference_setup(data_dir: Path | str, cache: Path | str | None = None, per_class: int = 2,
                    seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, tuple[float, float]]:
    """A Kachuee CNN trained briefly on MIT-BIH smoke beats, and `per_class` test beats of each class.

    Three epochs on 300 training beats per class (SMOTE-balanced): about 80 % accuracy in a couple
    of seconds on one core, so attacks have real decisions to flip. Returns (model in eval mode,
    x [n, 1, 280], y [n], value range).
    """
    from ecgbench.data.beats import cap_per_class, smote
    from ecgbench.data.catalog import load_beats
    from ecgbench.plugins.datasets.mitbih import MitBih

    dataset = MitBih(Path(data_dir), records=MitBih.smoke_records)
    beats = load_beats(dataset, Path(cache))[0] if cache is not None else dataset.load()
    train_idx, test_idx = dataset.split(beats, "random", seed)
    train = smote(cap_per_class(beats.take(train_idx), 300, seed), 300, seed)
    test = cap_per_class(beats.take(test_idx), per_class, seed)
    model = train_reference(train, len(dataset.classes), epochs=3, seed=seed)
    return model, torch.as_tensor(test.x)[:, None], torch.as_tensor(test.y), dataset.value_range


def attack_checks(cls: type, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  value_range: tuple[float, float], params: dict[str, Any] | None = None,
                  backends: tuple[str, ...] | None = None) -> Iterator[str]:
    """Class attributes, every variant builds, and every back-end's output passes `check_adversarial`.

    `params` overrides defaults the attack takes (others are ignored, as the runner does with a
    profile's `attack_params`): pass small budgets so decision-based attacks finish in seconds.
    """
    name = getattr(cls, "name", "")
    _require(isinstance(name, str) and bool(name), f"attack class {cls.__name__} has no `name`")
    _require(len(cls.backends) > 0, f"attack {name!r}: `backends` names no back-end")
    missing = [b for b in cls.backends if not callable(getattr(cls, f"run_{b}", None))]
    _require(not missing, f"attack {name!r}: back-end(s) {', '.join(missing)} have no run_<backend> method")
    _require(float(cls.defaults.get("eps", 0)) > 0, f"attack {name!r}: `defaults` must hold a positive 'eps', got {cls.defaults!r}")
    for variant in cls.variants:
        with _step(f"attack {name!r}: variant {variant!r}"):
            cls(variant=variant)
    yield (f"class attributes: back-ends {', '.join(cls.backends)}, defaults {cls.defaults}, "
           f"variants {', '.join(cls.variants) or '(none)'}, all build")

    overrides = {k: v for k, v in (params or {}).items() if k in cls.defaults}
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        clean_pred = model(x).argmax(1)
    for backend in backends or cls.backends:
        with _step(f"attack {name!r}: {cls.__name__}(backend={backend!r}, **{overrides})"):
            attack = cls(backend=backend, **overrides)
        x_in, t0 = x.clone(), time.perf_counter()
        with _step(f"attack {attack.label!r} on {len(x)} beats"):
            adv = attack(model, x, y, value_range)
        seconds = time.perf_counter() - t0
        _require(torch.equal(x, x_in), f"attack {attack.label!r} changed its input beats in place")
        after = model.state_dict()
        _require(all(torch.equal(w, after[k]) for k, w in weights.items()),
                 f"attack {attack.label!r} changed the model's weights")
        bounded = bool(getattr(attack, "bounded", True))
        linf = check_adversarial(adv, x, attack.label, attack.eps, bounded, value_range)
        with torch.no_grad():
            flipped = int((model(adv.float()).argmax(1) != clean_pred).sum())
        yield (f"{attack.label}: {len(x)} beats in {seconds:.1f} s, L-inf max {float(linf.max()):.4g} "
               f"({'bounded' if bounded else 'minimisation'}, eps {attack.eps}), in value range, {flipped} predictions flipped")
        if bounded and getattr(attack, "per_beat", False):  # budgets in microvolts: each beat its own eps
            budget = torch.linspace(attack.eps / 4, attack.eps * 2, len(x), device=x.device)
            with _step(f"attack {attack.label!r} with one budget per beat (eps=tensor[{len(x)}])"):
                adv = attack(model, x, y, value_range, eps=budget)
            check_adversarial(adv, x, attack.label, budget, True, value_range)
            yield f"{attack.label}: one budget per beat ({attack.eps / 4:.4g} to {attack.eps * 2:.4g}): every beat within its own"


# -- pytest helpers ---------------------------------------------------------------------------
def assert_dataset_contract(cls: type, data_dir: Path | str, records: Any = "smoke") -> None:
    """Raise PluginError unless the dataset class passes every dataset check (on its smoke records)."""
    for _ in dataset_checks(cls, data_dir, records):
        pass


def assert_model_contract(cls: type, windows: tuple[int, ...] = WINDOWS, n_classes: tuple[int, ...] = N_CLASSES,
                          name: str | None = None) -> None:
    """Raise PluginError unless the model class passes every model check for each window and class count."""
    for _ in model_checks(cls, name, windows, n_classes):
        pass


def assert_attack_contract(cls: type, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                           value_range: tuple[float, float] = (0.0, 1.0), params: dict[str, Any] | None = None,
                           backends: tuple[str, ...] | None = None) -> None:
    """Raise PluginError unless every back-end of the attack returns valid adversarial beats for (model, x, y).

    `reference_setup(data_dir)` gives a small trained model and real beats to pass in.
    """
    for _ in attack_checks(cls, model, x, y, value_range, params, backends):
        pass
