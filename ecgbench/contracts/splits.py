"""The default train/test splits a `Dataset` offers: stratified at random (paper 3.1), or by patient."""
from __future__ import annotations

import numpy as np

__all__ = ["stratified_split", "patient_split"]


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y)
    return np.sort(train), np.sort(test)


def patient_split(groups: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole patients to one side, so no patient's beats leak across the split."""
    from sklearn.model_selection import GroupShuffleSplit

    train, test = next(GroupShuffleSplit(1, test_size=test_fraction, random_state=seed).split(groups, groups=groups))
    return np.sort(train), np.sort(test)
