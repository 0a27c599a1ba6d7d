"""`cnnctl report STUDY`: one self-contained HTML page of a study (best trial, space, trials,
plots embedded), replaced by a second report and never written over a user's file."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest

from cnnctl.tune import report
from cnnctl.tune import study as study_lib


@pytest.fixture
def study_copy(small_study, tmp_path) -> Path:
    """A copy of conftest's finished 3-trial study, to write into (the fixture is shared)."""
    return Path(shutil.copytree(small_study, tmp_path / small_study.name))


@pytest.mark.slow
def test_report_of_a_study_is_one_page_with_trials_best_and_plots(study_copy, cnnctl):
    result = cnnctl("report", study_copy)
    page = study_copy / "report.html"
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"written: {page}"
    text = page.read_text()
    found, info = study_lib.load(study_copy)
    best = study_lib.best_trial(found)
    assert info["study"] == "tuned" and f"<title>study tuned: val_accuracy {best.value:.4f}</title>" in text
    assert "val_accuracy (maximize); 3 trials: 3 complete" in text
    assert f"<p>trial {best.number}, val_accuracy {best.value:.4f}</p>" in text
    assert f"cnnctl train {study_copy / study_lib.BEST}" in text
    assert "<td>optimizer.learning_rate</td><td>{log_uniform: [0.001, 0.01]}</td>" in text
    trials = text.split("<h2>Trials</h2>")[1].split("<h2>")[0]
    for row in study_lib.rows(found, study_copy):
        assert f"<tr><td>{row['number']}</td><td>complete</td><td>{row['value']:.4f}</td>" in trials
    pictures = re.findall(r'<h3>([^<]+)</h3><img alt="" src="data:image/png;base64,([^"]+)">', text)
    assert [title for title, _ in pictures][0] == "Optimisation history"
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for _, data in pictures)
    assert "<script src=" not in text and not re.search(r'(src|href)="(?!data:)', text)


@pytest.mark.slow
def test_a_second_report_replaces_the_first_but_a_users_file_is_kept(study_copy, cnnctl):
    assert cnnctl("report", study_copy).exit_code == 0
    again = cnnctl("report", study_copy)
    assert again.exit_code == 0, again.output
    mine = study_copy / "mine.html"
    mine.write_text("mine")
    refused = cnnctl("report", study_copy, "--out", mine)
    assert refused.exit_code == 2
    assert refused.stderr == (f"--out {mine}: a file that cnnctl report did not write is there; "
                              "choose another name (cnnctl never replaces files it did not write)\n")
    assert mine.read_text() == "mine"


def test_a_study_without_complete_trials_says_there_is_no_best_yet(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="empty <study>", storage=url, direction="minimize")
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    (tmp_path / study_lib.STUDY_FILE).write_text(json.dumps(
        {"study": "empty <study>", "storage": url, "metric": "val_loss", "direction": "minimize"}))
    text = report.run(tmp_path).read_text()
    assert "<title>study empty &lt;study&gt;: no complete trial</title>" in text
    assert "val_loss (minimize); 1 trials: 1 failed; best none yet" in text
    assert "no trial is complete yet, so there is no best trial" in text
    assert "<tr><td>0</td><td>failed: no reason recorded</td><td></td>" in text


@pytest.mark.optional
@pytest.mark.slow
def test_study_report_renders_in_headless_chromium(study_copy, tmp_path, cnnctl):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    assert cnnctl("report", study_copy).exit_code == 0
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
         "--v=0", "--dump-dom", (study_copy / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    # the DOM the browser built: the title, and the first trial's row of the trials table
    assert re.search(r"<title>study tuned: val_accuracy 0\.\d{4}</title>", done.stdout)
    assert re.search(r"<tr><td>0</td><td>complete</td><td>0\.\d{4}</td>", done.stdout)
