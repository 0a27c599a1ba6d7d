"""What a run shows and records as it goes: file-check progress, history.csv rows."""

from __future__ import annotations

import csv
import io

import numpy as np
from PIL import Image

from cnnctl.data import images
from cnnctl import messages, runs
from cnnctl.train import logs


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_file_check_progress_prints_every_tenth_to_a_log_and_a_bar_on_a_terminal():
    log = io.StringIO()
    progress = messages.FileCheckProgress(log)
    for done in range(500, 5001, 500):
        progress("train", done, 5000)
    lines = log.getvalue().splitlines()
    assert [line.split(" files")[0] for line in lines] == [
        f"checking train images: {n:,}/5,000" for n in range(500, 5001, 500)]
    quiet = io.StringIO()
    messages.FileCheckProgress(quiet)("test", 1000, 1000)  # small splits are checked in a moment
    assert quiet.getvalue() == ""
    tty = Terminal()
    bar = messages.FileCheckProgress(tty)
    bar("train", 2500, 5000)
    bar("train", 5000, 5000)
    text = tty.getvalue()
    assert text.startswith("\rchecking train images: 2,500/5,000 files (")
    assert "[" + "=" * 15 + " " * 15 + "]" in text and text.endswith("[" + "=" * 30 + "]\n")


def test_probe_all_reports_how_many_files_are_checked(tmp_path):
    files = []
    for i in range(1200):
        path = tmp_path / f"{i:04d}.png"
        Image.fromarray(np.full((4, 4), i % 256, np.uint8)).save(path)
        files.append(str(path))
    seen = []
    checks = images.probe_all(files, progress=lambda done, total: seen.append((done, total)))
    assert len(checks) == 1200 and all(c.reason is None for c in checks)
    assert seen == [(500, 1200), (1000, 1200), (1200, 1200)]



def test_history_counts_epochs_from_1_and_has_only_logged_columns(tmp_path):
    history = logs.HistoryCSV(tmp_path / "history.csv")
    history.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.75, "epoch_seconds": 1.5})
    history.on_epoch_end(1, {"loss": 0.25, "accuracy": 0.875, "epoch_seconds": 1.25})
    assert (tmp_path / "history.csv").read_text() == (
        "epoch,accuracy,epoch_seconds,loss\n1,0.75,1.5,0.5\n2,0.875,1.25,0.25\n")
    # a resumed run appends in the file's own columns; a value it did not log stays empty
    logs.HistoryCSV(tmp_path / "history.csv").on_epoch_end(2, {"loss": 0.125, "extra": 1.0})
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert rows[-1] == {"epoch": "3", "accuracy": "", "epoch_seconds": "", "loss": "0.125"}


def test_history_of_a_run_started_before_epochs_counted_from_1_stays_consistent(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss\n0,0.5\n")  # Keras's CSVLogger counts from 0
    logs.HistoryCSV(tmp_path / "history.csv").on_epoch_end(1, {"loss": 0.25})
    assert (tmp_path / "history.csv").read_text() == "epoch,loss\n0,0.5\n1,0.25\n"
    assert runs.first_epoch([{"epoch": "0"}]) == 0 and runs.first_epoch([{"epoch": "1"}]) == 1


def test_messages_from_below_the_cli_reach_the_terminal_only_through_the_cli(capsys):
    import logging

    from cnnctl import messages

    logger = messages.LOGGER
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        logger.handlers[:], logger.propagate = [], True
        logger.setLevel(logging.NOTSET)
        messages.say("as a library: not shown")
        assert capsys.readouterr().out == ""
        messages.to_terminal()  # what the CLI does before each command
        messages.say("data: train 10 images")
        messages.warn("backup-1 is damaged; using backup-0")
        shown = capsys.readouterr()
        assert shown.out == "data: train 10 images\n"
        assert shown.err == "backup-1 is damaged; using backup-0\n"
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])


def test_nothing_below_the_cli_calls_print():
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "cnnctl"
    calls = [f"{path.name}:{node.lineno}" for path in sorted(package.rglob("*.py"))
             if path.name != "cli.py"
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert calls == []


def test_file_check_progress_shows_only_where_the_cli_shows_messages(capsys, monkeypatch):
    """Below the CLI nothing prints: without a stream, the progress goes to stdout only once the
    CLI has sent cnnctl's messages to the terminal (as a library, it is silent like `say`)."""
    monkeypatch.setattr(messages.LOGGER, "handlers", [])
    messages.FileCheckProgress()("train", 5000, 5000)
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(messages.LOGGER, "handlers", [messages.TerminalHandler()])
    messages.FileCheckProgress()("train", 5000, 5000)
    assert capsys.readouterr().out.startswith("checking train images: 5,000/5,000 files (")
