"""A run directory with one damaged file (missing, empty, cut short, the wrong JSON type,
random bytes, a history.csv with a bad row): `report`, `eval` and `runs` end with exit 0, or
exit 2 and one line naming the damaged file; never a traceback, and the other files of the run
stay as they were (issue "No traceback and no lost file, whatever the fault")."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run_0.1.0" / "finished"
FILES = ["metrics.json", "history.csv", "environment.json", "class_names.json", "config.yaml"]
WRONG_TYPES = ["[1, 2, 3]", '"text"', "42", "null", "{}", '{"test": [1]}',
               '{"epochs": "two", "test": {"accuracy": "high"}}', '["a", "a"]', "[]",
               '["a", "b"]', '{"time": 5, "model": {"name": 3}}']
BAD_ROWS = ["1,abc,1.3,2.0,0.3,1.8\n",       # text in a number column
            "1,0.2,1.3,2.0,0.3\n",           # a missing cell
            "1,0.2,1.3,2.0,0.3,1.8,9,9\n",   # extra cells
            "\x00\x01\x02\xff\xfe,,\n",      # binary junk
            "one,0.2,1.3,2.0,0.3,1.8\n"]     # text in the epoch column


@pytest.fixture(scope="module")
def cli():
    from typer.testing import CliRunner

    from cnnctl.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@st.composite
def damage(draw):
    name = draw(st.sampled_from(FILES))
    kind = draw(st.sampled_from(["missing", "empty", "truncated", "wrong type", "random bytes",
                                 "bad row"]))
    original = (FIXTURE / name).read_bytes()
    if kind == "missing":
        data = None
    elif kind == "empty":
        data = b""
    elif kind == "truncated":
        data = original[:draw(st.integers(1, len(original) - 1))]
    elif kind == "wrong type":
        data = draw(st.sampled_from(WRONG_TYPES)).encode()
    elif kind == "random bytes":
        data = draw(st.binary(min_size=1, max_size=200))
    else:  # a CSV row that is not history.csv's, after the header (or in any other file)
        lines = original.decode().splitlines(keepends=True)
        data = (lines[0] + draw(st.sampled_from(BAD_ROWS)) + "".join(lines[1:])).encode(
            "utf-8", "surrogateescape")
    return name, kind, data


def check(result, name: str) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if name in line]
        # one line, or for a config.yaml that no longer validates one FILE:LINE line per problem
        # found in it (the config error style), all at the end
        assert errors and lines[-len(errors):] == errors, result.stderr
        assert len(errors) == 1 or name == "config.yaml", result.stderr


# no shrinking: each example runs three commands
@settings(max_examples=40, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(damage())
def test_a_damaged_run_file_is_named_in_one_line(cli, monkeypatch, damage):
    name, kind, data = damage
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = Path(tmp) / "runs"
        run = runs_dir / "finished"
        shutil.copytree(FIXTURE, run, ignore=shutil.ignore_patterns("backup"))
        monkeypatch.chdir(tmp)
        if data is None:
            (run / name).unlink()
        else:
            (run / name).write_bytes(data)
        before = snapshot(run)
        for args in (["runs", runs_dir], ["report", run, "--limit", "4"], ["eval", run]):
            check(cli(*args), name)
        after = snapshot(run)
        assert {k: after.get(k) for k in before} == before  # nothing of the run changed


def test_a_damaged_history_leaves_the_curves_out_of_the_report(cli, tmp_path):
    run = tmp_path / "finished"
    shutil.copytree(FIXTURE, run, ignore=shutil.ignore_patterns("backup"))
    text = (run / "history.csv").read_text()
    (run / "history.csv").write_text(text + "2,abc,1,1,1,1\n")
    assert cli("report", run, "--limit", "8").exit_code == 0
    page = (run / "report.html").read_text()
    assert "left out" in page and "history.csv is damaged" in page
    from cnnctl import plots
    from cnnctl.errors import CnnctlError

    with pytest.raises(CnnctlError, match=r"history.csv is damaged \(line 3: 'abc' in column "
                       r"accuracy is not a number\)"):
        plots.curves_figure(run / "history.csv")


def test_a_damaged_metrics_json_is_named_and_the_runs_list_says_so(cli, tmp_path):
    run = tmp_path / "runs" / "finished"
    shutil.copytree(FIXTURE, run, ignore=shutil.ignore_patterns("backup"))
    (run / "metrics.json").write_text("[1, 2]")
    result = cli("report", run)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"{run}/metrics.json is damaged (not a JSON object: a list); ")
    listing = cli("runs", tmp_path / "runs")
    assert listing.exit_code == 0 and "damaged (metrics.json: not a JSON object" in listing.stdout
