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
    # the date and commit ("unknown" in a copy that is not a git checkout, as CI's stage 2)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d, ([0-9a-f]{7,}|unknown)", quick[9])
    assert quick[10].startswith("`cnnctl train configs/quickstart.yaml --set train.seed=1")
    assert rows["mnist"][4].startswith("not measured: the mnist files are not on this machine")


def test_an_unknown_recipe_is_refused():
    done = subprocess.run([sys.executable, "bench/recipes.py", "--only", "imagenet"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--only: unknown recipe(s) imagenet; choose from quickstart" in done.stderr


def test_rows_of_recipes_not_run_stay_with_their_own_commit(tmp_path):
    sys.path.insert(0, str(REPO))
    from bench import recipes, report

    key = "recipes:cpu-test:full"
    old = ("| recipe | config | data | epochs | test accuracy (mean ± sd) | per seed | wall s (mean) "
           "| s/epoch after the first | GPU (JAX) | command |\n| --- |\n"
           "| quickstart | configs/quickstart.yaml | slice | 8 | 0.8500 ± 0.0026 (3 seeds) | 0.85 | "
           "13.7 | 0.87 | not measured | `cnnctl train configs/quickstart.yaml` |\n"
           "| fashion_mnist | configs/fashion_mnist.yaml | fm | 5 | 0.8984 ± 0.0000 (1 seed) | "
           "0.8984 | 54.8 | 9.56 | not measured | `cnnctl train configs/fashion_mnist.yaml` |")
    out = tmp_path / "README.md"
    report.update(out, key, f"Measured 2026-12-01 at commit abc1234 with `x` on:\n\n{old}")
    kept = recipes.kept_rows(out, key)
    assert [cells[0] for cells in kept] == ["quickstart", "fashion_mnist"]
    assert all(cells[recipes.HEADERS.index("measured")] == "2026-12-01, abc1234" for cells in kept)
    assert all(len(cells) == len(recipes.HEADERS) for cells in kept)
    new = [["fashion_mnist_small", "configs/fashion_mnist_small.yaml", "fm", "30", "0.9356", "",
            "", "", "not measured", "2026-12-07, def5678", "`c`"],
           ["quickstart", "configs/quickstart.yaml", "slice", "8", "0.8600", "", "", "",
            "not measured", "2026-12-07, def5678", "`c`"]]
    rows = recipes.merged(new, kept)
    assert [(cells[0], cells[4]) for cells in rows] == [
        ("quickstart", "0.8600"), ("fashion_mnist", "0.8984 ± 0.0000 (1 seed)"),
        ("fashion_mnist_small", "0.9356")]  # the new quickstart row replaces the old one
