"""Train, validation and test as training uses them: `data.max_*_samples`, then the seeded
`data.validation_split` carve. Training (`load`) and `cnnctl data check` both split here, so
what the check counts is what training gets."""

from __future__ import annotations

import numpy as np

from cnnctl.data import sources
from cnnctl.errors import ConfigValueError

SPLITS = ("train", "val", "test")


def training_splits(parts: dict[str, sources.Part], data, seed: int) -> dict[str, sources.Part]:
    """The parts of a data set after `data.max_train_samples` / `max_test_samples` (the first N)
    and `data.validation_split` (a seeded random fraction of train moved to val, both keeping
    their order).

    Raises:
        ConfigValueError: the fraction leaves no validation or no training images.
    """
    parts = dict(parts)
    for name, limit in (("train", data.max_train_samples), ("test", data.max_test_samples)):
        if name in parts and limit:
            parts[name] = parts[name].take(slice(None, limit))
    if data.validation_split > 0 and "train" in parts:
        parts["train"], parts["val"] = carve(parts["train"], data.validation_split, seed)
    return parts


def carve(part: sources.Part, fraction: float, seed: int) -> tuple[sources.Part, sources.Part]:
    """Split off a seeded random `fraction` of a part as validation; both keep their order."""
    n = len(part)
    k = int(round(n * fraction))
    if k == 0 or k == n:
        raise ConfigValueError(
            "data.validation_split",
            f"{fraction} of {n} training images leaves "
            f"{'no validation' if k == 0 else 'no training'} images; use more data "
            f"or a {'larger' if k == 0 else 'smaller'} fraction")
    order = np.random.default_rng(seed).permutation(n)
    return part.take(np.sort(order[k:])), part.take(np.sort(order[:k]))
