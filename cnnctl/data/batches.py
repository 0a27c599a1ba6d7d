"""What the tf.data and NumPy pipelines share: the evaluation batch size and the labels in the
form the loss wants (int, one-hot, or one 0/1 column)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LABEL_MODES = ("int", "categorical", "binary")
# Evaluation batches: independent of train.batch_size (it changes no result), large enough to
# keep the per-batch overhead small.
EVAL_BATCH = 256


def label_fn(label_mode: str, num_classes: int, ops=None) -> Callable:
    """int32 class indices -> the labels of `label_mode`.

    Args:
        label_mode: one of LABEL_MODES: "int" (sparse losses), "categorical" (one-hot float32),
            "binary" (float32 [N, 1]).
        num_classes: classes of the data set.
        ops: the array library the labels are in: `tf` (inside a tf.data map), `keras.ops`
            (tensors on the device), or None for NumPy arrays.
    """
    if ops is None:
        return {
            "int": lambda y: y.astype(np.int32),
            "categorical": lambda y: np.eye(num_classes, dtype=np.float32)[y],
            "binary": lambda y: y.astype(np.float32).reshape(-1, 1),
        }[label_mode]
    return {
        "int": lambda y: y,
        "categorical": lambda y: ops.one_hot(y, num_classes, dtype="float32"),
        "binary": lambda y: ops.reshape(ops.cast(y, "float32"), (-1, 1)),
    }[label_mode]
