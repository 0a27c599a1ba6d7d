"""cnnctl.data.check (`cnnctl data check`): per-source reports that count exactly what training
sees, and duplicates found by hashing image bytes."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnctl.data import load as data_lib
from cnnctl.data import check as datacheck
from cnnctl.cli import app
from cnnctl.config.schema import Config
from cnnctl.errors import CnnctlError

runner = CliRunner()


def make_config(data: dict, input_shape=(28, 28, 1), seed: int = 1) -> Config:
    return Config.model_validate({"model": {"input_shape": list(input_shape)}, "data": data,
                                  "train": {"seed": seed}})


def loaded_counts(config: Config) -> dict:
    """Images per class and split as `cnnctl.data.load.load` (training) gives them."""
    splits = data_lib.load(config, input_shape=tuple(config.model.input_shape), label_mode="int")
    return {split: per_class for split, per_class in splits.class_counts.items()}


@pytest.fixture
def shipped():
    """The shipped Fashion-MNIST slice as arrays."""
    path = importlib.resources.files("cnnctl") / "data" / "fashion_mnist_small.npz"
    with path.open("rb") as f, np.load(f) as arrays:
        return {key: arrays[key] for key in arrays.files}


def test_npz_report_shapes_counts_and_pixel_duplicates(tmp_path, shipped):
    x_train, y_train = shipped["x_train"][:50].copy(), shipped["y_train"][:50].copy()
    x_test, y_test = shipped["x_test"][:20].copy(), shipped["y_test"][:20].copy()
    x_test[5], y_test[5] = x_train[7], y_train[7]  # leaked into test
    x_train[10], y_train[10] = x_train[3], (y_train[3] + 1) % 10  # the same image, two labels
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=shipped["class_names"])
    report = datacheck.check(make_config({"source": "npz", "path": str(tmp_path / "d.npz")}))
    names = [str(n) for n in shipped["class_names"]]
    assert report["class_names"] == names and report["source"] == "npz"
    train = report["splits"]["train"]
    assert train["count"] == 50 and train["shape"] == [50, 28, 28] and train["dtype"] == "uint8"
    assert train["classes"] == dict(zip(names, np.bincount(y_train, minlength=10).tolist()))
    assert train["sizes"] == {"28x28": 50} and train["modes"] == {"L": 50}
    assert report["splits"]["test"]["count"] == 20 and report["unreadable"] == []
    assert report["duplicates"] == [
        {"sha256": hashlib.sha256(x_train[7].tobytes()).hexdigest(),
         "paths": ["train[7]", "test[5]"], "splits": ["train", "test"],
         "classes": [names[y_train[7]]]},
        {"sha256": hashlib.sha256(x_train[3].tobytes()).hexdigest(),
         "paths": ["train[3]", "train[10]"], "splits": ["train"],
         "classes": sorted({names[y_train[3]], names[y_train[10]]}, key=names.index)}]
    assert report["warnings"] == [
        "1 image(s) are in more than one split (train/test): validation and test accuracy will "
        "be too optimistic; remove the copies",
        "1 image(s) appear under more than one class, e.g. train[3], train[10]"]
    text = datacheck.format_report(report)
    assert "  array [50, 28, 28] uint8" in text
    assert "  train/test: train[7], test[5]" in text


def test_folder_counts_with_validation_split_are_trainings(cifar_folders, tmp_path):
    root = tmp_path / "train"
    shutil.copytree(cifar_folders / "train", root)
    (root / "cat" / "broken.jpg").write_text("not a picture")
    config = make_config({"source": "folder", "train_dir": str(root),
                          "test_dir": str(cifar_folders / "test"), "validation_split": 0.3},
                         input_shape=(32, 32, 3), seed=4)
    report = datacheck.check(config)
    assert {split: s["classes"] for split, s in report["splits"].items()} == loaded_counts(config)
    assert [s["count"] + s["unreadable"] for s in report["splits"].values()] == [43, 18, 60]
    assert report["unreadable"] == [{"path": str(root / "cat" / "broken.jpg"),
                                     "reason": "not an image (unknown or damaged file format)"}]
    assert report["duplicates"] == []
    assert report["config"] is None  # a Config, not a file


def test_keras_source_counts_are_trainings(fashion_mnist_home):
    config = make_config({"source": "keras", "name": "fashion_mnist", "max_train_samples": 600,
                          "max_test_samples": 100, "validation_split": 0.25})
    report = datacheck.check(config)
    assert {split: s["classes"] for split, s in report["splits"].items()} == loaded_counts(config)
    assert report["splits"]["val"]["shape"] == [150, 28, 28]
    assert report["splits"]["train"]["sizes"] == {"28x28": 450}
    assert report["splits"]["train"]["modes"] == {"L": 450}


def test_cli_json_and_errors(tmp_path, write_yaml):
    config = write_yaml("""
        model: {input_shape: [28, 28, 1], layers: [{type: flatten}, {type: dense, units: 10}]}
        data: {source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 30}
        """)
    result = runner.invoke(app, ["data", "check", str(config), "--json",
                                 "--set", "data.max_test_samples=7"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["config"] == str(config)
    assert (report["splits"]["train"]["count"], report["splits"]["test"]["count"]) == (30, 7)

    result = runner.invoke(app, ["data", "check", str(config), "--set",
                                 "data.path=cnnctl://nope.npz"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "--set: data.path: cnnctl://nope.npz is not shipped with cnnctl; shipped: "
        "cnnctl://fashion_mnist_small.npz"]
    with pytest.raises(CnnctlError, match="the config has no `data:` section"):
        datacheck.check(Config.model_validate({"model": {"input_shape": [8, 8, 1]}}))
