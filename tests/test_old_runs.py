"""Runs written by cnnctl 0.1.0, before the package layout changed, still eval, predict and
resume: the fixture folders are that version's output, byte for byte (tests/fixtures/run_0.1.0)."""

import csv
import json
import shutil
from pathlib import Path

import pytest


FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run_0.1.0"


@pytest.fixture
def old(tmp_path, monkeypatch):
    """A copy of the fixture folder (commands write into runs), as the current directory."""
    target = tmp_path / "old"
    shutil.copytree(FIXTURE, target)
    monkeypatch.chdir(target)
    return target


@pytest.fixture
def cnnctl(cnnctl):
    """cnnctl(*args) -> the stdout of a command that must succeed (conftest's `cnnctl`, checked)."""

    def succeeded(*args):
        result = cnnctl(*args)
        assert result.exit_code == 0, result.output
        return result.stdout

    return succeeded


def test_an_old_run_gives_the_same_predictions(old, cnnctl):
    now = json.loads(cnnctl("predict", "finished", "images", "--json", "--top-k", "10"))
    then = json.loads((old / "predictions.json").read_text())
    assert [r["path"] for r in now] == [r["path"] for r in then]
    for new_row, old_row in zip(now, then):
        assert [t["label"] for t in new_row["top"]] == [t["label"] for t in old_row["top"]]
        assert [t["prob"] for t in new_row["top"]] == pytest.approx(
            [t["prob"] for t in old_row["top"]], abs=1e-6)


def test_an_old_run_evaluates_to_the_same_metrics(old, cnnctl):
    now = json.loads(cnnctl("eval", "finished", "--json"))
    then = json.loads((old / "eval.json").read_text())
    assert now["num_samples"] == then["num_samples"] == 64
    assert now["accuracy"] == then["accuracy"]
    assert now["loss"] == pytest.approx(then["loss"], abs=1e-6)
    assert now["confusion_matrix"] == then["confusion_matrix"]


@pytest.mark.slow
def test_an_old_interrupted_run_resumes_to_the_end(old, cnnctl):
    out = cnnctl("train", "tiny.yaml", "--resume", "interrupted")
    assert "resum" in out.lower()
    metrics = json.loads((old / "interrupted" / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    with open(old / "interrupted" / "history.csv", newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2", "3"]
    assert (old / "interrupted" / "checkpoints" / "best.keras").is_file()
