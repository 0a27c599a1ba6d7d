"""bench/recipes.py on a tiny slice, so that the harness behind the README's results table
cannot rot: it trains from fresh processes, reads metrics.json, names missing data instead of
guessing, and writes its section into a markdown file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_recipes_write_their_rows(tmp_path):
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "bench/recipes.py", "--tiny", "--only", "quickstart,mnist",
         "--data-dir", str(tmp_path / "no_data"), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "<!-- bench:recipes:cpu-" in text and ":tiny -->" in text
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")
            for line in text.splitlines() if line.startswith("| ") and " | configs/" in line}
    assert set(rows) == {"quickstart", "mnist"}
    quick = rows["quickstart"]
    assert quick[3] == "1"  # epochs
    accuracy = float(re.match(r"(0\.\d{4}) ± 0\.0000 \(1 seed\)", quick[4]).group(1))
    assert 0.0 < accuracy <= 1.0 and quick[5] == f"{accuracy:.4f}"
    assert quick[8] == "not measured"  # the GPU column
    assert quick[9].startswith("`cnnctl train configs/quickstart.yaml --set train.seed=1")
    assert rows["mnist"][4].startswith("not measured: the mnist files are not on this machine")


def test_an_unknown_recipe_is_refused():
    done = subprocess.run([sys.executable, "bench/recipes.py", "--only", "imagenet"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--only: unknown recipe(s) imagenet; choose from quickstart" in done.stderr
