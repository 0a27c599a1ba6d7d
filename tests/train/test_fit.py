"""cnnctl.train.fit: `cnnctl train` end to end on a small slice of real data: every output of
a run, real metrics, the resolved config; `eval` and `predict` on the run it wrote."""

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from cnnctl.config import schema as schema_lib
from cnnctl import runs
from cnnctl.cli import app


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_cnn_yaml):
    """One real training run shared by the tests that only read its outputs."""
    root = tmp_path_factory.mktemp("train")
    cfg = root / "small.yaml"
    cfg.write_text(small_cnn_yaml)
    run_dir = root / "run"
    result = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir, result.output


def test_run_directory_holds_every_output(trained):
    run_dir, output = trained
    for name in ("config.yaml", "environment.json", "checkpoints/best.keras", "checkpoints/last.keras",
                 "history.csv", "class_names.json", "metrics.json", "curves.png"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "logs").rglob("*tfevents*"))
    last, suggestion = output.strip().splitlines()[-2:]
    assert re.fullmatch(rf"test accuracy 0\.\d{{4}} \(checkpoints/best\.keras\), 2 epoch\(s\) in "
                        rf"[\d.]+ s, run: {re.escape(str(run_dir))}", last), last
    assert suggestion == (f"next: cnnctl eval {run_dir}  |  cnnctl report {run_dir}  |  "
                          f"cnnctl predict {run_dir} IMAGE")


def test_metrics_and_history_are_real(trained):
    run_dir, _ = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.6          # 10 classes: chance is 0.1
    assert math.isfinite(metrics["test"]["loss"])
    assert 0.0 < metrics["val"]["accuracy"] <= 1.0
    assert metrics["epochs"] == 2
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])


def test_class_names_and_environment(trained):
    run_dir, _ = trained
    names = json.loads((run_dir / "class_names.json").read_text())
    assert len(names) == 10 and names[0] == "T-shirt/top" and names[9] == "Ankle boot"
    env = json.loads((run_dir / "environment.json").read_text())
    for key in ("python", "keras", "backend", "tensorflow", "devices", "git_commit"):
        assert key in env


def test_resolved_config_reloads_with_the_same_values(trained, small_cnn_yaml):
    run_dir, _ = trained
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["data"]["max_train_samples"] == 2000
    assert saved["optimizer"]["schedule"]["type"] == "constant"           # defaults are written out
    again = runs.load_config(run_dir).config
    assert again == schema_lib.Config.model_validate(yaml.safe_load(small_cnn_yaml))


def test_eval_reports_the_accuracy_training_reported(trained):
    run_dir, _ = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-4)
    assert report["num_samples"] == 300
    assert np.array(report["confusion_matrix"]).sum() == 300
    assert (run_dir / "eval_test.json").is_file() and (run_dir / "confusion_matrix_test.png").is_file()


def test_predict_images_of_any_size_and_mode(trained, tmp_path):
    run_dir, _ = trained
    data = np.load(Path(__file__).resolve().parents[2] / "cnnctl" / "data" / "fashion_mnist_small.npz")
    x, y = data["x_test"][:4], data["y_test"][:4]
    paths = []
    for i, (img, label) in enumerate(zip(x, y)):
        # the model is 28x28 grayscale; hand it 56x56 RGB and RGBA files
        pic = Image.fromarray(img).resize((56, 56)).convert("RGBA" if i % 2 else "RGB")
        paths.append(tmp_path / f"img{i}.png")
        pic.save(paths[-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["predict", str(run_dir), str(tmp_path / "*.png"), "--json",
                                      "--top-k", "2", "--plot", str(tmp_path / "plot.png")])
    assert result.exit_code == 0, result.output
    out = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    assert "error" in out["broken.png"]
    names = json.loads((run_dir / "class_names.json").read_text())
    right = 0
    for i, label in enumerate(y):
        top = out[f"img{i}.png"]["top"]
        assert len(top) == 2 and top[0]["prob"] >= top[1]["prob"]
        right += top[0]["label"] == names[label]
    assert right >= 2
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_set_overrides_are_validated_and_recorded(tmp_path, small_cnn_yaml):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(small_cnn_yaml)
    bad = CliRunner().invoke(app, ["train", str(cfg), "--set", "train.epochs=0"])
    assert bad.exit_code == 2
    assert "train.epochs: must be > 0 (got 0)" in bad.output
    assert not (tmp_path / "runs").exists()


def test_model_and_data_that_do_not_fit_is_a_clear_error(tmp_path, small_cnn_yaml):
    cfg = tmp_path / "five.yaml"
    cfg.write_text(small_cnn_yaml.replace("units: 10", "units: 5"))
    result = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "the model outputs 5 values but the data has 10 classes" in result.output
    assert not (tmp_path / "run").exists()          # nothing that looks like a run


@pytest.mark.slow
def test_cli_subprocess_trains_with_augmentation_and_schedule(tmp_path, small_cnn_yaml):
    """A real `cnnctl train` process with in-model augmentation, a cosine schedule, one-hot labels
    and label smoothing; then the saved model still loads in safe mode."""
    cfg = tmp_path / "aug.yaml"
    text = small_cnn_yaml.replace("loss: sparse_categorical_crossentropy",
                                  "loss: {name: categorical_crossentropy, label_smoothing: 0.1}")
    text = text.replace("optimizer: {name: adam, learning_rate: 0.002}",
                        "optimizer: {name: sgd, learning_rate: 0.05, momentum: 0.9, nesterov: true,"
                        " schedule: {type: cosine, warmup_epochs: 0.5}}")
    text += "augmentation:\n  placement: model\n  layers:\n    - {type: random_flip, mode: horizontal}\n"
    cfg.write_text(text)
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cnnctl", "train", str(cfg), "--run-dir", str(run_dir),
                           "--set", "train.epochs=1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.4 and metrics["epochs"] == 1
    from cnnctl.backend import keras

    model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras", safe_mode=True)
    assert any(isinstance(layer, keras.layers.RandomFlip) for layer in model.layers)
