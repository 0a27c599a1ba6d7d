"""Options of the `cnnctl` command line that would do the wrong thing silently: an empty path
option (the current directory), contradictory options, a misspelt monitor; each is refused in
one line with exit code 2 before anything is written. Run as `python -m cnnctl` subprocesses."""

from __future__ import annotations

import subprocess
import sys

import pytest

CONFIG = """\
model:
  input_shape: [6, 6, 1]
  layers:
    - {type: flatten}
    - {type: dense, units: 2, activation: softmax}
data: {source: npz, path: cnnctl://fashion_mnist_small.npz, max_train_samples: 64}
metrics: [accuracy]
train: {epochs: 1, batch_size: 16}
"""


def run_cnnctl(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnctl", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def folder(tmp_path):
    """A working folder holding c.yaml (the files in it are checked afterwards)."""
    (tmp_path / "c.yaml").write_text(CONFIG)
    return tmp_path


def assert_refused(result, message: str, folder, files=("c.yaml",)) -> None:
    assert (result.returncode, result.stderr, result.stdout) == (2, message + "\n", "")
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)  # nothing was written


EMPTY = "is empty; give a path (an empty one would mean the current directory)"


@pytest.mark.parametrize("args", [["--run-dir", ""], ["--run-dir="], ["--run-dir", "  "],
                                  ["--resume", ""]])
def test_train_refuses_an_empty_run_dir(folder, args):
    result = run_cnnctl(folder, "train", "c.yaml", *args)
    assert_refused(result, f"{args[0].rstrip('=')} {EMPTY}", folder)


@pytest.mark.parametrize("command", [["explain", "run", "--out", ""],
                                     ["visualize", "run", "--out", ""],
                                     ["export", "run", "--format", "onnx", "--out", ""],
                                     ["report", "run", "--out", ""],
                                     ["eval", "run", "--data", ""],
                                     ["predict", "run", "x.png", "--plot", ""]])
def test_other_empty_path_options_are_refused(folder, command):
    result = run_cnnctl(folder, *command)
    assert_refused(result, f"{command[-2]} {EMPTY}", folder)


def test_predict_refuses_json_with_csv(folder):
    result = run_cnnctl(folder, "predict", "run", "x.png", "--json", "--csv")
    assert_refused(result, "--json and --csv cannot be used together; choose one", folder)


def test_train_refuses_resume_with_new(folder):
    (folder / "run").mkdir()
    result = run_cnnctl(folder, "train", "c.yaml", "--resume", "run", "--new")
    assert_refused(result, "--resume and --new cannot be used together; choose one", folder,
                   files=("c.yaml", "run"))
    assert list((folder / "run").iterdir()) == []


def test_train_refuses_resume_into_another_run_dir(folder):
    (folder / "run").mkdir()
    result = run_cnnctl(folder, "train", "c.yaml", "--resume", "run", "--run-dir", "other")
    assert_refused(result, "--resume run and --run-dir other cannot be used together: a resumed "
                           "run stays in its folder; choose one", folder, files=("c.yaml", "run"))


def test_train_refuses_a_misspelt_early_stopping_monitor(folder):
    result = run_cnnctl(folder, "train", "c.yaml",
                        "--set", "train.early_stopping={monitor: val_acuracy}")
    assert_refused(result, "--set: train.early_stopping.monitor: 'val_acuracy' is not a figure "
                           "this run logs (did you mean 'val_accuracy'?); use one of loss, "
                           "accuracy, balanced_accuracy, macro_f1 (the metrics of `metrics:`, "
                           "and the class metrics), with val_ in front for the validation figure",
                   folder)
