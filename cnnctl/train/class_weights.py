"""`train.class_weight`: the weight of each class in the training loss, as Keras's `fit` takes it."""

from __future__ import annotations

from cnnctl.config import wording
from cnnctl.errors import ConfigValueError


def resolve(setting, counts: dict[str, int]) -> dict[int, float] | None:
    """`fit(class_weight=...)` of a `train.class_weight` setting.

    Args:
        setting: None, "auto", or {class name: weight}.
        counts: images of each class in the training split, in class-index order.

    Returns:
        {class index: weight}, or None without a setting. auto gives class c the weight
        N / (K * n_c) (N training images, K classes that have images, n_c those of c): each class
        then weighs the same in all, and the weights average 1 over the training images, so the
        loss keeps its scale (and the learning rate its meaning). A class with no training
        images gets 1. A mapping is taken as it is; classes it does not name weigh 1.

    Raises:
        ConfigValueError: the mapping names a class the data does not have.
    """
    if setting is None:
        return None
    names = list(counts)
    if setting == "auto":
        total = sum(counts.values())
        present = sum(1 for n in counts.values() if n > 0)
        return {i: (total / (present * n) if n > 0 else 1.0) for i, n in enumerate(counts.values())}
    check_names(setting, names)
    return {i: float(setting.get(name, 1.0)) for i, name in enumerate(names)}


def check_names(setting, class_names: list[str]) -> None:
    """Refuse a `train.class_weight` mapping that names a class the data does not have.

    Raises:
        ConfigValueError: at `train.class_weight.NAME`, with a "did you mean".
    """
    if not isinstance(setting, dict):
        return
    for name in setting:
        if name not in class_names:
            raise ConfigValueError(
                f"train.class_weight.{name}",
                f"no class {name!r} in the training data{wording.did_you_mean(name, class_names)}; "
                f"its classes are {', '.join(class_names[:20])}"
                f"{', ...' if len(class_names) > 20 else ''}")
