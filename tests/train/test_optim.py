"""Optimizers, learning-rate schedules, losses and label modes built from configs."""

import math

import numpy as np
import pytest

from cnnctl.config import schema as schema_lib
from cnnctl.train import optim
from cnnctl.backend import keras


def make(**sections) -> schema_lib.Config:
    return schema_lib.Config.model_validate({"model": {"input_shape": [8, 8, 1]}, **sections})


def lr_at(schedule, step: int) -> float:
    return float(keras.ops.convert_to_numpy(schedule(step)))


@pytest.mark.parametrize("loss, metrics, expected", [
    ("sparse_categorical_crossentropy", ["accuracy"], "int"),
    ("categorical_crossentropy", ["accuracy"], "categorical"),
    ("binary_crossentropy", ["accuracy"], "binary"),
    ({"name": "sparse_categorical_crossentropy", "label_smoothing": 0.1}, ["accuracy"], "categorical"),
    ("sparse_categorical_crossentropy", ["accuracy", "precision"], "categorical"),
])
def test_label_mode_fits_loss_and_metrics(loss, metrics, expected):
    assert optim.label_mode(make(loss=loss, metrics=metrics)) == expected


def test_sparse_loss_on_one_hot_labels_is_the_same_number():
    cfg = make(loss={"name": "sparse_categorical_crossentropy"}, metrics=["accuracy", "recall"])
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    sparse = keras.losses.SparseCategoricalCrossentropy()(np.array([0, 2]), probs)
    ours = optim.loss(cfg)(np.eye(3, dtype="float32")[[0, 2]], probs)
    assert float(ours) == pytest.approx(float(sparse), rel=1e-6)


def test_label_smoothing_reaches_the_loss():
    cfg = make(loss={"name": "categorical_crossentropy", "label_smoothing": 0.2})
    assert optim.loss(cfg).get_config()["label_smoothing"] == pytest.approx(0.2)


def test_top_k_metric_matches_label_mode():
    sparse = optim.metrics(make(loss="sparse_categorical_crossentropy",
                                metrics=[{"name": "top_k_accuracy", "k": 3}]))
    onehot = optim.metrics(make(loss="categorical_crossentropy", metrics=["top_k_accuracy"]))
    assert isinstance(sparse[0], keras.metrics.SparseTopKCategoricalAccuracy) and sparse[0].name == "top3_accuracy"
    assert isinstance(onehot[0], keras.metrics.TopKCategoricalAccuracy) and onehot[0].name == "top5_accuracy"


@pytest.mark.parametrize("name, cls", [("adam", keras.optimizers.Adam), ("adamw", keras.optimizers.AdamW),
                                       ("sgd", keras.optimizers.SGD), ("rmsprop", keras.optimizers.RMSprop)])
def test_optimizer_classes_and_options(name, cls):
    spec = schema_lib.OptimizerConfig(name=name, learning_rate=0.01, momentum=0.9, clipnorm=1.0,
                                      nesterov=name == "sgd")
    opt = optim.optimizer(spec, steps_per_epoch=10, epochs=2)
    assert type(opt) is cls
    assert opt.clipnorm == 1.0
    if name == "sgd":
        assert opt.nesterov and opt.momentum == pytest.approx(0.9)


def test_constant_rate_is_a_float():
    assert optim.learning_rate(schema_lib.OptimizerConfig(learning_rate=0.05), 10, 3) == 0.05


def test_cosine_with_warmup():
    spec = schema_lib.OptimizerConfig(learning_rate=0.1, schedule={"type": "cosine", "warmup_epochs": 1})
    sched = optim.learning_rate(spec, steps_per_epoch=10, epochs=5)   # 10 warm-up steps, 40 decay
    assert lr_at(sched, 0) == pytest.approx(0.0, abs=1e-7)
    assert lr_at(sched, 5) == pytest.approx(0.05, rel=1e-5)
    assert lr_at(sched, 10) == pytest.approx(0.1, rel=1e-5)
    assert lr_at(sched, 30) == pytest.approx(0.05, rel=1e-4)            # half way down the cosine
    assert lr_at(sched, 50) == pytest.approx(0.0, abs=1e-6)


def test_step_decay_with_warmup():
    spec = schema_lib.OptimizerConfig(learning_rate=0.1, schedule={
        "type": "step", "warmup_epochs": 1, "decay_epochs": 2, "decay_rate": 0.5})
    sched = optim.learning_rate(spec, steps_per_epoch=10, epochs=10)
    assert lr_at(sched, 4) == pytest.approx(0.05, rel=1e-5)            # warm-up: (4 + 1) / 10 * 0.1
    assert lr_at(sched, 10) == pytest.approx(0.1, rel=1e-5)
    assert lr_at(sched, 29) == pytest.approx(0.1, rel=1e-5)            # 19 steps after warm-up
    assert lr_at(sched, 30) == pytest.approx(0.05, rel=1e-5)           # one decay of 20 steps


def test_exponential_decay_is_smooth():
    spec = schema_lib.OptimizerConfig(learning_rate=0.1, schedule={
        "type": "exponential", "decay_epochs": 1, "decay_rate": 0.5})
    sched = optim.learning_rate(spec, steps_per_epoch=10, epochs=3)
    assert lr_at(sched, 5) == pytest.approx(0.1 * 0.5 ** 0.5, rel=1e-5)


def test_one_cycle_rises_then_falls():
    spec = schema_lib.OptimizerConfig(learning_rate=0.4, schedule={"type": "one_cycle"})
    sched = optim.learning_rate(spec, steps_per_epoch=10, epochs=10)   # 100 steps, peak at 30
    values = [lr_at(sched, s) for s in range(0, 101, 10)]
    assert values[0] == pytest.approx(0.4 / 25, rel=1e-5)
    assert values[3] == pytest.approx(0.4, rel=1e-5)
    assert values.index(max(values)) == 3
    assert all(a < b for a, b in zip(values[:3], values[1:4]))
    assert all(a > b for a, b in zip(values[3:-1], values[4:]))
    assert values[-1] == pytest.approx(0.0, abs=1e-6)


def test_schedules_survive_serialization():
    spec = schema_lib.OptimizerConfig(learning_rate=0.1, schedule={"type": "step", "warmup_epochs": 1})
    sched = optim.learning_rate(spec, 10, 5)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(sched))
    for step in (0, 9, 10, 25):
        assert lr_at(again, step) == pytest.approx(lr_at(sched, step))
    assert math.isclose(lr_at(again, 25), 0.1 * 0.1 ** 1, rel_tol=1e-5)  # staircase: 15 steps = 1 decay


def test_reference_batch_size_scales_the_learning_rates():
    spec = schema_lib.OptimizerConfig.model_validate(
        {"name": "sgd", "learning_rate": 0.1, "reference_batch_size": 256,
         "schedule": {"type": "cosine", "min_learning_rate": 0.01}})
    opt = optim.optimizer(spec, steps_per_epoch=10, epochs=2, batch_size=1024)
    schedule = opt.learning_rate if callable(opt.learning_rate) else opt._learning_rate
    assert float(schedule(0)) == pytest.approx(0.4)
    assert float(schedule(20)) == pytest.approx(0.04)  # the floor is scaled too
    unscaled = optim.optimizer(spec.model_copy(update={"reference_batch_size": None}), 10, 2, 1024)
    assert float(unscaled._learning_rate(0)) == pytest.approx(0.1)
