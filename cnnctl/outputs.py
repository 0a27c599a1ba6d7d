"""Where commands write: a target is refused unless it is new or a previous output of the same
command (recognised by its contents), and every file is written to a temporary name and renamed
into place, so a failed write leaves the old file as it was.

What counts as cnnctl's own output: PNG files carry `Software: cnnctl ...` and `Source: cnnctl
COMMAND` text chunks; report pages a `<meta name="generator" content="cnnctl report">` tag;
evaluation JSON files the keys of an evaluation report; exports the layout of their format (a
SavedModel folder, a tf2onnx ONNX file, a TFLite flatbuffer). Nothing else is ever replaced or
deleted, whatever the options.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from cnnctl import __version__, runs
from cnnctl.errors import CnnctlError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPORT_GENERATOR = '<meta name="generator" content="cnnctl report">'
EVAL_KEYS = {"accuracy", "loss", "num_samples", "class_names", "per_class", "confusion_matrix"}
SAVEDMODEL_ENTRIES = {"saved_model.pb", "variables", "assets", "fingerprint.pb", "keras_metadata.pb"}


# --------------------------------------------------------------------------- recognising outputs
def png_metadata(command: str) -> dict[str, str]:
    """The text chunks that mark a PNG as written by `cnnctl COMMAND`."""
    return {"Software": f"cnnctl {__version__}", "Source": f"cnnctl {command}"}


def is_png_of(path: Path, command: str) -> bool:
    """A PNG file written by `cnnctl COMMAND` (see `png_metadata`)."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                return False
        from PIL import Image

        with Image.open(path) as image:
            return image.text.get("Source") == f"cnnctl {command}"
    except (OSError, ValueError, SyntaxError):
        return False


def is_report(path: Path) -> bool:
    """An HTML page written by `cnnctl report` (pages of cnnctl 0.1.0 before the generator tag
    are known by their title)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return REPORT_GENERATOR.encode() in head or (
        head.startswith(b"<!DOCTYPE html>") and b"<title>cnnctl run " in head)


def is_eval_json(path: Path) -> bool:
    """A JSON file written by `cnnctl eval`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and EVAL_KEYS <= set(data)


def is_savedmodel(path: Path) -> bool:
    """A TensorFlow SavedModel folder and nothing else (as `cnnctl export` writes it)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    entries = {p.name for p in path.iterdir()}
    return "saved_model.pb" in entries and entries <= SAVEDMODEL_ENTRIES


def is_onnx(path: Path) -> bool:
    """An ONNX model written by tf2onnx: a ModelProto starting with its ir_version (field 1)
    and naming tf2onnx as its producer."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head[:1] == b"\x08" and b"tf2onnx" in head


def is_tflite(path: Path) -> bool:
    """A TFLite flatbuffer (file identifier TFL3 at bytes 4..8)."""
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == b"TFL3"
    except OSError:
        return False


# --------------------------------------------------------------------------- checking targets
def _protected(path: Path) -> str | None:
    """Why `path` may never be written over, whatever it holds, or None."""
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd:
        return "is the current directory"
    if resolved in cwd.parents:
        return "is a folder above the current directory"
    if resolved == Path.home().resolve():
        return "is your home directory"
    if resolved.is_dir() and (resolved / runs.CONFIG).exists():  # made by `cnnctl train`
        return "is a run directory (it holds config.yaml)"
    return None


def _listing(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_file(path: Path, option: str, command: str, recognise: Callable[[Path], bool], *,
               what: str, force: bool | None = None,
               advice: str = "choose another name") -> Path:
    """Refuse to write the file `path` unless it is new or a previous output `recognise` knows.

    Args:
        path: the file a command is about to write.
        option: how the user named it (`--out`, `--plot`), for the message.
        command: the command, for the message (`report`).
        recognise: True for a previous output of this command.
        what: what the command writes, for the message ("an HTML report").
        force: None: a previous output is replaced; False: it is refused unless --force is
            given; True: it is replaced (--force never replaces anything else).
        advice: what to do instead, for the message.

    Returns:
        `path`.

    Raises:
        CnnctlError: the target is not the command's to replace.
    """
    path = Path(path)
    named = f"{option} {path}" if option else str(path)
    reason = _protected(path) if path.exists() or path.is_symlink() else None
    if reason:
        raise CnnctlError(f"{named}: {reason}; {command} writes {what} there only as a new "
                          f"file: choose a file name that does not exist yet")
    if path.is_dir():
        raise CnnctlError(f"{named}: is a folder; {command} writes {what}: give a file name "
                          f"(e.g. {path / _example(what)})")
    if path.is_symlink() or (path.exists() and not recognise(path)):
        raise CnnctlError(f"{named}: a file that cnnctl {command} did not write is there; "
                          f"{advice} (cnnctl never replaces files it did not write)")
    if path.exists() and force is False:
        raise CnnctlError(f"{named}: holds {what} from an earlier cnnctl {command}; pass "
                          f"--force to replace it, or {advice}")
    _check_parent(path, named)
    return path


def check_folder(path: Path, option: str, command: str, recognise: Callable[[Path], bool], *,
                 what: str, force: bool | None = None) -> Path:
    """Refuse to write into (or as) the folder `path` unless it is new, empty, or holds only
    previous outputs that `recognise` knows (see `check_file` for the arguments).

    For a folder that *is* one output (a SavedModel), `recognise` is asked about the folder;
    for a folder of outputs (explain's PNGs), about each file in it.
    """
    path = Path(path)
    named = f"{option} {path}" if option else str(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise CnnctlError(f"{named}: a file is there, not a folder; {command} writes {what} into "
                          "a folder: choose a folder that does not exist yet")
    if path.is_dir():
        reason = _protected(path)
        entries = list(path.iterdir())
        if reason:
            raise CnnctlError(f"{named}: {reason}; {command} writes {what} into a folder of its "
                              f"own: choose a new one (e.g. {option} {_example(what)})")
        if entries and not recognise(path):
            others = [p.name for p in entries if p.is_dir() or p.is_symlink() or not recognise(p)]
            if others or force is not None:
                raise CnnctlError(f"{named}: holds files that cnnctl {command} did not write "
                                  f"({_listing(others or [p.name for p in entries])}); choose a "
                                  "new or empty folder (cnnctl never replaces files it did not write)")
        if entries and force is False:
            raise CnnctlError(f"{named}: holds {what} from an earlier cnnctl {command}; pass "
                              "--force to replace it, or choose another folder")
    _check_parent(path, named)
    return path


def _example(what: str) -> str:
    """A name to suggest for an output of this kind."""
    return {"an HTML report": runs.REPORT, "a prediction sheet (PNG)": "predictions.png",
            "heat-map PNGs": "explain", "PNGs": "visualize",
            "a SavedModel export": "savedmodel"}.get(what, "cnnctl-output")


def _check_parent(path: Path, named: str) -> None:
    existing = next((p for p in path.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise CnnctlError(f"{named}: {existing} is a file, not a folder; choose another path")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise CnnctlError(f"{named}: cannot write there (Permission denied: {existing}); "
                          "choose a writable path")


# --------------------------------------------------------------------------- writing atomically
def _temporary(path: Path, tag: str) -> Path:
    # the suffix stays last: Keras saves only to a name ending in .keras
    return path.parent / f".{path.stem}.{tag}-{os.getpid()}{path.suffix}"


def write_file(path: Path, write: Callable[[Path], object], *, sync: bool = False,
               error: "Callable[[Path, OSError], Exception] | None" = None) -> Path:
    """Call `write(tmp)` for a temporary file beside `path`, then rename it to `path`: readers
    see the old file or the whole new one, and a write that fails, or is interrupted, leaves the
    old file. The one atomic writer of cnnctl: outputs, run files and checkpoints.

    Args:
        sync: flush the file to the disk before the rename (checkpoints: a power cut leaves the
            old file or the whole new one).
        error: the exception to raise for an OSError (default: a CnnctlError saying what is
            kept and what to do).

    Raises:
        CnnctlError: the file system refused the write (full, read-only, ...).
    """
    path = Path(path)
    make_folder(path.parent, error=error and (lambda _, e: error(path, e)), target=path)
    tmp = _temporary(path, "tmp")
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise (error or _not_written)(path, e) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path


def problem(error: OSError) -> str:
    """What a file-system error means, in words: read-only, permission denied, disk full, or
    the system's own words."""
    if error.errno == errno.EROFS:
        return "read-only file system"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return (error.strerror or str(error) or type(error).__name__).lower()


def advice(error: OSError) -> str:
    """What to do about a file-system error."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space and run the command again"
    return "make it writable or choose another place, and run the command again"


def fs_error(path: Path, error: OSError, kept: str | None = None) -> CnnctlError:
    """The one message of a write the file system refused: `PATH: cannot write (disk full);
    the previous metrics.json is kept; free some space and run the command again`.

    Args:
        kept: what is left as it was (default: the previous file, or nothing when it is new).
    """
    path = Path(path)
    if kept is None:
        kept = (f"the previous {path.name} is kept" if path.exists() or path.is_symlink()
                else "nothing was changed")
    return CnnctlError(f"{path}: cannot write ({problem(error)}); {kept}; {advice(error)}")


def _not_written(path: Path, error: OSError) -> CnnctlError:
    return fs_error(path, error)


def make_folder(folder: Path, *, error: "Callable[[Path, OSError], Exception] | None" = None,
                target: Path | None = None) -> Path:
    """`folder.mkdir(parents=True, exist_ok=True)`, a refusal of the file system raised as
    `fs_error` (naming `target`, the file to be written there, when given)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise (error or (lambda _, e: fs_error(target or folder, e)))(folder, e) from None
    return folder


def write_text(path: Path, text: str) -> Path:
    """`write_file` for text (UTF-8)."""
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_folder(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` for a temporary folder beside `path`, then put it in the place of
    `path` (a previous output, already checked): a failed write leaves the old folder."""
    path = Path(path)
    make_folder(path.parent, target=path)
    tmp, old = _temporary(path, "tmp"), _temporary(path, "old")
    try:
        write(tmp)
        if path.exists():
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:
        raise _not_written(path, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# --------------------------------------------------------------------------- output names
def unique_stems(files: list[str]) -> dict[str, str]:
    """A distinct name for each file, for outputs named after their input: the file's stem
    (`0001`), with as many parent folders in front as it takes to tell files apart
    (`cat_0001`, `dog_0001`), then the extension (`0001.jpg`, `0001.png`), then a number.

    Returns:
        {file as given: name}; the same file given twice (by any path) gets the same name.
    """
    real = {f: os.path.realpath(f) for f in files}
    distinct = list(dict.fromkeys(real.values()))
    depth = dict.fromkeys(distinct, 0)
    suffix = dict.fromkeys(distinct, False)

    def name(f: str) -> str:
        p = Path(f)
        folders = [part for part in p.parent.parts if part != p.anchor][-depth[f]:] if depth[f] else []
        return "_".join([*folders, p.name if suffix[f] else p.stem])

    def clashes() -> list[list[str]]:
        groups = collections.defaultdict(list)
        for f in distinct:
            groups[name(f)].append(f)
        return [g for g in groups.values() if len(g) > 1]

    changed = True
    while changed:
        changed = False
        for group in clashes():
            same_folder = len({Path(f).parent for f in group}) == 1
            deeper = [] if same_folder else [
                f for f in group if depth[f] < len(Path(f).parent.parts) - 1]
            if deeper:  # folders may still tell them apart
                for f in deeper:
                    depth[f] += 1
                changed = True
            elif not all(suffix[f] for f in group):
                for f in group:
                    suffix[f] = True
                changed = True
    names: dict[str, str] = {}
    taken: collections.Counter = collections.Counter()
    for f in distinct:
        base = name(f)
        taken[base] += 1
        names[f] = base if taken[base] == 1 else f"{base}-{taken[base]}"
    return {f: names[real[f]] for f in files}


def files_in(folder: Path) -> Iterator[Path]:
    """The files directly in `folder` (none when it does not exist)."""
    folder = Path(folder)
    return (p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else iter(())
