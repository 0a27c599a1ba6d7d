"""The installed `cnnctl` executable, run as users run it (not the Typer app in process): its
backend choice, and commands that must work with only the required packages installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnctl import cli
from cnnctl.cli import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(console_script):
    """run(*args, env=None) -> the finished process of the installed `cnnctl` with these
    arguments, started in the checkout."""

    def run(*args, env=None) -> subprocess.CompletedProcess:
        return subprocess.run([str(console_script), *map(str, args)], capture_output=True,
                              text=True, timeout=300, cwd=ROOT, env=env)

    return run


def test_the_numpy_backend_only_where_jax_and_scipy_are_installed(monkeypatch):
    installed = {"jax": True, "scipy": True}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if installed[name] else None)
                        if name in installed else real(name, *a))
    assert cli.backend_for(["cnnctl", "check", "x.yaml"], {}) == "numpy"
    assert cli.backend_for(["cnnctl", "data", "check", "x.yaml"], {}) == "numpy"
    assert cli.backend_for(["cnnctl", "train", "x.yaml"], {}) is None
    assert cli.backend_for(["cnnctl", "check", "x.yaml"], {"KERAS_BACKEND": "jax"}) is None
    installed["jax"] = False  # Keras's NumPy backend imports JAX: stay on TensorFlow
    assert cli.backend_for(["cnnctl", "check", "x.yaml"], {}) is None


@pytest.mark.slow
def test_check_through_the_executable_equals_check_in_process(run):
    proc = run("check", "configs/resnet20_cifar10.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    inside = CliRunner().invoke(app, ["check", str(ROOT / "configs/resnet20_cifar10.yaml"), "--json"])
    ours, theirs = json.loads(proc.stdout), json.loads(inside.stdout)
    for key in ("params", "trainable_params", "flops", "input_shape", "output_shape"):
        assert ours[key] == theirs[key]
    assert [(la["name"], la["params"], la["flops"]) for la in ours["layers"]] == \
        [(la["name"], la["params"], la["flops"]) for la in theirs["layers"]]


@pytest.mark.slow
def test_data_check_schema_and_version_through_the_executable(run):
    proc = run("data", "check", "configs/quickstart.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)
    proc = run("schema")
    assert proc.returncode == 0 and json.loads(proc.stdout)["title"]
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("cnnctl ")


@pytest.mark.slow
def test_a_mistake_through_the_executable_is_one_line_and_exit_2(tmp_path, run):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs/quickstart.yaml").read_text().replace("epochs:", "epoch:", 1))
    proc = run("check", bad)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{bad}:") and "did you mean 'epochs'" in proc.stderr


def test_onnx_without_the_export_extra_names_the_extra(monkeypatch):
    from cnnctl.use import export

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    result = CliRunner().invoke(app, ["export", "nowhere", "--format", "onnx", "--out", "m.onnx"])
    assert result.exit_code == 2
    assert result.stderr == ('--format onnx needs the [export] extra (tf2onnx missing): '
                             'pip install -e ".[export]" in the cnnctl checkout\n')
    assert export.FORMATS == ("savedmodel", "onnx", "tflite")


@pytest.mark.slow
def test_check_builds_a_pretrained_backbone_without_its_weights(tmp_path, run):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "empty-keras-home")}
    proc = run("check", "configs/mobilenetv2_transfer.yaml", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Downloading" not in proc.stdout + proc.stderr
    info = json.loads(proc.stdout)
    assert info["params"] == 2_270_794 and info["trainable_params"] == 12_810


def test_help_has_no_type_column_and_wraps_at_words():
    result = CliRunner().invoke(app, ["predict", "--help"], terminal_width=60)
    assert result.exit_code == 0
    assert "<bool>" not in result.output  # flags take no value: no type beside them
    lines = result.output.splitlines()
    assert "  --json       Print a JSON list." in lines
    assert all(len(line) <= 60 for line in lines)
    # a help sentence broken over lines breaks between words
    plot = lines.index(next(line for line in lines if line.startswith("  --plot FILE")))
    assert lines[plot].endswith("class") and lines[plot + 1].strip() == "probabilities into this PNG."
