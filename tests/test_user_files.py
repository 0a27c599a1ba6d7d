"""cnnctl.user_files and its users: a config or label file that is a device, a FIFO or a folder
is refused before it is opened, one over the size limit before it is read; npz labels out of
range are refused before the class names are sized by them."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import pytest

from cnnctl import user_files
from cnnctl.config import load as config_lib
from cnnctl.data import csv_source
from cnnctl.errors import CnnctlError, ConfigValueError

fifo_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


def run_cnnctl(cwd, *args: str) -> subprocess.CompletedProcess:
    # a timeout: a FIFO opened for reading without a writer would block forever
    return subprocess.run([sys.executable, "-m", "cnnctl", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@fifo_only
def test_check_refuses_a_fifo_config_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")
    result = run_cnnctl(tmp_path, "check", "pipe.yaml")
    assert (result.returncode, result.stderr) == (
        2, "pipe.yaml: not a regular file (a FIFO); give a YAML config file\n")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_check_refuses_dev_zero(tmp_path):
    result = run_cnnctl(tmp_path, "check", "/dev/zero")
    assert (result.returncode, result.stderr) == (
        2, "/dev/zero: not a regular file (a character device); give a YAML config file\n")


def test_a_config_over_the_limit_is_refused_unread(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(50 * user_files.MiB)  # sparse: 50 MiB without writing them
    with pytest.raises(CnnctlError) as e:
        config_lib.load(big)
    assert str(e.value) == (f"{big}: 50.0 MiB, more than a config file can be (1 MiB); "
                            "give the YAML config")
    result = run_cnnctl(tmp_path, "train", "big.yaml")
    assert (result.returncode, result.stderr) == (
        2, "big.yaml: 50.0 MiB, more than a config file can be (1 MiB); give the YAML config\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.yaml"]


def test_a_config_folder_is_refused(tmp_path):
    with pytest.raises(CnnctlError) as e:
        config_lib.load(tmp_path)
    assert str(e.value) == f"{tmp_path}: not a regular file (a folder); give a YAML config file"


def test_a_config_at_the_limit_is_read_with_its_newlines(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"model: {}\r\n" + b"#" * (config_lib.MAX_CONFIG_BYTES - 12) + b"\n")
    assert config.stat().st_size == config_lib.MAX_CONFIG_BYTES
    with pytest.raises(CnnctlError) as e:  # read whole (it is a bad config, but not too big)
        config_lib.load(config)
    assert "more than" not in str(e.value) and "c.yaml:1" in str(e.value)


def test_read_bytes_reads_at_most_the_limit(tmp_path):
    file = tmp_path / "f"
    file.write_bytes(b"x" * 10)
    assert user_files.read_bytes(file, 10) == b"x" * 10
    with pytest.raises(user_files.UnfitFile) as e:
        user_files.read_bytes(file, 9, "a thing")
    assert (e.value.size, e.value.kind) == (10, None)
    assert e.value.reason == "10 bytes, more than a thing can be (9 bytes)"
    with pytest.raises(FileNotFoundError):
        user_files.read_bytes(tmp_path / "missing", 10)


@fifo_only
def test_a_fifo_label_csv_is_refused(tmp_path):
    os.mkfifo(tmp_path / "labels.csv")
    data = types.SimpleNamespace(delimiter=None, path_column="path", label_column="label")
    with pytest.raises(ConfigValueError) as e:
        csv_source.read_rows(str(tmp_path / "labels.csv"), data, "data.train_csv", None)
    assert (e.value.key, e.value.detail) == (
        "data.train_csv", f"{tmp_path}/labels.csv: not a regular file (a FIFO); give a CSV file "
                          "with a header row (path,label) and one row per image")


# --------------------------------------------------------------------------- npz labels
NPZ_CONFIG = """\
model:
  input_shape: [6, 6, 1]
  layers:
    - {type: flatten}
    - {type: dense, units: 2, activation: softmax}
data: {source: npz, path: labels.npz}
train: {epochs: 1, batch_size: 4}
"""


@pytest.mark.parametrize("dtype, bad, shown", [
    (np.int64, 2**40, "1099511627776"), (np.int64, -1, "-1"), (np.float32, 1.5, "1.5"),
    (np.float64, np.nan, "nan"), (np.int64, 100_000, "100000")])
def test_train_refuses_npz_labels_out_of_range(tmp_path, dtype, bad, shown):
    y = np.zeros(8, dtype)
    y[3], y[5] = bad, bad  # the first bad index is named
    np.savez(tmp_path / "labels.npz", x_train=np.zeros((8, 6, 6, 1), np.uint8), y_train=y,
             x_test=np.zeros((2, 6, 6, 1), np.uint8), y_test=np.zeros(2, np.int64))
    (tmp_path / "c.yaml").write_text(NPZ_CONFIG)
    result = run_cnnctl(tmp_path, "train", "c.yaml")
    assert (result.returncode, result.stderr) == (
        2, f"c.yaml:6: data.path: labels.npz: y_train[3] is {shown}; labels must be whole class "
           "indices 0..99999\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "labels.npz"]  # no run


def test_whole_float_npz_labels_are_class_indices(tmp_path, load_splits):
    np.savez(tmp_path / "f.npz", x_train=np.zeros((6, 5, 5), np.uint8),
             y_train=np.array([0, 1, 2, 0, 1, 2], np.float32))
    splits = load_splits({"source": "npz", "path": str(tmp_path / "f.npz")}, input_shape=(5, 5, 1))
    assert splits.class_names == ["0", "1", "2"]
    assert splits.class_counts["train"] == {"0": 2, "1": 2, "2": 2}
