"""Balanced accuracy and macro F1 as Keras metrics, and the check that each monitor of a
config (`train.checkpoint_monitor`, early stopping, LR on plateau) names a figure the run logs."""

from __future__ import annotations

import numpy as np

from cnnctl.backend import keras
from cnnctl.config import wording
from cnnctl.errors import ConfigValueError

# Metrics that count argmax predictions per class; a monitor may name them without `metrics:`
CLASS_METRICS = ("balanced_accuracy", "macro_f1")


class _ClassCounts(keras.metrics.Metric):
    """The confusion matrix of argmax predictions (a 0.5 threshold, 0 for logits, on a 1-unit
    sigmoid output), summed over the batches since the last reset. Sample weights (from
    `train.class_weight`) are not applied: the figures count images."""

    def __init__(self, num_classes: int, from_logits: bool = False, name=None, dtype=None,
                 **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.num_classes, self.from_logits = num_classes, from_logits
        self._direction = "up"  # what Keras's EarlyStopping / ReduceLROnPlateau read for mode auto
        size = max(num_classes, 2)  # a 1-unit output has two classes
        self.matrix = self.add_variable(shape=(size, size), initializer="zeros", name="matrix",
                                        dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
        size = max(self.num_classes, 2)
        if y_pred.shape[-1] == 1:
            threshold = 0.0 if self.from_logits else 0.5
            predicted = ops.cast(ops.reshape(y_pred, (-1,)) > threshold, "int32")
            true = ops.cast(ops.round(ops.reshape(y_true, (-1,))), "int32")
        else:
            predicted = ops.argmax(y_pred, axis=-1)
            one_hot = len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1]
            true = ops.argmax(y_true, axis=-1) if one_hot else ops.reshape(y_true, (-1,))
        # [true, predicted] counts as a product of one-hot rows: no bincount of a dynamic length
        rows = ops.one_hot(ops.cast(true, "int32"), size, dtype="float32")
        cols = ops.one_hot(ops.cast(predicted, "int32"), size, dtype="float32")
        self.matrix.assign_add(ops.matmul(ops.transpose(rows), cols))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package="cnnctl")
class BalancedAccuracy(_ClassCounts):
    """The mean recall of the classes that have images (scikit-learn's balanced_accuracy_score)."""

    def __init__(self, num_classes: int, from_logits: bool = False, name="balanced_accuracy",
                 **kwargs):
        super().__init__(num_classes, from_logits, name=name, **kwargs)

    def result(self):
        ops = keras.ops
        support = ops.sum(self.matrix, axis=1)
        recall = ops.diagonal(self.matrix) / ops.maximum(support, 1.0)
        present = ops.cast(support > 0, "float32")
        return ops.sum(recall * present) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="cnnctl")
class MacroF1(_ClassCounts):
    """The mean F1 of all classes, 0 for a class with no images and no predictions (as
    `cnnctl eval`'s macro_f1)."""

    def __init__(self, num_classes: int, from_logits: bool = False, name="macro_f1", **kwargs):
        super().__init__(num_classes, from_logits, name=name, **kwargs)

    def result(self):
        ops = keras.ops
        # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (images of the class + predictions of it)
        both = ops.sum(self.matrix, axis=1) + ops.sum(self.matrix, axis=0)
        return ops.mean(2 * ops.diagonal(self.matrix) / ops.maximum(both, 1.0))


METRICS = {"balanced_accuracy": BalancedAccuracy, "macro_f1": MacroF1}


def balanced_accuracy(matrix) -> float:
    """Balanced accuracy of a confusion matrix (rows true, columns predicted)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present])) if present.any() else 0.0


def wanted(config) -> list[str]:
    """The class metrics a run computes: those in `metrics:`, then those a monitor names."""
    listed = [m.name for m in config.metrics if m.name in CLASS_METRICS]
    named = {name.removeprefix("val_") for _, name in _monitors(config)}
    return listed + [name for name in CLASS_METRICS if name in named and name not in listed]


def logged(config) -> list[str]:
    """The training figures a run logs each epoch (history.csv columns without `val_`)."""
    names = ["loss"]
    for m in config.metrics:
        names.append(f"top{m.k}_accuracy" if m.name == "top_k_accuracy" else m.name)
    return names + [n for n in CLASS_METRICS if n not in names]


def check_monitors(config) -> None:
    """Refuse a monitor that names no figure of the run: its checkpoint would never be chosen.

    Raises:
        ConfigValueError: at the monitor's config path, with a "did you mean".
    """
    names = logged(config)
    choices = names + [f"val_{n}" for n in names]
    for key, monitor in _monitors(config):
        if monitor not in choices:
            raise ConfigValueError(
                key, f"{monitor!r} is not a figure this run logs{wording.did_you_mean(monitor, choices)}; "
                f"use one of {', '.join(names)} (the metrics of `metrics:`, and the class "
                "metrics), with val_ in front for the validation figure")


def _monitors(config) -> list[tuple[str, str]]:
    train = config.train
    out = [("train.checkpoint_monitor", train.checkpoint_monitor)]
    if train.early_stopping is not None:
        out.append(("train.early_stopping.monitor", train.early_stopping.monitor))
    if train.reduce_lr_on_plateau is not None:
        out.append(("train.reduce_lr_on_plateau.monitor", train.reduce_lr_on_plateau.monitor))
    return out
