"""Fast paths and backends (issue "Fast"): every fast-path option trains a model as good as the
default path; the same YAML trains on the TensorFlow, JAX and PyTorch backends, the last two
with TensorFlow not importable; `check` and `--help` never import TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnctl.config import load as config_lib
from cnnctl.use import evaluate
from cnnctl.train import optim
from cnnctl.train import fit as train_lib
from cnnctl.backend import keras

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 0.06  # test accuracy (1,000 images) within this of the default path


@pytest.fixture(scope="module")
def fast_yaml(cnn_yaml) -> str:
    """The config every fast path is compared on: the small CNN with in-model augmentation and
    one-hot labels, 3 epochs on 2,048 of the shipped Fashion-MNIST images."""
    return cnn_yaml(
        name="fast_paths",
        data='{source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 2048}',
        augmentation="{placement: model, layers: [{type: random_translation, height_factor: 0.05, "
                     "width_factor: 0.05}]}",
        loss="categorical_crossentropy",
        train="{epochs: 3, batch_size: 64, seed: 3, tensorboard: false}")


@pytest.fixture(scope="module")
def train(train_yaml, fast_yaml):
    """train(tmp_path, *overrides) -> the metrics of `fast_yaml` (with these `--set` overrides)
    trained into tmp_path/run."""
    return lambda tmp_path, *overrides: train_yaml(fast_yaml, tmp_path / "fast.yaml",
                                                   tmp_path / "run", *overrides)["metrics"]


@pytest.fixture(scope="module")
def default_accuracy(tmp_path_factory, train) -> float:
    accuracy = train(tmp_path_factory.mktemp("default"))["test"]["accuracy"]
    assert accuracy > 0.70, "the default path must learn for the comparisons to mean anything"
    return accuracy


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["train.jit_compile=false"],
    ["train.jit_compile=true", "train.steps_per_execution=8"],
    ["train.mixed_precision=bfloat16"],
    ["train.batch_size=256", "optimizer.reference_batch_size=64"],
    ["augmentation.placement=pipeline"],
    ["optimizer={name: sgd, learning_rate: 0.05, momentum: 0.9, nesterov: true}",
     "loss={name: categorical_crossentropy, label_smoothing: 0.1}"],
], ids=["no_xla", "xla_8_steps_per_call", "bfloat16", "batch_256_lr_scaled", "pipeline_aug",
        "nesterov_label_smoothing"])
def test_fast_path_option_keeps_model_quality(tmp_path, default_accuracy, overrides, train):
    metrics = train(tmp_path, *overrides)
    assert abs(metrics["test"]["accuracy"] - default_accuracy) <= MARGIN, (overrides, metrics["test"])


def test_tta_in_final_metrics_and_eval(tmp_path, train):
    metrics = train(tmp_path, "train.epochs=1", "train.test_time_augmentation=flip")
    assert metrics["test_time_augmentation"] == "flip"
    report, _, _ = evaluate.run(tmp_path / "run")
    assert report["test_time_augmentation"] == "flip"
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    plain, _, _ = evaluate.run(tmp_path / "run", tta="none")
    assert plain["test_time_augmentation"] == "none" and plain["accuracy"] != report["accuracy"]


# --------------------------------------------------------------------------- backends
@pytest.fixture(scope="module")
def without_tensorflow(tmp_path_factory) -> dict:
    """Environment for `python -S`: this venv's site-packages minus TensorFlow (and the packages
    that need it), as on a machine where only JAX or PyTorch is installed."""
    site = Path(keras.__file__).resolve().parents[1]
    shadow = tmp_path_factory.mktemp("site-packages-without-tensorflow")
    for entry in site.iterdir():
        top = entry.name.split("-")[0].split(".")[0].lower()
        if top in ("tensorflow", "tensorboard", "tensorflow_datasets", "tf_keras") \
                or entry.suffix == ".pth":
            continue
        (shadow / entry.name).symlink_to(entry)
    env = {**os.environ, "PYTHONPATH": f"{shadow}{os.pathsep}{ROOT}"}
    probe = subprocess.run([sys.executable, "-S", "-c", "import tensorflow"], env=env,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr
    return env


@pytest.fixture(scope="module")
def tensorflow_run(tmp_path_factory, train) -> dict:
    return train(tmp_path_factory.mktemp("tf"))


@pytest.mark.optional
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_same_yaml_trains_on_each_backend_without_tensorflow(
        backend, tmp_path, without_tensorflow, tensorflow_run, fast_yaml):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (.ci/run installs it)")
    config = tmp_path / "fast.yaml"
    config.write_text(fast_yaml)
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-S", "-m", "cnnctl", "train", str(config), "--run-dir",
                           str(run)], env={**without_tensorflow, "KERAS_BACKEND": backend},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "environment.json").read_text())["backend"] == backend
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    assert abs(metrics["test"]["accuracy"] - tensorflow_run["test"]["accuracy"]) <= MARGIN
    assert (run / "checkpoints" / "best.keras").is_file()


@pytest.mark.optional
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_predict_needs_no_tensorflow(backend, tmp_path, without_tensorflow):
    """`predict` on a JAX- or PyTorch-only machine reads the images with PIL and gives the
    probabilities the TensorFlow backend gave (a run written by 0.1.0, images of its size)."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (.ci/run installs it)")
    fixture = ROOT / "tests" / "fixtures" / "run_0.1.0"
    done = subprocess.run([sys.executable, "-S", "-m", "cnnctl", "predict", "finished", "images",
                           "--json", "--top-k", "10"], cwd=fixture,
                          env={**without_tensorflow, "KERAS_BACKEND": backend},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    now = json.loads(done.stdout)
    then = json.loads((fixture / "predictions.json").read_text())
    for new_row, old_row in zip(now, then, strict=True):
        assert new_row["path"] == old_row["path"]
        probs = {t["label"]: t["prob"] for t in new_row["top"]}
        assert [probs[t["label"]] for t in old_row["top"]] == pytest.approx(
            [t["prob"] for t in old_row["top"]], abs=1e-5)


@pytest.mark.optional
def test_check_and_help_never_import_tensorflow():
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    for args in (["--help"], ["check", str(ROOT / "configs" / "mnist.yaml")]):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "cnnctl", *args],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                    if line.startswith("import time:")]
        assert imported and not [m for m in imported if m.split(".")[0] == "tensorflow"], args
    assert "params: 93,322" in done.stdout


@pytest.mark.optional
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_data_on_device_trains_exactly_as_from_numpy(backend, tmp_path, without_tensorflow,
                                                     fast_yaml):
    """`data.on_device`: batches gathered on the device are the NumPy batches, value for value,
    so two epochs give the same losses and accuracies to the last digit."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (.ci/run installs it)")
    config = tmp_path / "fast.yaml"
    config.write_text(fast_yaml.replace("max_train_samples: 2048", "max_train_samples: 1024, "
                                        "validation_split: 0.25"))
    histories = {}
    for on_device in ("true", "false"):
        run = tmp_path / on_device
        done = subprocess.run(
            [sys.executable, "-S", "-m", "cnnctl", "train", str(config), "--run-dir", str(run),
             "--set", "train.epochs=2", "--set", f"data.on_device={on_device}"],
            env={**without_tensorflow, "KERAS_BACKEND": backend}, capture_output=True,
            text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        rows = (run / "history.csv").read_text().splitlines()
        header = rows[0].split(",")
        histories[on_device] = [{k: v for k, v in zip(header, row.split(","))
                                 if k != "epoch_seconds"} for row in rows[1:]]
    assert len(histories["true"]) == 2 and histories["true"] == histories["false"]


def test_data_on_device_needs_an_array_backend(tmp_path, fast_yaml):
    config = tmp_path / "fast.yaml"
    config.write_text(fast_yaml.replace("max_train_samples: 2048", "max_train_samples: 64, "
                                        "on_device: true"))
    loaded = config_lib.load(config)
    with pytest.raises(train_lib.CnnctlError) as error:
        train_lib.train(loaded, tmp_path / "run", verbose=0)
    line = fast_yaml.splitlines().index(next(l for l in fast_yaml.splitlines() if l.startswith("data:")))
    assert str(error.value) == (
        f"{config}:{line + 1}: data.on_device: true needs the jax or torch backend and an "
        "in-memory data set (the tensorflow backend, and image files decoded in every epoch, feed "
        "from tf.data on the CPU); set KERAS_BACKEND=jax, or on_device: auto")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_weight_ema_is_what_validation_and_checkpoints_see(tmp_path, fast_yaml):
    """optimizer.ema_momentum: the validation figures of an epoch are those of the averaged
    weights, which best.keras / last.keras hold; the backup holds the raw weights beside them."""
    config = tmp_path / "fast.yaml"
    config.write_text(fast_yaml.replace("max_train_samples: 2048", "max_train_samples: 1024, "
                                        "validation_split: 0.25"))
    loaded = config_lib.load(config, ["train.epochs=2", "optimizer.ema_momentum=0.9",
                                      "run.keep=[last, backup]"])  # the backup is looked at below
    run = tmp_path / "run"
    metrics = train_lib.train(loaded, run, verbose=0)["metrics"]
    from cnnctl.data import load as data_lib

    val = data_lib.load(loaded.config, input_shape=(28, 28, 1), label_mode="categorical",
                        splits=("val",)).val

    def val_loss(path: Path) -> float:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
        model.compile(loss=optim.loss(loaded.config))
        return model.evaluate(val, verbose=0)

    logged = metrics["history"]["val_loss"][-1]
    assert val_loss(run / "checkpoints" / "last.keras") == pytest.approx(logged, rel=1e-5)
    raw = val_loss(sorted((run / "backup").glob("ckpt-*.keras"))[-1])
    assert abs(raw - logged) > 1e-3  # the averaged weights are not the raw ones
    default = train_lib.train(config_lib.load(config, ["train.epochs=2"]), tmp_path / "plain",
                              verbose=0)["metrics"]
    assert metrics["test"]["accuracy"] >= default["test"]["accuracy"] - MARGIN


@pytest.mark.optional
def test_folder_at_model_size_loads_without_tensorflow(tmp_path, without_tensorflow, cifar_folders):
    """A folder of 32x32 JPEGs (the CIFAR-10 copy) is decoded by its check: on JAX it needs no
    tf.data, so configs/cifar10_fast.yaml runs where only JAX is installed."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (.ci/run installs it)")
    script = f"""
import json, sys
from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.data import load as data_lib
cfg = schema_lib.Config.model_validate({{
    "model": {{"input_shape": [32, 32, 3]}},
    "data": {{"source": "folder", "train_dir": {str(cifar_folders / "train")!r},
             "test_dir": {str(cifar_folders / "test")!r}}},
    "train": {{"batch_size": 16}}}})
splits = data_lib.load(cfg, input_shape=(32, 32, 3), label_mode="int")
x, y = splits.train[0]
print(json.dumps({{"train": type(splits.train).__name__, "shape": list(x.shape),
                  "counts": splits.counts, "tensorflow": "tensorflow" in sys.modules}}))
"""
    done = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True,
                          env={**without_tensorflow, "KERAS_BACKEND": "jax"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "train": "Stream", "shape": [16, 32, 32, 3], "counts": {"train": 60, "val": 0, "test": 60},
        "tensorflow": False}
