"""Unbalanced classes: `train.class_weight`, `data.sampling: balanced` (cnnctl.data.sampling,
the tf.data and in-memory streams), balanced_accuracy / macro_f1 (cnnctl.train.class_metrics,
metrics.json, `cnnctl eval`, checkpoint_monitor), and an experiment on unbalanced CIFAR-10."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cnnctl.backend import keras
from cnnctl.config import load as config_lib
from cnnctl.config import schema
from cnnctl.data import arrays, sampling, sources
from cnnctl.data import load as data_lib
from cnnctl.errors import ConfigError
from cnnctl.train import class_metrics, class_weights
from cnnctl.use import evaluate

SHIPPED = Path(data_lib.__file__).parent / "fashion_mnist_small.npz"
NAMES = ["shirt", "trouser", "sneaker"]  # Fashion-MNIST classes 0, 1 and 7
COUNTS = (96, 24, 8)  # training images of each: 128, four batches of 32


@pytest.fixture(scope="module")
def unbalanced_npz(tmp_path_factory) -> Path:
    """96 / 24 / 8 training images of three Fashion-MNIST classes, 30 test images of each."""
    shipped = np.load(SHIPPED)
    x, y, xt, yt = (shipped[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    take = lambda labels, c, n: np.flatnonzero(labels == c)[:n]
    train = np.concatenate([take(y, c, n) for c, n in zip((0, 1, 7), COUNTS)])
    test = np.concatenate([take(yt, c, 30) for c in (0, 1, 7)])
    relabel = {0: 0, 1: 1, 7: 2}
    path = tmp_path_factory.mktemp("unbalanced") / "unbalanced.npz"
    np.savez(path, x_train=x[train], y_train=np.array([relabel[v] for v in y[train]], np.uint8),
             x_test=xt[test], y_test=np.array([relabel[v] for v in yt[test]], np.uint8),
             class_names=np.array(NAMES))
    return path


def small_yaml(npz: Path, data: str = "", train: str = "", metrics: str = "[accuracy]") -> str:
    """A tiny CNN on the unbalanced set; line 7 is `data:`, line 9 `train:`."""
    return f"""model:
  input_shape: [28, 28, 1]
  layers:
    - {{type: conv2d, filters: 8, kernel_size: 3, activation: relu}}
    - {{type: global_avg_pool2d}}
    - {{type: dense, units: 3, activation: softmax}}
data: {{source: npz, path: "{npz}"{data}}}
metrics: {metrics}
train: {{batch_size: 32, seed: 5, tensorboard: false{train}}}
"""


# --------------------------------------------------------------------------- class weights
def test_auto_weights_are_inverse_frequency_averaging_one_over_the_images():
    counts = dict(zip(NAMES, COUNTS))
    weights = class_weights.resolve("auto", counts)
    assert weights == pytest.approx({0: 128 / (3 * 96), 1: 128 / (3 * 24), 2: 128 / (3 * 8)})
    # each class weighs the same in all, and the mean weight of a training image is 1
    assert {round(weights[i] * n, 9) for i, n in enumerate(COUNTS)} == {round(128 / 3, 9)}
    assert sum(weights[i] * n for i, n in enumerate(COUNTS)) / sum(COUNTS) == pytest.approx(1.0)


def test_auto_weights_leave_a_class_without_images_at_one():
    weights = class_weights.resolve("auto", {"a": 30, "b": 0, "c": 10})
    assert weights == pytest.approx({0: 40 / 60, 1: 1.0, 2: 40 / 20})


def test_weights_by_name_and_unnamed_classes_weigh_one():
    assert class_weights.resolve({"sneaker": 3.5}, dict(zip(NAMES, COUNTS))) == {
        0: 1.0, 1: 1.0, 2: 3.5}
    assert class_weights.resolve(None, dict(zip(NAMES, COUNTS))) is None


def test_unknown_class_name_is_a_located_config_error(unbalanced_npz, tmp_path):
    from cnnctl.train import fit

    config = tmp_path / "weights.yaml"
    config.write_text(small_yaml(unbalanced_npz, train=", class_weight: {snekaer: 4}"))
    with pytest.raises(ConfigError) as info:
        fit.train(config_lib.load(config), tmp_path / "run", verbose=0)
    assert str(info.value) == (
        f"{config}:9: train.class_weight.snekaer: no class 'snekaer' in the training data (did "
        "you mean 'sneaker'?); its classes are shirt, trouser, sneaker")
    assert not (tmp_path / "run").exists()


def test_cnnctl_check_finds_an_unknown_class_and_a_misspelt_monitor(unbalanced_npz, tmp_path,
                                                                    cnnctl):
    """Before any training: the .npz's class names are known without reading its images."""
    config = tmp_path / "checked.yaml"
    config.write_text(small_yaml(unbalanced_npz, train=", class_weight: {trousers: 2}"))
    result = cnnctl("check", config)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"{config}:9: train.class_weight.trousers: no class 'trousers' in the training data (did "
        "you mean 'trouser'?); its classes are shirt, trouser, sneaker")
    config.write_text(small_yaml(unbalanced_npz, train=", checkpoint_monitor: val_balanced_acc"))
    result = cnnctl("check", config)
    assert result.exit_code == 2
    assert (f"{config}:9: train.checkpoint_monitor: 'val_balanced_acc' is not a figure this run "
            "logs (did you mean 'val_balanced_accuracy'?)") in result.stderr
    config.write_text(small_yaml(unbalanced_npz, train=", class_weight: {trouser: 2}, "
                                                       "checkpoint_monitor: val_macro_f1"))
    assert cnnctl("check", config).exit_code == 0


@pytest.mark.parametrize("value, message", [
    ("balanced", "must be auto or a mapping {class name: weight} (got 'balanced')"),
    ("[2, 1]", "must be auto or a mapping {class name: weight} (got [2, 1])"),
    ("{shirt: 0}", "the weight of class 'shirt' must be a number above 0 (got 0)"),
    ("{shirt: .inf}", "the weight of class 'shirt' must be a number above 0 (got inf)"),
])
def test_bad_class_weight_values_are_config_errors(config_errors, small_model_yaml, value, message):
    assert config_errors(small_model_yaml + f"train:\n  class_weight: {value}\n") == [
        f"8: train.class_weight: {message}"]


def test_sampling_takes_none_or_balanced(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml + "data:\n  source: keras\n  name: mnist\n"
                         "  sampling: balance\n") == [
        "10: data.sampling: must be one of 'none' or 'balanced' (did you mean 'balanced'?) "
        "(got 'balance')"]


# --------------------------------------------------------------------------- balanced sampler
def members(counts=COUNTS) -> list[np.ndarray]:
    labels = np.repeat(np.arange(len(counts)), counts)
    return [np.flatnonzero(labels == c) for c in range(len(counts))], labels


def test_balanced_epoch_draws_each_class_equally_often():
    groups, labels = members()
    order = sampling.balanced_order(groups, len(labels), seed=5, epoch=0)
    assert len(order) == 128
    assert sorted(np.bincount(labels[order]).tolist()) == [42, 43, 43]
    # the 8 minority images repeat 5 or 6 times each; 43 of the 96 majority ones are drawn once
    minority = np.bincount(order[labels[order] == 2], minlength=128)[groups[2]]
    assert set(minority.tolist()) <= {5, 6} and minority.sum() == np.bincount(labels[order])[2]
    majority = np.bincount(order, minlength=128)[groups[0]]
    assert set(majority.tolist()) <= {0, 1}


def test_balanced_epochs_depend_on_seed_and_epoch_only():
    groups, labels = members()
    epoch = lambda seed, e: sampling.balanced_order(groups, len(labels), seed, e)
    assert np.array_equal(epoch(5, 3), epoch(5, 3))
    assert not np.array_equal(epoch(5, 3), epoch(5, 4))
    assert not np.array_equal(epoch(5, 3), epoch(6, 3))
    order = sampling.epoch_order("balanced", labels, seed=5)
    assert np.array_equal(order(4), epoch(5, 4)) and np.array_equal(order(3), epoch(5, 3))
    assert sampling.epoch_order("none", labels, seed=5) is None


def _batches(stream, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if hasattr(stream, "take"):  # tf.data
        return [(np.asarray(x), np.asarray(y)) for x, y in stream.take(steps).as_numpy_iterator()]
    return [tuple(np.asarray(keras.ops.convert_to_numpy(a)) for a in stream[i])
            for i in range(steps)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def _check_stream(train_from, spe: int) -> None:
    """Equal class counts in every epoch; (epoch, step) gives the batches of the epoch from
    that step on, as an uninterrupted stream has them."""
    whole = _batches(train_from(0, 0), 3 * spe)
    for e in range(3):
        labels = np.concatenate([y for _, y in whole[e * spe:(e + 1) * spe]])
        assert sorted(np.bincount(labels, minlength=3).tolist()) == [42, 43, 43]
    assert not np.array_equal(whole[0][1], whole[spe][1])  # another draw each epoch
    _assert_same(_batches(train_from(1, 2), 2 * spe - 2), whole[spe + 2:])
    _assert_same(_batches(train_from(2, 0), spe), whole[2 * spe:])


def test_tf_data_stream_is_balanced_and_resumes_exactly(unbalanced_npz, tmp_path):
    config = tmp_path / "sampled.yaml"
    config.write_text(small_yaml(unbalanced_npz, data=", sampling: balanced"))
    cfg = config_lib.load(config).config
    splits = data_lib.load(cfg, input_shape=(28, 28, 1), label_mode="int", splits=("train",))
    assert splits.steps_per_epoch == 4  # as many steps as a plain epoch of 128 images
    _check_stream(splits.train_from, 4)


def test_in_memory_stream_is_balanced_and_resumes_exactly():
    """The `keras.utils.PyDataset` stream of the jax and torch backends, built directly."""
    _, labels = members()
    images = np.arange(128, dtype=np.uint8).reshape(128, 1, 1, 1) * np.ones((1, 2, 2, 1), np.uint8)
    train = schema.TrainConfig(batch_size=32, seed=5)
    order = sampling.epoch_order("balanced", labels, seed=5)
    train_from = arrays.train_stream(sources.Part(labels, images=images), 3, "int", train, [],
                                     order=order)
    _check_stream(train_from, 4)
    # the same draws as the tf.data stream: the images of epoch 1 are the indices of its order
    first = _batches(train_from(1, 0), 4)
    assert np.array_equal(np.concatenate([x[:, 0, 0, 0] for x, _ in first]).astype(int), order(1))


def test_a_resumed_run_equals_an_uninterrupted_one(unbalanced_npz, tmp_path):
    """Balanced sampling, auto class weights and a val_balanced_accuracy checkpoint monitor,
    interrupted (SIGINT) in the middle of epoch 2 and resumed: bit-identical checkpoints."""
    import os
    import signal

    from cnnctl.train import fit

    config = tmp_path / "resumed.yaml"
    config.write_text(small_yaml(
        unbalanced_npz, data=", sampling: balanced, validation_split: 0.25",
        train=", epochs: 2, deterministic: true, class_weight: auto, "
              "checkpoint_monitor: val_balanced_accuracy"))
    fit.train(config_lib.load(config), tmp_path / "straight", verbose=0)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 0:
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(fit.Interrupted, match=r"at epoch 2, step 2 of 3"):
        fit.train(config_lib.load(config), tmp_path / "killed", verbose=0,
                  extra_callbacks=[Interrupt()])
    result = fit.train(config_lib.load(config), resume=tmp_path / "killed", verbose=0)
    assert result["resumed_from"] == 5  # 3 steps of epoch 1, 2 of epoch 2
    for name in ("last.keras", "best.keras"):
        load = lambda run: keras.saving.load_model(run / "checkpoints" / name,
                                                   compile=False).get_weights()
        for x, y in zip(load(tmp_path / "straight"), load(tmp_path / "killed"), strict=True):
            np.testing.assert_array_equal(x, y)
    ours, theirs = (json.loads((tmp_path / run / "metrics.json").read_text())
                    for run in ("killed", "straight"))
    assert ours["test"] == theirs["test"] and "balanced_accuracy" in ours["test"]


# --------------------------------------------------------------------------- metrics
TRUE = np.array([0, 0, 0, 0, 1, 1, 2, 2])
PRED = np.array([0, 0, 0, 1, 1, 0, 0, 0])
# recall 3/4, 1/2, 0 -> balanced 5/12; F1 = 2 TP / (images + predictions): class 0
# 2*3/(4+6), class 1 2*1/(2+2), class 2 0
BALANCED, MACRO_F1 = 5 / 12, (6 / 10 + 2 / 4 + 0) / 3


def test_class_metrics_on_a_known_case():
    probs = np.eye(3, dtype=np.float32)[PRED] * 0.8 + 0.2 / 3
    for cls, expected in ((class_metrics.BalancedAccuracy, BALANCED),
                          (class_metrics.MacroF1, MACRO_F1)):
        for labels in (TRUE, np.eye(3, dtype=np.float32)[TRUE]):  # int and one-hot
            metric = cls(3)
            metric.update_state(labels[:5], probs[:5])  # two batches, summed
            metric.update_state(labels[5:], probs[5:])
            assert float(metric.result()) == pytest.approx(expected)
    report = evaluate.report_from_predictions(TRUE, probs, NAMES)
    assert report["balanced_accuracy"] == pytest.approx(BALANCED)
    assert report["macro_f1"] == pytest.approx(MACRO_F1)
    assert class_metrics.balanced_accuracy(report["confusion_matrix"]) == pytest.approx(BALANCED)


def test_class_metrics_of_a_one_unit_sigmoid_output():
    true, out = np.array([0, 0, 0, 1]), np.array([[0.1], [0.7], [0.2], [0.9]], np.float32)
    metric = class_metrics.BalancedAccuracy(1)
    metric.update_state(true.reshape(-1, 1).astype(np.float32), out)
    assert float(metric.result()) == pytest.approx((2 / 3 + 1) / 2)
    logits = class_metrics.MacroF1(1, from_logits=True)
    logits.update_state(true, np.log(out / (1 - out)))
    assert float(logits.result()) == pytest.approx((2 * 2 / (3 + 2) + 2 * 1 / (1 + 2)) / 2)


def test_monitors_are_checked_against_the_logged_figures(unbalanced_npz, tmp_path):
    from cnnctl.train import fit

    config = tmp_path / "monitor.yaml"
    config.write_text(small_yaml(unbalanced_npz, train=", checkpoint_monitor: val_macro_f2"))
    with pytest.raises(ConfigError) as info:
        fit.train(config_lib.load(config), tmp_path / "run", verbose=0)
    assert str(info.value) == (
        f"{config}:9: train.checkpoint_monitor: 'val_macro_f2' is not a figure this run logs (did "
        "you mean 'val_macro_f1'?); use one of loss, accuracy, balanced_accuracy, macro_f1 (the "
        "metrics of `metrics:`, and the class metrics), with val_ in front for the validation "
        "figure")
    config.write_text(small_yaml(unbalanced_npz, train=", early_stopping: {monitor: val_auc}"))
    with pytest.raises(ConfigError, match=r":9: train\.early_stopping\.monitor: 'val_auc' is not"):
        fit.train(config_lib.load(config), tmp_path / "run", verbose=0)


def test_metrics_json_and_eval_carry_balanced_accuracy_and_macro_f1(unbalanced_npz, tmp_path,
                                                                    train_yaml):
    """checkpoint_monitor: val_macro_f1 (not listed in metrics) is computed each epoch, picks
    best.keras at its highest, and the final figures equal `cnnctl eval`'s from predictions."""
    text = small_yaml(unbalanced_npz, data=", validation_split: 0.25",
                      train=", epochs: 3, checkpoint_monitor: val_macro_f1, class_weight: auto",
                      metrics="[accuracy, balanced_accuracy]")
    result = train_yaml(text, tmp_path / "f1.yaml", tmp_path / "run")
    run = result["run_dir"]
    metrics = json.loads((run / "metrics.json").read_text())
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert {"balanced_accuracy", "macro_f1", "val_balanced_accuracy", "val_macro_f1"} <= set(rows[0])
    assert set(metrics["test"]) >= {"accuracy", "balanced_accuracy", "macro_f1", "loss"}
    best = max(float(r["val_macro_f1"]) for r in rows)
    assert metrics["val"]["macro_f1"] == pytest.approx(best, abs=1e-6)
    report, names, _ = evaluate.run(run)
    assert names == NAMES and report["num_samples"] == 90
    for key in ("balanced_accuracy", "macro_f1", "accuracy"):
        assert metrics["test"][key] == pytest.approx(report[key], abs=1e-6), key
    recalls = [report["per_class"][n]["recall"] for n in NAMES]
    assert report["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    saved = json.loads(next(run.glob("eval_test.json")).read_text())
    assert saved["balanced_accuracy"] == pytest.approx(report["balanced_accuracy"])


# --------------------------------------------------------------------------- the experiment
CLASSES, MINORITY = ("airplane", "automobile", "frog", "ship"), ("automobile", "frog")


@pytest.fixture(scope="module")
def unbalanced_cifar(tmp_path_factory, cifar_jpgs) -> Path:
    """200 training images of airplane and ship, 20 (10%) of automobile and frog; 100 test
    images of each."""
    def count(split: str, c: str) -> int:
        if c not in CLASSES:
            return 0
        return 100 if split == "test" else 20 if c in MINORITY else 200

    return cifar_jpgs(tmp_path_factory.mktemp("cifar"), count)


CIFAR_YAML = """model:
  input_shape: [32, 32, 3]
  layers:
    - {{type: conv2d, filters: 16, kernel_size: 3, activation: relu}}
    - {{type: max_pool2d, pool_size: 2}}
    - {{type: conv2d, filters: 32, kernel_size: 3, activation: relu}}
    - {{type: max_pool2d, pool_size: 2}}
    - {{type: flatten}}
    - {{type: dense, units: 4, activation: softmax}}
data: {{source: folder, train_dir: {root}/train, test_dir: {root}/test}}
train: {{epochs: 10, batch_size: 32, seed: {seed}, tensorboard: false, checkpoint_monitor: loss}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])
def test_class_weight_and_balanced_sampling_raise_minority_recall(unbalanced_cifar, tmp_path,
                                                                  train_yaml, seed):
    """Same seed, same 10 epochs: the plain run all but ignores the two 10% classes; auto class
    weights and balanced sampling each raise their recall and the balanced accuracy."""
    text = CIFAR_YAML.format(root=unbalanced_cifar, seed=seed)
    figures = {}
    for name, overrides in (("plain", []), ("class_weight", ["train.class_weight=auto"]),
                            ("sampling", ["data.sampling=balanced"])):
        run = train_yaml(text, tmp_path / f"{name}.yaml", tmp_path / name, *overrides)["run_dir"]
        report, _, _ = evaluate.run(run)
        figures[name] = (report["balanced_accuracy"],
                         np.mean([report["per_class"][c]["recall"] for c in MINORITY]))
    print(figures)
    plain_balanced, plain_minority = figures["plain"]
    for name in ("class_weight", "sampling"):
        balanced, minority = figures[name]
        assert minority > plain_minority + 0.15, (name, figures)
        assert balanced > plain_balanced + 0.08, (name, figures)
