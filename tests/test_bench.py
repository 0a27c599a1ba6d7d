"""The benchmark harness (bench/run.py) end to end on a tiny slice of the real data, and its
promise not to import TensorFlow or Keras itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"  # bench/run.py's default --data-dir


def section_rows(text: str, key: str) -> dict[str, dict[str, str]]:
    """The table of section `key` of a BENCHMARKS.md text: first cell -> {header: cell}."""
    body = text.split(f"<!-- bench:{key} -->", 1)[1].split("<!-- /bench -->", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("|")]
    split = lambda line: [cell.strip() for cell in line.strip("|").split(" | ")]  # noqa: E731
    headers = split(lines[0])
    return {cells[0]: dict(zip(headers, cells)) for cells in map(split, lines[2:])}


def number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


@pytest.mark.slow
def test_small_run_writes_tables_and_keeps_the_rest_of_the_file(tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found (the Fashion-MNIST and CIFAR-10 JPEG files)")
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n<!-- bench results: begin -->\n"
                   "<!-- bench:mnist_cnn:test-box:small -->\nstale figures\n<!-- /bench -->\n\n"
                   "<!-- bench results: end -->\n\n## Notes\n\nWritten by hand.\n")
    command = [sys.executable, str(REPO / "bench" / "run.py"), "--small", "--train-samples", "512",
               "--epochs", "2", "--backends", "tensorflow", "--images-per-class", "10",
               "--machine", "test-box", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    text = out.read_text()
    assert "stale figures" not in text
    assert text.count("<!-- bench:mnist_cnn:test-box:small -->") == 1
    assert text.rstrip().endswith("## Notes\n\nWritten by hand.")
    assert "`python bench/run.py --small --train-samples 512" in text

    mnist = section_rows(text, "mnist_cnn:test-box:small")
    assert set(mnist) == {"plain Keras", "cnnctl"}
    for row in mnist.values():
        assert row["backend"] == "tensorflow"
        assert number(row["s/epoch after warm-up"]) > 0
        assert number(row["images/s"]) > 0
        assert 0 <= number(row["test accuracy"]) <= 1
        assert number(row["peak RSS"]) > 0
    assert mnist["plain Keras"]["s/epoch ÷ plain Keras"] == "1.00"
    assert number(mnist["cnnctl"]["s/epoch ÷ plain Keras"]) > 0

    folder = section_rows(text, "folder_input:test-box:small")
    assert len(folder) == 2
    for row in folder.values():
        assert row["images"] == "100"
        assert number(row["second pass images/s"]) > 0
        assert number(row["images/s ÷ plain Keras (setup + first pass)"]) > 0
        assert number(row["images/s ÷ plain Keras (second pass)"]) > 0


def test_harness_imports_neither_tensorflow_nor_keras():
    # on a GPU machine the harness runs where only JAX or PyTorch is installed
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import bench.run, bench.mnist_cnn, bench.folder_input, bench.machine; "
            "bench.machine.info(); "
            "loaded = {'tensorflow', 'keras', 'jax', 'torch'} & set(sys.modules); "
            "sys.exit(f'imported {sorted(loaded)}' if loaded else 0)")
    result = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
