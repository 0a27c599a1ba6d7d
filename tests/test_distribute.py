"""Scale out (issue "Scale out"): `train.distribute` trains the same YAML over several devices,
mirrored on TensorFlow (two logical CPU devices here) and data_parallel on JAX (two host
devices); multi_worker is refused with the reason."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnctl import config as config_lib
from cnnctl import distribute
from cnnctl import evaluate
from cnnctl import train as train_lib
from cnnctl.errors import CnnctlError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
model:
  name: spread
  input_shape: [28, 28, 1]
  layers:
    - {type: conv2d, filters: 16, kernel_size: 3, activation: relu}
    - {type: max_pool2d, pool_size: 2}
    - {type: flatten}
    - {type: dense, units: 10, activation: softmax}
data: {source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 1001, max_test_samples: 999, validation_split: 0.25}
optimizer: {name: adam, learning_rate: 0.002}
loss: categorical_crossentropy
train: {epochs: 3, batch_size: 32, seed: 3, tensorboard: false}
"""


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "spread.yaml"
    path.write_text(CONFIG)
    return path


def line_of(key: str) -> int:
    return next(i for i, line in enumerate(CONFIG.splitlines(), 1) if line.startswith(key))


def run_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_mirrored_on_two_logical_cpu_devices(config, tmp_path):
    run = tmp_path / "run"
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cnnctl import config as config_lib, train as train_lib
loaded = config_lib.load({str(config)!r}, ["train.distribute=mirrored", "train.scale_lr_with_replicas=true"])
train_lib.train(loaded, {str(run)!r}, verbose=2)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("distribute: mirrored, 2 replicas on /device:CPU:0, /device:CPU:1 (global batch 64, "
            "learning rates x2)" in done.stdout)
    spread = run_json(run / "environment.json")["distribute"]
    assert spread["strategy"] == "mirrored" and spread["replicas"] == 2
    assert spread["global_batch_size"] == 64
    metrics = run_json(run / "metrics.json")
    losses = metrics["history"]["loss"]
    assert metrics["epochs"] == 3 and losses[0] > losses[1] > losses[2]
    assert "12/12" in done.stdout  # 751 training images / 64 a step
    assert metrics["test"]["accuracy"] > 0.6


@pytest.mark.slow
def test_data_parallel_on_two_jax_devices_evaluates_every_image(config, tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (.ci/run installs it)")
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "cnnctl", "train", str(config), "--run-dir", str(run),
         "--set", "train.distribute=data_parallel"], capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax",
             "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distribute: data_parallel, 2 replicas on cpu:0, cpu:1 (global batch 64)" in done.stdout
    # 751 training images: 11 full steps of 64 and a last one cut from 47 to 46 images
    assert "12/12" in done.stdout
    spread = run_json(run / "environment.json")["distribute"]
    assert spread["replicas"] == 2 and spread["devices"] == ["cpu:0", "cpu:1"]
    metrics = run_json(run / "metrics.json")
    assert metrics["test"]["accuracy"] > 0.6
    # the final figures cover all 999 test images (the odd last one too), as `cnnctl eval` does
    report, _, _ = evaluate.run(run)
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1.5 / 999)
    assert sum(map(sum, report["confusion_matrix"])) == 999


def test_multi_worker_is_refused_with_the_reason(config, tmp_path):
    loaded = config_lib.load(config, ["train.distribute=multi_worker"])
    with pytest.raises(CnnctlError) as error:
        train_lib.train(loaded, tmp_path / "run", verbose=0)
    import keras

    assert str(error.value) == (
        f"--set: train.distribute: multi_worker (tf.distribute.MultiWorkerMirroredStrategy) "
        f"cannot train with Keras {keras.__version__}: model.fit fails on the per-replica values "
        "of that strategy (keras-team/keras#20585); use mirrored for the GPUs of one machine, or "
        "data_parallel on the jax backend")
    assert not (tmp_path / "run").exists()


def test_data_parallel_needs_jax(config, tmp_path):
    config.write_text(CONFIG.replace("seed: 3,", "seed: 3, distribute: data_parallel,"))
    with pytest.raises(CnnctlError) as error:
        train_lib.train(config_lib.load(config), tmp_path / "run", verbose=0)
    assert str(error.value) == (
        f"{config}:{line_of('train:')}: train.distribute: data_parallel is "
        "keras.distribution.DataParallel and needs the jax backend (this is tensorflow); use "
        "mirrored on tensorflow, or KERAS_BACKEND=jax")


def test_scaled_learning_rate_and_reference_batch_size_exclude_each_other(config, tmp_path):
    loaded = config_lib.load(config, ["train.distribute=mirrored", "train.scale_lr_with_replicas=true",
                                      "optimizer.reference_batch_size=32"])
    with pytest.raises(CnnctlError, match="optimizer.reference_batch_size already scales the "
                                          "learning rates by the global batch size"):
        train_lib.train(loaded, tmp_path / "run", verbose=0)


def test_plan_scales_batch_and_learning_rates_by_replicas(config):
    cfg = config_lib.load(config, ["train.scale_lr_with_replicas=true",
                                   "optimizer.schedule={type: cosine, min_learning_rate: 0.0001}"]).config
    plan = distribute.Plan("mirrored", 4, [], None)
    scaled = plan.effective(cfg)
    assert scaled.train.batch_size == 128 and cfg.train.batch_size == 32
    assert scaled.optimizer.learning_rate == pytest.approx(0.008)
    assert scaled.optimizer.schedule.min_learning_rate == pytest.approx(0.0004)
    kept = plan.effective(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"scale_lr_with_replicas": False})}))
    assert kept.train.batch_size == 128 and kept.optimizer.learning_rate == pytest.approx(0.002)
