"""bench/gpu.sh, the one script the GPU machine runs, run here on the CPU with --tiny and
TensorFlow hidden, as it will run there: every step passes and leaves its outputs under $OUT."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def test_an_unknown_option_is_refused_with_exit_2():
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--fast"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "bench/gpu.sh: unknown option --fast (see --help)"


@pytest.mark.slow
@pytest.mark.optional
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX")
@pytest.mark.skipif(not (DATA / "cifar10-jpg.tar.gz").is_file(), reason="needs ../shared/data")
def test_the_tiny_run_passes_every_step_without_tensorflow(tmp_path):
    out = tmp_path / "out"
    # the script's Python is this one (CI's venv is not on PATH)
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh"), "--tiny", "--hide-tensorflow", "--seeds", "1",
         "--skip", "bench", "--data-dir", str(DATA)],
        capture_output=True, text=True, timeout=1200, env=env, cwd=REPO)
    summary = (out / "summary.md").read_text()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "FAILED" not in summary
    steps = re.findall(r"^- ok: (\S+)", summary, re.M)
    assert steps == ["check", "train", "eval", "predict", "report", "train-resnet20",
                     "explain-cam", "cifar10-fast-seed-1"]
    row = re.search(r"^\| 1 \| (0\.\d{4}) \| [\d.]+ \(first epoch", summary, re.M)
    assert row, summary
    assert list((out / "explain").glob("*.png"))  # the CAM overlay
    assert (out / "report.html").stat().st_size > 10_000
    # TensorFlow really was out of reach: the runs were trained on JAX
    assert '"backend": "jax"' in (out / "runs" / "quickstart" / "environment.json").read_text()
