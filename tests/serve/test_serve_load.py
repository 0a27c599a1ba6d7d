"""bench/serve_load.py end to end on a tiny setting, so that the load test cannot rot: both
serving modes and the model.predict ceiling measured, the table written, no request failing.
No speed is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def table_rows(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose first header is `first_header`, as {header: cell}."""
    split = lambda line: [cell.strip() for cell in line.strip().strip("|").split(" | ")]  # noqa: E731
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    headers = split(lines[start])
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(headers, split(line))))
    return rows


def number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


@pytest.mark.slow
def test_quick_load_test_measures_every_mode_without_errors(tmp_path, serve_run, test_pngs):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nWritten by hand.\n")
    command = [sys.executable, str(REPO / "bench" / "serve_load.py"), "--quick",
               "--run", f"small={serve_run}", "--images", f"small={test_pngs[0].parent}",
               "--clients", "4", "--seconds", "2", "--machine", "test-box", "--out", str(out),
               "--work-dir", str(tmp_path / "work")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nWritten by hand.\n")
    assert text.count("<!-- bench:serve_load:test-box:quick -->") == 1
    section = text.split("<!-- bench:serve_load:test-box:quick -->", 1)[1]
    assert "`python bench/serve_load.py --quick --run small=" in section
    assert "cnnctl 0.1.0" in section and "cores" in section  # the machine and version named
    if (REPO / ".git").exists():  # CI tests a copy of the files, outside git
        assert "(commit " in section

    rows = {row["mode"]: row for row in table_rows(section, "model")}
    assert set(rows) == {"model.predict (batch 64)", "predict_on_batch (batch 64)", "batching on",
                         "batching off"}
    for mode, row in rows.items():
        assert row["model"] == "small"
        assert row["errors"] == "0", (mode, row)
        assert number(row["images/s"]) > 0
    for mode in ("batching on", "batching off"):
        row = rows[mode]
        assert row["clients"] == "4"
        assert number(row["images"]) > 0
        assert 0 < number(row["p50 ms"]) <= number(row["p95 ms"]) <= number(row["p99 ms"])
    assert number(rows["batching off"]["images per model call"]) == 1.0

    ratios = {(row["ratio"], row["model"]): row for row in table_rows(section, "ratio")}
    assert set(ratios) == {("batching on / off", "small"), ("batching on / model.predict", "small"),
                           ("batching on / predict_on_batch", "small")}
    for row in ratios.values():
        assert number(row["measured"]) > 0
    assert "8 distinct images (image/png" in section
    assert result.stdout.strip().startswith("### serve_load on test-box")  # printed as well


def test_quick_load_test_refuses_images_of_no_model(tmp_path):
    command = [sys.executable, str(REPO / "bench" / "serve_load.py"), "--quick",
               "--run", f"small={tmp_path}", "--images", f"other={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "no --run named 'other'" in result.stderr
