"""Fixtures of the `cnnctl tune` tests: a small searchable config and a finished study of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# `tune:` is line 14 and the first entry of its space line 19: the tests name these lines
TUNE_YAML = """\
model:
  name: tuned
  input_shape: [28, 28, 1]
  layers:
    - {type: conv2d, filters: 8, kernel_size: 3, activation: relu}
    - {type: max_pool2d, pool_size: 2}
    - {type: flatten}
    - {type: dropout, rate: 0.2}
    - {type: dense, units: 10, activation: softmax}
data: {source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 600, max_test_samples: 100, validation_split: 0.2}
optimizer: {name: adam, learning_rate: 0.002}
loss: sparse_categorical_crossentropy
train: {epochs: 2, batch_size: 64, seed: 3, tensorboard: false}
tune:
  trials: 3
  sampler: {name: tpe, seed: 1}
  pruner: none
  space:
    optimizer.learning_rate: {log_uniform: [1.0e-3, 1.0e-2]}
    model.layers[3].rate: {uniform: [0.1, 0.5]}
    train.batch_size: {choice: [32, 64]}
"""


@pytest.fixture(scope="session")
def tune_yaml() -> str:
    """A config of a 1-conv CNN on 600 shipped Fashion-MNIST images (2 epochs, 120 held out for
    validation) with a tune section: 3 trials of TPE over the learning rate, the dropout rate
    and the batch size."""
    return TUNE_YAML


def tune_command(*args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`cnnctl tune ARGS` as a process of its own (Python's `-m cnnctl`), in `cwd`."""
    return subprocess.run([sys.executable, "-m", "cnnctl", "tune", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="session")
def tune_process():
    """tune_process(*args, cwd=DIR) -> the finished `cnnctl tune ARGS` process."""
    return tune_command


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, tune_yaml) -> Path:
    """The study folder of `cnnctl tune` over `tune_yaml`, its 3 trials finished (about 30 s
    on 2 cores). Read it; do not change it."""
    root = tmp_path_factory.mktemp("study")
    (root / "tuned.yaml").write_text(tune_yaml)
    done = tune_command("tuned.yaml", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "studies" / "tuned"
