"""Optimizer, learning-rate schedule, loss and metrics of a config, as Keras objects."""

from __future__ import annotations

import math

from cnnctl.config import schema as schema_lib
from cnnctl.backend import keras

# Metrics that compare probability vectors element-wise: they need one-hot labels.
_ONE_HOT_METRICS = {"precision", "recall", "auc"}


def label_mode(config: schema_lib.Config) -> str:
    """How the data pipeline should encode labels for this loss and these metrics.

    Sparse cross-entropy is the same function as categorical cross-entropy on one-hot labels, so
    one-hot labels are used whenever something needs them (label smoothing, precision, recall,
    AUC, mix_up and cut_mix, which mix them): the loss value is unchanged.
    """
    if config.loss.name == "binary_crossentropy":
        return "binary"
    if config.loss.name == "categorical_crossentropy" or config.loss.label_smoothing > 0:
        return "categorical"
    if any(s.type in schema_lib.LABEL_MIXING for s in config.augmentation.layers):
        return "categorical"
    if any(m.name in _ONE_HOT_METRICS for m in config.metrics):
        return "categorical"
    return "int"


def loss(config: schema_lib.Config) -> keras.losses.Loss:
    """The loss of a config; with `loss.from_logits` it applies softmax (sigmoid) itself."""
    spec, mode = config.loss, label_mode(config)
    common = {"from_logits": spec.from_logits, "name": spec.name}
    if mode == "binary":
        return keras.losses.BinaryCrossentropy(label_smoothing=spec.label_smoothing, **common)
    if mode == "categorical":
        return keras.losses.CategoricalCrossentropy(label_smoothing=spec.label_smoothing, **common)
    return keras.losses.SparseCategoricalCrossentropy(**common)


def probability_activation(config: schema_lib.Config) -> str:
    """What turns the logits of a `loss.from_logits` model into probabilities: the function
    its loss applies (sigmoid for binary_crossentropy, else softmax)."""
    return "sigmoid" if config.loss.name == "binary_crossentropy" else "softmax"


def metrics(config: schema_lib.Config, num_classes: int | None = None) -> list:
    """The metrics of a config, as Keras metrics; each reads probabilities, so with
    `loss.from_logits` the ones that threshold or rank probabilities get them from the logits
    (accuracy and top-k, an argmax, are the same on either). `num_classes` (the model's output
    units) is needed for balanced_accuracy and macro_f1, listed or named by a monitor."""
    from cnnctl.train import class_metrics

    mode = label_mode(config)
    logits = config.loss.from_logits
    activation = probability_activation(config)
    out = []
    for m in config.metrics:
        if m.name in class_metrics.CLASS_METRICS:
            continue
        if m.name == "accuracy":
            # Keras picks binary accuracy, a 0.5 threshold, for a 1-unit output: 0 for logits
            out.append(keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)
                       if logits and mode == "binary" else "accuracy")
        elif m.name == "top_k_accuracy":
            cls = (keras.metrics.SparseTopKCategoricalAccuracy if mode == "int"
                   else keras.metrics.TopKCategoricalAccuracy)
            out.append(cls(k=m.k, name=f"top{m.k}_accuracy"))
        elif logits:
            cls = {"precision": PrecisionOfLogits, "recall": RecallOfLogits, "auc": AUCOfLogits}
            out.append(cls[m.name](activation=activation, name=m.name))
        else:
            cls = {"precision": keras.metrics.Precision, "recall": keras.metrics.Recall,
                   "auc": keras.metrics.AUC}
            out.append(cls[m.name](name=m.name))
    for name in class_metrics.wanted(config) if num_classes is not None else ():
        out.append(class_metrics.METRICS[name](num_classes, from_logits=logits))
    return out


class _OfLogits:
    """A Keras metric of probabilities, given a model's logits: `activation` (softmax or
    sigmoid, what the loss applies) turns them into the probabilities it reads. Keras's own
    `from_logits` of AUC applies sigmoid to each output, which is not softmax's ranking."""

    def __init__(self, *args, activation: str = "softmax", **kwargs):
        super().__init__(*args, **kwargs)
        self.activation = activation

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = (keras.ops.sigmoid(y_pred) if self.activation == "sigmoid"
                  else keras.ops.softmax(y_pred, axis=-1))
        return super().update_state(y_true, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


@keras.saving.register_keras_serializable(package="cnnctl")
class PrecisionOfLogits(_OfLogits, keras.metrics.Precision):
    """keras.metrics.Precision of softmax (sigmoid) of the logits."""


@keras.saving.register_keras_serializable(package="cnnctl")
class RecallOfLogits(_OfLogits, keras.metrics.Recall):
    """keras.metrics.Recall of softmax (sigmoid) of the logits."""


@keras.saving.register_keras_serializable(package="cnnctl")
class AUCOfLogits(_OfLogits, keras.metrics.AUC):
    """keras.metrics.AUC of softmax (sigmoid) of the logits."""


@keras.saving.register_keras_serializable(package="cnnctl")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `target` over `warmup_steps`, then `after` (shifted by the warm-up)."""

    def __init__(self, target: float, warmup_steps: int, after=None):
        self.target = target
        self.warmup_steps = warmup_steps
        self.after = after

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.target * (step + 1.0) / max(self.warmup_steps, 1)
        rest = (self.after(step - self.warmup_steps) if self.after is not None
                else keras.ops.convert_to_tensor(self.target, "float32"))
        return keras.ops.where(step < self.warmup_steps, warm, rest)

    def get_config(self):
        return {"target": self.target, "warmup_steps": self.warmup_steps,
                "after": keras.optimizers.schedules.serialize(self.after) if self.after else None}

    @classmethod
    def from_config(cls, config):
        after = config.get("after")
        if after is not None:
            after = keras.optimizers.schedules.deserialize(after)
        return cls(config["target"], config["warmup_steps"], after)


@keras.saving.register_keras_serializable(package="cnnctl")
class OneCycleSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle: cosine rise from peak/25 to `peak` over the first 30% of steps, then cosine
    fall to `final` (Smith & Topin, 2018)."""

    def __init__(self, peak: float, total_steps: int, final: float = 0.0, pct_start: float = 0.3):
        self.peak = peak
        self.total_steps = total_steps
        self.final = final
        self.pct_start = pct_start

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        up = max(self.pct_start * self.total_steps, 1.0)
        down = max(self.total_steps - up, 1.0)
        start = self.peak / 25.0
        t_up = keras.ops.clip(step / up, 0.0, 1.0)
        t_down = keras.ops.clip((step - up) / down, 0.0, 1.0)
        rising = start + (self.peak - start) * (1 - keras.ops.cos(math.pi * t_up)) / 2
        falling = self.final + (self.peak - self.final) * (1 + keras.ops.cos(math.pi * t_down)) / 2
        return keras.ops.where(step < up, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "final": self.final,
                "pct_start": self.pct_start}


def learning_rate(spec: schema_lib.OptimizerConfig, steps_per_epoch: int, epochs: int):
    """A float or a Keras schedule, stepping once per batch."""
    sched, lr = spec.schedule, spec.learning_rate
    total = max(steps_per_epoch * epochs, 1)
    warmup = int(round(sched.warmup_epochs * steps_per_epoch))
    if sched.type == "one_cycle":
        return OneCycleSchedule(lr, total, final=sched.min_learning_rate)
    if sched.type == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else lr, decay_steps=max(total - warmup, 1),
            alpha=sched.min_learning_rate / lr, warmup_target=lr if warmup else None,
            warmup_steps=warmup)
    after = None
    if sched.type in ("exponential", "step"):
        after = keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=max(int(round(sched.decay_epochs * steps_per_epoch)), 1),
            decay_rate=sched.decay_rate, staircase=sched.type == "step")
    if warmup:
        return WarmupSchedule(lr, warmup, after)
    return after if after is not None else lr


def optimizer(spec: schema_lib.OptimizerConfig, steps_per_epoch: int, epochs: int,
              batch_size: int | None = None):
    """The Keras optimizer of a config, its schedule stepping once per batch; learning rates
    scaled by batch_size / spec.reference_batch_size when that is set."""
    if spec.reference_batch_size and batch_size:
        scale = batch_size / spec.reference_batch_size
        spec = spec.model_copy(update={
            "learning_rate": spec.learning_rate * scale,
            "schedule": spec.schedule.model_copy(
                update={"min_learning_rate": spec.schedule.min_learning_rate * scale})})
    lr = learning_rate(spec, steps_per_epoch, epochs)
    common = {"learning_rate": lr, "clipnorm": spec.clipnorm, "clipvalue": spec.clipvalue}
    if spec.ema_momentum is not None:
        common.update(use_ema=True, ema_momentum=spec.ema_momentum)
    if spec.name == "adamw":
        wd = 0.004 if spec.weight_decay is None else spec.weight_decay
        return keras.optimizers.AdamW(weight_decay=wd, **common)
    common["weight_decay"] = spec.weight_decay
    if spec.name == "adam":
        return keras.optimizers.Adam(**common)
    if spec.name == "sgd":
        return keras.optimizers.SGD(momentum=spec.momentum, nesterov=spec.nesterov, **common)
    return keras.optimizers.RMSprop(momentum=spec.momentum, **common)
