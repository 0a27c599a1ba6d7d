"""Bad configs, arguments and model files through the real `cnnctl` command line: each gives one
clear line on stderr, exit code 2, no traceback, and nothing that looks like a run.

Config mistakes as `cnnctl check` sees them are in test_cli.py, their wording in
config/test_wording.py and config/test_yaml_source.py, and `load_model` alone in
use/test_trained.py; here the same mistakes go through `cnnctl train`, `eval` and `predict`,
which must stop before writing anything.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app

@pytest.fixture(scope="module")
def valid(cnn_yaml) -> str:
    """A tiny CNN on the shipped Fashion-MNIST slice; the feature maps are 26, 13, 11, 5 and 3
    wide. The cases name its lines: layer i is on line 5 + i, data on lines 13-17 (path on 15,
    max_test_samples on 17), optimizer 18, train 20."""
    return cnn_yaml(
        comment="bad-input tests: a tiny CNN on the shipped Fashion-MNIST slice",
        name=None,
        layers=["{type: conv2d, filters: 4, kernel_size: 3, activation: relu}",
                "{type: max_pool2d, pool_size: 2}",
                "{type: conv2d, filters: 4, kernel_size: 3, activation: relu}",
                "{type: max_pool2d, pool_size: 2}",
                "{type: conv2d, filters: 4, kernel_size: 3, activation: relu}",
                "{type: flatten}",
                "{type: dropout, rate: 0.2}",
                "{type: dense, units: 10, activation: softmax}"],
        data={"source": "npz", "path": '"cnnctl://fashion_mnist_small.npz"',
              "max_train_samples": 256, "max_test_samples": 64},
        optimizer="{name: adam, learning_rate: 0.001}", train="{epochs: 1, batch_size: 64}")

runner = CliRunner()


@pytest.fixture(scope="module")
def edit(valid):
    """edit(old, new) -> `valid` with one mistake put in (`old` must occur exactly once)."""

    def edit(old: str, new: str) -> str:
        assert valid.count(old) == 1, old
        return valid.replace(old, new)

    return edit


def train(tmp_path: Path, text: str, *args: str):
    """`cnnctl train` of `text` into tmp_path/run: (result, config file, run directory)."""
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    run = tmp_path / "run"
    return runner.invoke(app, ["train", str(config), "--run-dir", str(run), *args]), config, run


def assert_refused(result, line: str) -> None:
    """Exit 2 with exactly `line` on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""
    assert "Traceback" not in result.output


def assert_no_run(root: Path) -> None:
    """Nothing under `root` that looks like a run: no results and no checkpoints."""
    assert not list(root.rglob("metrics.json"))
    assert not list(root.rglob("checkpoints/*.keras"))
    assert not list(root.rglob("config.yaml"))


def test_the_valid_config_is_valid(tmp_path, valid):
    """Every case below is `valid` with one mistake, so each error comes from that mistake."""
    config = tmp_path / "good.yaml"
    config.write_text(valid)
    result = runner.invoke(app, ["check", str(config)])
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- config files
BAD_CONFIGS = {
    "yaml syntax error": (
        "    - {type: flatten}", "    - {type: flatten",
        "10: YAML syntax error: the `{` opened on this line is not closed (expected ',' or '}', "
        "but got '{' on line 11)"),
    "duplicate key": (
        "train: {epochs: 1, batch_size: 64}", "train: {epochs: 1, batch_size: 64, epochs: 2}",
        "20: train.epochs: duplicate key 'epochs' (first given on line 20); keep only one"),
    "unknown key": (
        "{name: adam, learning_rate: 0.001}", "{name: adam, learnig_rate: 0.001}",
        "18: optimizer.learnig_rate: unknown key 'learnig_rate' (did you mean 'learning_rate'?); "
        "allowed keys: clipnorm, clipvalue, ema_momentum, learning_rate, momentum, name, "
        "nesterov, reference_batch_size, schedule, weight_decay"),
    "wrong type": (
        "epochs: 1,", 'epochs: "ten",',
        "20: train.epochs: must be a whole number (got 'ten')"),
    "negative learning rate": (
        "learning_rate: 0.001", "learning_rate: -0.001",
        "18: optimizer.learning_rate: must be > 0.0 (got -0.001)"),
    "dropout above 1": (
        "rate: 0.2", "rate: 1.5",
        "11: model.layers[6].rate: must be < 1.0 (got 1.5)"),
    "kernel larger than its input": (
        "    - {type: flatten}",  # a 5x5 window on the 3x3 map of the last conv
        "    - {type: conv2d, filters: 4, kernel_size: 5}\n    - {type: flatten}",
        "10: model.layers[5]: conv2d 'conv2d_3' does not fit its input of shape (3, 3, 4): "
        "output height (W - K + 2P) / S + 1 = (3 - 5 + 2*0) / 1 + 1 = -1 < 1 (K = 5, padding valid); "
        "use padding: same, a smaller window, or fewer downsampling layers before it"),
}


@pytest.mark.parametrize("kind", BAD_CONFIGS)
def test_train_refuses_a_bad_config_before_writing_anything(tmp_path, kind, edit):
    old, new, error = BAD_CONFIGS[kind]
    result, config, run = train(tmp_path, edit(old, new))
    assert_refused(result, f"{config}:{error}")
    assert not run.exists()
    assert_no_run(tmp_path)


def test_train_bad_set_value(tmp_path, valid):
    result, _, run = train(tmp_path, valid, "--set", "train.epochs=ten")
    assert_refused(result, "--set: train.epochs: must be a whole number (got 'ten')")
    assert not run.exists()


def test_train_config_file_that_does_not_exist(tmp_path):
    config = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "run")])
    assert_refused(result, f"{config}: config file not found; check the path")
    assert_no_run(tmp_path)


# --------------------------------------------------------------------------- data and run paths
def test_train_folder_that_does_not_exist(tmp_path, edit):
    folder = tmp_path / "no" / "such" / "train"
    text = edit('  source: npz\n  path: "cnnctl://fashion_mnist_small.npz"',
                f"  source: folder\n  train_dir: {folder}")
    result, config, run = train(tmp_path, text)
    assert_refused(result, f"{config}:15: data.train_dir: folder {folder} not found; give a "
                           "folder with one subfolder of images per class")
    assert not run.exists()


def test_train_npz_that_does_not_exist_names_the_current_directory(tmp_path, monkeypatch, edit):
    monkeypatch.chdir(tmp_path)  # a relative data path is read from here
    result, config, run = train(tmp_path, edit('"cnnctl://fashion_mnist_small.npz"',
                                               "data/missing.npz"))
    assert_refused(result, f"{config}:15: data.path: data/missing.npz (relative to the current directory, "
                           f"{tmp_path}) not found; give a .npz file with x_train, y_train, "
                           "x_test, y_test (like keras's mnist.npz)")
    assert not run.exists()


def test_train_run_directory_under_a_file(tmp_path, valid):
    """A path below a regular file cannot be created, even by root (who ignores chmod)."""
    config = tmp_path / "good.yaml"
    config.write_text(valid)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder\n")
    run = blocker / "run"
    result = runner.invoke(app, ["train", str(config), "--run-dir", str(run)])
    assert_refused(result, f"{run}: cannot create the run directory: {blocker} is a file, not a "
                           "folder; choose another --run-dir")
    assert blocker.read_text() == "not a folder\n"
    assert_no_run(tmp_path)


def test_train_disk_full_while_creating_the_run_directory(tmp_path, monkeypatch, valid):
    """config.yaml cannot be written: the folders made for the run are removed again."""
    config = tmp_path / "good.yaml"
    config.write_text(valid)
    run = tmp_path / "new" / "run"
    write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if run in self.parents:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    result = runner.invoke(app, ["train", str(config), "--run-dir", str(run)])
    assert_refused(result, f"{run}: cannot create the run directory (No space left on device); "
                           "choose a writable --run-dir")
    assert not (tmp_path / "new").exists()


def test_full_disk_while_writing_last_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch,
                                                                        valid):
    """The disk fills up in epoch 2 while last.keras is written: exit 2 with "disk full", and
    epoch 1's last.keras is still there, whole and loadable; no results are written."""
    from keras.src.saving import saving_lib

    from cnnctl.use import trained

    last = tmp_path / "run" / "checkpoints" / "last.keras"
    save = saving_lib.save_model  # model.save and keras.saving.save_model both end here
    kept = {}

    def full_disk(model, filepath, *args, **kwargs):
        if "last" in Path(filepath).name and last.exists():  # from epoch 2 on
            kept["last"] = last.read_bytes()
            Path(filepath).write_bytes(b"PK\x03\x04 cut short")  # what a full disk leaves
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
        return save(model, filepath, *args, **kwargs)

    monkeypatch.setattr(saving_lib, "save_model", full_disk)
    result, _, run = train(tmp_path, valid, "--set", "train.epochs=2")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "disk full" in lines[0]
    assert kept, "the disk never filled up: last.keras was not written in epoch 2"
    assert last.read_bytes() == kept["last"]
    assert trained.load_model(last).output_shape == (None, 10)
    assert not (run / "metrics.json").exists()
    leftovers = {p.name for p in (run / "checkpoints").iterdir()} - {"best.keras", "last.keras"}
    assert not leftovers


# --------------------------------------------------------------------------- model files
LAMBDA_MESSAGE = ("refused to load {path}: it contains Python code (Lambda layer) that safe mode "
                  "will not run; only load models you trust, and rebuild this one without Lambda "
                  "layers or lambdas")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model files that must not load, an image to predict, and the marker file that a Lambda
    layer's code creates when it runs."""
    from cnnctl.backend import keras

    root = tmp_path_factory.mktemp("models")
    marker = root / "lambda-ran"
    # built from source text so the marker's path is a constant in the saved code
    touch = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")  # noqa: S307
    lam = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(touch),
                            keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    lam.save(root / "lambda.keras")
    marker.unlink()  # building the model ran the code once
    run = root / "lambda-run"  # a run directory someone handed over
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.keras").write_bytes((root / "lambda.keras").read_bytes())

    good = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(10, activation="softmax")])
    good.save(root / "good.keras")
    (root / "truncated.keras").write_bytes((root / "good.keras").read_bytes()[:-100])
    text = root / "text" / "model.keras"
    text.parent.mkdir()
    text.write_text("this is not a model\n")
    # a layer that names os.system: safe or not, Keras must not import it
    with zipfile.ZipFile(root / "good.keras") as source, \
            zipfile.ZipFile(root / "os_system.keras", "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "config.json":
                data = data.replace(b'"module": "keras.layers", "class_name": "Flatten"',
                                    b'"module": "os", "class_name": "system"')
                assert b'"os"' in data
            target.writestr(info, data)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "image.png")
    return root


MODEL_FILES = {
    "missing": ("missing.keras", "no model at {path}: no such file or directory; pass a run "
                "directory or a .keras file"),
    "text file": ("text/model.keras", "{path} is not a Keras model file (.keras zip); pass a "
                  ".keras file saved by cnnctl or keras"),
    "truncated": ("truncated.keras", "{path} is corrupt: the .keras zip is truncated; use "
                  "another checkpoint or train again"),
    "lambda layer": ("lambda.keras", LAMBDA_MESSAGE),
    "lambda in a run": ("lambda-run",
                        LAMBDA_MESSAGE.replace("{path}", "{path}/checkpoints/best.keras")),
    "os.system layer": ("os_system.keras", "cannot load {path}: unknown class 'system' from "
                        "module 'os'; it may use custom layers cnnctl does not know, or come "
                        "from another Keras version"),
}


@pytest.mark.parametrize("command", ["eval", "predict", "serve"])
@pytest.mark.parametrize("kind", MODEL_FILES)
def test_untrusted_or_broken_model_file(models, command, kind):
    name, message = MODEL_FILES[kind]
    path = models / name
    before = sorted(models.rglob("*"))
    args = [command, str(path)] + ([str(models / "image.png")] if command == "predict" else [])
    result = runner.invoke(app, args)
    assert_refused(result, message.format(path=path))
    assert sorted(models.rglob("*")) == before  # no eval report, no marker
    assert not (models / "lambda-ran").exists()


def test_the_lambda_file_runs_its_code_when_loaded_unsafely(models, tmp_path):
    """The marker above is real: without safe mode, loading the file runs the layer's code."""
    from cnnctl.backend import keras

    copy = tmp_path / "lambda.keras"
    copy.write_bytes((models / "lambda.keras").read_bytes())
    keras.saving.load_model(copy, safe_mode=False)
    assert (models / "lambda-ran").exists()
    (models / "lambda-ran").unlink()


# --------------------------------------------------------------------------- as real programs
@pytest.fixture(scope="module")
def processes(models, tmp_path_factory, edit):
    """Two real `python -m cnnctl` processes, started together (each imports TensorFlow):
    `train` of a config with a python tag that would run a shell command, and `predict` with
    the Lambda model."""
    root = tmp_path_factory.mktemp("processes")
    marker = root / "pwned"
    config = root / "tagged.yaml"
    config.write_text(edit("  max_test_samples: 64", "  max_test_samples: "
                           f"!!python/object/apply:os.system ['touch {marker}']"))
    commands = {
        "train": ["train", str(config), "--run-dir", str(root / "run")],
        "predict": ["predict", str(models / "lambda.keras"), str(models / "image.png")],
    }
    started = {name: subprocess.Popen([sys.executable, "-m", "cnnctl", *args], cwd=root,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, args in commands.items()}
    done = {}
    for name, proc in started.items():
        stdout, stderr = proc.communicate(timeout=300)
        done[name] = (proc.returncode, stdout, stderr)
    return root, config, marker, done


def test_real_process_train_refuses_a_python_tag_and_never_runs_it(processes):
    root, config, marker, done = processes
    code, stdout, stderr = done["train"]
    assert (code, stdout) == (2, "")
    assert stderr.splitlines() == [
        f"{config}:17: data.max_test_samples: YAML tag '!!python/object/apply:os.system' is not "
        "allowed: configs are plain YAML (no python objects or custom tags); remove the tag"]
    assert not marker.exists()
    assert_no_run(root)


def test_real_process_predict_refuses_a_lambda_model(models, processes):
    code, stdout, stderr = processes[3]["predict"]
    assert (code, stdout) == (2, "")
    assert stderr.splitlines() == [LAMBDA_MESSAGE.format(path=models / "lambda.keras")]
    assert not (models / "lambda-ran").exists()
