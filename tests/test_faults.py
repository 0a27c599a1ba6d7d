"""File-system faults end in one line and lose nothing: a read-only run directory or output
folder, a full disk at the end of training, for every command that writes (issue "No traceback
and no lost file, whatever the fault").

Tests run as root here, where `chmod` does not stop a write, so the faults are injected: a
writer that raises the file system's own OSError (EROFS, EACCES, ENOSPC) for every path under
a folder, at the calls a write is made of (os.mkdir, opening for writing, os.replace)."""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run_0.1.0"
WORDS = {errno.EROFS: "read-only", errno.EACCES: "permission denied", errno.ENOSPC: "disk full"}


@pytest.fixture
def old(tmp_path, monkeypatch):
    """A copy of the 0.1.0 fixture runs (finished, interrupted, images, tiny.yaml), as cwd."""
    target = tmp_path / "old"
    shutil.copytree(FIXTURE, target)
    monkeypatch.chdir(target)
    return target


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def fail_under(monkeypatch, folder: Path, code: int, names: tuple[str, ...] = ()) -> None:
    """Every write under `folder` (or, with `names`, of files of those names and their
    temporaries) raises OSError(code), as a read-only or full file system does."""
    folder = Path(folder).absolute()
    real_replace, real_mkdir, real_open = os.replace, os.mkdir, io.open

    def hit(path) -> bool:
        p = Path(os.fspath(path)).absolute()
        if names:
            return any(p.name == n or p.name.startswith(f".{Path(n).stem}.tmp-") for n in names)
        return p == folder or folder in p.parents

    def error(path):
        return OSError(code, os.strerror(code), os.fspath(path))

    def replace(src, dst, *a, **k):
        if hit(dst):
            raise error(dst)
        return real_replace(src, dst, *a, **k)

    def mkdir(path, *a, **k):
        if hit(path):
            raise error(path)
        return real_mkdir(path, *a, **k)

    def open_(file, mode="r", *a, **k):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and hit(file):
            raise error(file)
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(io, "open", open_)


def one_line_error(result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    text = result.stderr if hasattr(result, "stderr") else result.output
    assert "Traceback" not in result.output and result.exception is None or \
        isinstance(result.exception, SystemExit), result.output
    # only the error: other lines on stderr (progress, a font warning) must not be errors
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if words[0].lower() in line.lower()
              and any(w in line.lower() for w in ("cannot", "damaged", "error"))]
    assert len(errors) == 1 and lines[-1] == errors[0], text
    for word in words:
        assert word.lower() in errors[0].lower(), errors[0]
    return errors[0]


READ_ONLY = [  # (command line, the folder that is read-only, the file the message names)
    (["eval", "finished"], "finished", "eval_test.json"),
    (["report", "finished"], "finished", "report.html"),
    (["predict", "finished", "images", "--plot", "out/sheet.png"], "out", "sheet.png"),
    (["explain", "finished", "images", "--out", "out/explain"], "out", "explain"),
    (["visualize", "finished", "--out", "out/vis"], "out", "vis"),
]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
@pytest.mark.parametrize("args,folder,named", READ_ONLY, ids=[a[0] for a, _, _ in READ_ONLY])
def test_a_folder_that_cannot_be_written_is_one_line(old, cnnctl, monkeypatch, args, folder,
                                                     named, code):
    (old / "out").mkdir()
    (old / "out" / "mine.txt").write_text("not cnnctl's")
    before = snapshot(old)
    fail_under(monkeypatch, old / folder, code)
    line = one_line_error(cnnctl(*args), named, WORDS[code])
    assert "nothing was changed" in line or "is kept" in line, line
    monkeypatch.undo()
    assert snapshot(old) == before


def test_a_report_over_an_old_one_keeps_it_on_a_full_disk(old, cnnctl, monkeypatch):
    assert cnnctl("report", "finished").exit_code == 0
    before = snapshot(old)
    fail_under(monkeypatch, old / "finished", errno.ENOSPC)
    line = one_line_error(cnnctl("report", "finished"), "report.html", "disk full")
    assert "the previous report.html is kept" in line
    monkeypatch.undo()
    assert snapshot(old) == before


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_resuming_a_read_only_run_says_so_before_training(old, cnnctl, monkeypatch, code):
    from cnnctl.train import fit

    before = snapshot(old)
    fail_under(monkeypatch, old / "interrupted", code)
    monkeypatch.setattr(fit, "_train", lambda *a, **k: pytest.fail("training started"))
    line = one_line_error(cnnctl("train", "tiny.yaml", "--resume", "interrupted"),
                          "interrupted", WORDS[code], "not resumed")
    assert "nothing was changed" in line
    monkeypatch.undo()
    assert snapshot(old) == before


@pytest.mark.parametrize("name", ["metrics.json", "curves.png"])
def test_a_full_disk_at_the_end_of_training_is_one_line_and_keeps_the_run(old, cnnctl,
                                                                           monkeypatch, name):
    before = snapshot(old / "interrupted")
    fail_under(monkeypatch, old, errno.ENOSPC, names=(name,))
    line = one_line_error(cnnctl("train", "tiny.yaml", "--resume", "interrupted"),
                          name, "disk full")
    monkeypatch.undo()
    after = snapshot(old / "interrupted")
    assert not [n for n in after if ".tmp-" in n]  # no half-written file
    assert set(before) - set(after) <= {n for n in before if n.startswith("backup/")}
    if name == "metrics.json":  # not finished: it can be resumed again
        assert "metrics.json" not in after and "--resume" in line
        assert any(n.startswith("backup/state-") for n in after)
    else:
        assert "metrics.json" in after and "cnnctl report" in line


@pytest.mark.parametrize("name", ["environment.json", "class_names.json"])
def test_a_full_disk_writing_a_new_run_is_one_line(old, cnnctl, monkeypatch, name):
    before = snapshot(old)
    fail_under(monkeypatch, old, errno.ENOSPC, names=(name,))
    one_line_error(cnnctl("train", "tiny.yaml", "--run-dir", "new", "--set", "train.epochs=1"),
                   name, "disk full")
    monkeypatch.undo()
    after = snapshot(old)
    assert {k: after[k] for k in before} == before
