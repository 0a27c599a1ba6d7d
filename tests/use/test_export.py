"""Export (issue "See what the model learned, and take it elsewhere"): every format is written by
Keras's exporters, run with its own runtime and checked against the Keras model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnctl.use import export
from cnnctl.cli import app
from cnnctl.errors import CnnctlError

@pytest.fixture(scope="module")
def run(tmp_path_factory, cnn_yaml, train_yaml, colour_npz) -> Path:
    """A model whose classes are the dominant colour channel of noisy images."""
    root = tmp_path_factory.mktemp("export")
    colour_npz(root / "colours.npz", 384, 96)
    config = cnn_yaml(
        name="exported", input_shape="[16, 16, 3]",
        layers=["{type: conv2d, filters: 8, kernel_size: 3, activation: relu}",
                "{type: max_pool2d, pool_size: 2}",
                "{type: batch_norm}",
                "{type: flatten}",
                "{type: dense, units: 3, activation: softmax}"],
        data="{source: npz, path: DATA, preprocessing: {normalize: {mean: [0.5], std: [0.25]}}}",
        optimizer="{name: adam, learning_rate: 0.01}",
        train="{epochs: 2, batch_size: 32, seed: 0, tensorboard: false}")
    config = config.replace("DATA", str(root / "colours.npz"))
    result = train_yaml(config, root / "exported.yaml", root / "run")
    assert result["metrics"]["test"]["accuracy"] > 0.9
    return root / "run"


@pytest.mark.slow
@pytest.mark.parametrize("fmt, quantize, name", [
    ("savedmodel", None, "model_savedmodel"), ("onnx", None, "model.onnx"),
    ("tflite", None, "model.tflite"), ("tflite", "float16", "model_fp16.tflite"),
    ("tflite", "int8", "model_int8.tflite")])
def test_each_format_passes_its_parity_check(run, tmp_path, fmt, quantize, name):
    written, check = export.run(run, fmt, tmp_path / name, quantize=quantize, images=48)
    assert written == tmp_path / name and written.exists()
    assert check.images == 48 and check.ok
    assert check.max_abs_diff <= export.TOLERANCE[quantize][0]
    # the exported file on its own takes raw 0..255 images: same classes as the Keras model
    from cnnctl.use import trained

    x = np.random.default_rng(1).uniform(0, 255, (5, 16, 16, 3)).astype(np.float32)
    want = trained.load_model(run).predict(x, verbose=0)
    got = export.predict_exported(fmt, written, x)
    np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))


def test_parity_failure_is_an_error_and_keeps_the_file(run, tmp_path, monkeypatch):
    monkeypatch.setitem(export.TOLERANCE, None, (-1.0, 1.0))  # nothing can pass
    result = CliRunner().invoke(app, ["export", str(run), "--format", "tflite", "--out",
                                      str(tmp_path / "m.tflite"), "--images", "8"])
    assert result.exit_code == 4, result.output
    assert f"{tmp_path / 'm.tflite'}: the exported model disagrees with the Keras model on 8 " \
           "images" in result.output
    assert "the file is kept for inspection" in result.output and "Traceback" not in result.output
    assert (tmp_path / "m.tflite").is_file()


def test_export_command_and_its_errors(run, tmp_path):
    done = CliRunner().invoke(app, ["export", str(run), "--format", "savedmodel", "--out",
                                    str(tmp_path / "sm"), "--images", "8"])
    assert done.exit_code == 0, done.output
    assert f"written: {tmp_path / 'sm'}" in done.output
    assert "parity on 8 images: largest probability difference" in done.output
    assert "top-1 agreement 100.0% (needed 100%)" in done.output
    with pytest.raises(CnnctlError, match="--quantize applies to --format tflite, not onnx"):
        export.run(run, "onnx", tmp_path / "m.onnx", quantize="int8")
    with pytest.raises(CnnctlError, match="--format keras: choose one of savedmodel, onnx, tflite"):
        export.run(run, "keras", tmp_path / "m.keras")


@pytest.mark.slow
def test_export_through_the_executable_prints_only_its_own_lines(run, tmp_path, console_script):
    """The LiteRT converter's and XNNPACK's INFO lines, tf.lite.Interpreter's deprecation
    notice and NumPy FutureWarnings stay off the terminal; what is left is cnnctl's."""
    import subprocess

    done = subprocess.run([str(console_script), "export", str(run), "--format", "tflite",
                           "--quantize", "int8", "--out", str(tmp_path / "m.tflite")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == f"written: {tmp_path / 'm.tflite'}" and len(lines) == 2
    assert lines[1].startswith("parity on 64 images: largest probability difference ")
