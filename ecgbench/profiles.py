"""Run profiles: how much data, how many epochs, how hard the attacks try.

`paper` follows ECG-ATK-GAN paper 3.1-3.2 (all beats, SMOTE to 10,000, 5-fold CV, batch 128,
100 epochs) and is meant for a GPU. `quick` is a CPU run of minutes on real data; `smoke` takes
seconds on a few records, for tests. The caps are ours; each is recorded in every result.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Profile", "PROFILES", "get_profile"]


@dataclass(frozen=True)
class Profile:
    name: str
    epochs: int
    subset: bool = False  # smoke: the dataset's `smoke_records` only
    train_cap: int | None = None  # real training beats per class, before oversampling
    test_cap: int | None = None  # test beats per class
    smote_target: int = 10_000  # paper 3.1
    folds: int = 1  # paper 3.1: 5-fold cross-validation
    val_fraction: float = 0.1  # holdout when folds == 1 (our choice)
    batch_size: int = 128  # paper 3.2
    attack_batch: int = 1024
    static_train_cap: int | None = None  # attacked copies of at most this many training beats
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-attack overrides
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES = {
    "smoke": Profile("smoke", epochs=3, subset=True, train_cap=250, test_cap=40, smote_target=250,
                     static_train_cap=200, attack_batch=256,
                     attack_params={"boundary": {"queries": 50}, "hsj": {"max_iter": 2, "max_eval": 50, "init_eval": 10},
                                    "cw": {"max_iter": 5}, "apgd": {"max_iter": 5}, "pgd": {"max_iter": 5}}),
    # quick: per-class caps, 3 epochs, and decision attacks at a tenth of their default query
    # budget (at eps 0.01 their success barely moves with budget; see results/README.md).
    "quick": Profile("quick", epochs=3, train_cap=2000, test_cap=250, smote_target=2000, static_train_cap=1000,
                     attack_params={"boundary": {"queries": 200}, "hsj": {"max_iter": 2, "max_eval": 100, "init_eval": 20},
                                    "apgd": {"max_iter": 20}}),
    "paper": Profile("paper", epochs=100, folds=5),  # paper 3.1-3.2
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
