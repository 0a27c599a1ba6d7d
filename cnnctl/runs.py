"""Run directories: where a training run writes its config, environment, checkpoints and results."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import yaml

from cnnctl import __version__
from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.errors import CnnctlError

CONFIG = "config.yaml"
SOURCE_CONFIG = "source_config.yaml"  # the config file as its user wrote it
CLASS_NAMES = "class_names.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
CURVES = "curves.png"
ENVIRONMENT = "environment.json"
CHECKPOINTS = "checkpoints"
BEST = "best.keras"
LAST = "last.keras"
LOGS = "logs"
BACKUP = "backup"
LOCK = ".lock"  # held while a process trains the run (`cnnctl.train.lock`)
FAILED = "failed.json"  # why training stopped, while the run is not resumed past it
REPORT = "report.html"  # where `cnnctl report` writes by default
# backup/ holds the newest training states, each a model file and a state file, by global step
BACKUP_MODEL = "ckpt-{step:09d}.keras"
BACKUP_STATE = "state-{step:09d}.json"
BACKUP_STATES = "state-*.json"
BACKUP_FILES = ("ckpt-*.keras", BACKUP_STATES, ".ckpt-*.tmp-*.keras", ".state-*.tmp-*")  # ours


def eval_files(folder: Path, tag: str, prefix: str = "") -> dict[str, Path]:
    """Where `cnnctl eval` writes in `folder`: `eval_<tag>.json` and
    `confusion_matrix_<tag>.png`, with `prefix` in front (a .keras file's name)."""
    return {"json": Path(folder) / f"{prefix}eval_{tag}.json",
            "confusion_matrix": Path(folder) / f"{prefix}confusion_matrix_{tag}.png"}


def first_epoch(rows: list[dict]) -> int:
    """What the `epoch` column of history.csv rows calls the first epoch: 1, or 0 in files
    written before it counted from 1 (Keras's CSVLogger counts from 0)."""
    try:
        return 0 if rows and int(float(rows[0]["epoch"])) == 0 else 1
    except (KeyError, ValueError):
        return 1


def monitor_mode(monitor: str) -> str:
    """"max" for a metric that grows as the model gets better (accuracy, balanced accuracy,
    AUC, precision, recall, F1), "min" for the others (losses)."""
    return "max" if any(k in monitor for k in ("acc", "auc", "precision", "recall", "f1")) else "min"


def default_dir(loaded: config_lib.LoadedConfig) -> Path:
    """runs/<config name>/<timestamp>/ (run.dir and run.name may change both parts)."""
    name = loaded.config.run.name or Path(loaded.file).stem
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(loaded.config.run.dir) / name / stamp
    n = 1
    while path.exists():  # two runs in the same second
        n += 1
        path = Path(loaded.config.run.dir) / name / f"{stamp}-{n}"
    return path


def check_can_create(loaded: config_lib.LoadedConfig, run_dir: Path | None) -> tuple[Path, str]:
    """The run directory `create` would make, and the option that names it, checked cheaply
    (before any data is loaded): it is new or empty (no run, no file of the user's is in it),
    no file is in its way, and the nearest folder that exists is writable.

    Raises:
        CnnctlError: it cannot be created or already holds a run.
    """
    path = Path(run_dir) if run_dir else default_dir(loaded)
    option = "--run-dir" if run_dir else "run.dir (or --run-dir)"
    if (path / CONFIG).exists():
        raise CnnctlError(f"{path}: already holds a run (config.yaml exists); choose another "
                          "--run-dir or remove it")
    names = sorted(p.name for p in path.iterdir() if p.name != LOCK) if path.is_dir() else []
    if names:
        shown = ", ".join(names[:3]) + (f", ... ({len(names)} in all)" if len(names) > 3 else "")
        raise CnnctlError(f"{path}: holds files that are not a run ({shown}); a run directory "
                          f"starts new or empty, so nothing of yours is overwritten: choose "
                          f"another {option}")
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:  # mkdir would only say "Not a directory" or "File exists"
        raise CnnctlError(f"{path}: cannot create the run directory: {blocker} is a file, not a "
                          f"folder; choose another {option}")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f": {existing}"
        raise CnnctlError(f"{path}: cannot create the run directory (Permission denied{where}); "
                          f"choose a writable {option}")
    return path, option


def create(loaded: config_lib.LoadedConfig, run_dir: Path | None) -> Path:
    """Make the run directory (refusing one that already holds a run) and write config.yaml.

    Raises:
        CnnctlError: the directory cannot be created or already holds a run.
    """
    path, option = check_can_create(loaded, run_dir)
    made = [p for p in (path / CHECKPOINTS, path, *path.parents) if not p.exists()]
    try:
        (path / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        write_config(path, loaded.config)
        write_source_config(path, loaded)
    except OSError as e:
        for folder in made:  # leave nothing behind that looks like the start of a run
            try:
                folder.rmdir()
            except OSError:
                break
        # name the folder that failed when it is not the run's own (e.g. a parent one can't write)
        failed = Path(e.filename) if e.filename else path
        where = "" if failed == path or path in failed.parents else f": {failed}"
        raise CnnctlError(f"{path}: cannot create the run directory ({e.strerror or e}{where}); "
                          f"choose a writable {option}") from None
    return path


def write_config(path: Path, config: schema_lib.Config) -> None:
    """The resolved config (defaults filled in, overrides applied), readable by `cnnctl`.

    Written to a temporary file renamed into place, so config.yaml is never half written.
    """
    from cnnctl import outputs

    data = config.model_dump(mode="json")
    text = "# resolved config of this run; `cnnctl train` reads it as is\n" + yaml.safe_dump(
        data, sort_keys=False)
    # the OSError itself: `create` turns it into its message and removes what it made
    outputs.write_file(path / CONFIG, lambda tmp: tmp.write_text(text, encoding="utf-8"),
                       error=lambda _, e: e)


def write_source_config(path: Path, loaded: config_lib.LoadedConfig) -> None:
    """The config file as its user wrote it (SOURCE_CONFIG), with the `--set` overrides named
    in a comment above it: what the report shows. Nothing is written for a config without text."""
    if loaded.text is None:
        return
    from cnnctl import outputs

    header = f"# {loaded.file}, as written" + (
        "; run with " + " ".join(f"--set {item}" for item in loaded.overrides)
        if loaded.overrides else "") + " (the resolved config is config.yaml)\n"
    outputs.write_file(path / SOURCE_CONFIG, lambda tmp: tmp.write_text(
        header + loaded.text, encoding="utf-8"), error=lambda _, e: e)


def write_json(path: Path, data) -> None:
    """`data` as indented JSON, renamed into place once complete."""
    from cnnctl import outputs

    outputs.write_text(path, json.dumps(data, indent=2) + "\n")


def environment() -> dict:
    """Versions, devices and git commit: what is needed to reproduce or explain a run."""
    from cnnctl.backend import keras

    env = {
        "cnnctl": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "command": sys.argv,
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    try:
        import tensorflow as tf

        env["tensorflow"] = tf.__version__
        env["devices"] = [d.name for d in tf.config.list_physical_devices()]
    except ImportError:
        env["tensorflow"] = None
    try:
        import numpy

        env["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover - numpy comes with keras
        pass
    env["git_commit"] = _git_commit(Path.cwd())
    env["cpu_count"] = os.cpu_count()
    return env


def _git_commit(where: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_unfinished(loaded: config_lib.LoadedConfig) -> Path | None:
    """The newest run of this config under run.dir that `is_unfinished`."""
    name = loaded.config.run.name or Path(loaded.file).stem
    folder = Path(loaded.config.run.dir) / name
    candidates = sorted((p for p in folder.glob("*/backup") if p.is_dir()),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    return next((b.parent for b in candidates if is_unfinished(b.parent, loaded.config)), None)


def is_unfinished(run_dir: Path, config: schema_lib.Config) -> bool:
    """A run of this very config that has a backup and no results yet."""
    return rerun(run_dir, config) == "resume"


def is_finished(run_dir: Path) -> bool:
    """The run wrote its results: a complete, valid metrics.json (an empty or damaged one, of a
    write that failed, does not count)."""
    try:
        metrics = read_metrics(run_dir)
    except CnnctlError:
        return False
    return isinstance(metrics, dict) and "epochs" in metrics


def rerun(run_dir: Path, config: schema_lib.Config) -> str | None:
    """What `cnnctl train` of `config` does with `run_dir` when it already holds a run:
    "resume" (an unfinished run of this very config with a backup), "restart" (an unfinished run
    of this config killed before its first backup: nothing of it is worth keeping, no epoch
    was recorded), or None (anything else: a finished run, another config's, one with
    checkpoints but no backup)."""
    run_dir = Path(run_dir)
    if not is_run(run_dir) or is_finished(run_dir):
        return None
    try:
        if load_config(run_dir).config != config:
            return None
    except CnnctlError:
        return None
    if any((run_dir / BACKUP).glob(BACKUP_STATES)):
        return "resume"
    recorded = _history_rows(run_dir / HISTORY) or any((run_dir / CHECKPOINTS).glob("*.keras"))
    return None if recorded else "restart"


# what a run killed before its first backup may hold, all written by cnnctl; cleared to restart it
RESTART_FILES = (CONFIG, SOURCE_CONFIG, ENVIRONMENT, CLASS_NAMES, HISTORY, FAILED, CURVES)


def clear_for_restart(run_dir: Path) -> None:
    """Remove what `rerun` found restartable holds (cnnctl's own files only: a folder that
    also holds a file of the user's stays, and `create` then refuses it)."""
    run_dir = Path(run_dir)
    for name in RESTART_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for pattern in BACKUP_FILES:
        for file in (run_dir / BACKUP).glob(pattern):
            file.unlink(missing_ok=True)
    for file in (run_dir / LOGS).rglob("events.out.tfevents.*"):
        file.unlink(missing_ok=True)
    remove_temporaries(run_dir)
    for folder in sorted((p for p in (run_dir / LOGS).rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    for folder in (run_dir / BACKUP, run_dir / LOGS, run_dir / CHECKPOINTS):
        with contextlib.suppress(OSError):
            folder.rmdir()


def remove_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporary files of writes that never finished (a process killed while it
    wrote a checkpoint, a backup, history.csv, ...) from a run directory and its checkpoints/
    and backup/ folders; those of a process still alive (e.g. `cnnctl eval` writing beside a
    training) stay. Returns the files removed."""
    import re

    removed = []
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / CHECKPOINTS, run_dir / BACKUP):
        for file in folder.glob(".*.tmp-*"):
            match = re.search(r"\.tmp-(\d+)", file.name)
            pid = int(match.group(1)) if match else None
            # this process writes nothing while it cleans up: its own are leftovers too
            if pid is None or not file.is_file() or (pid != os.getpid() and process_alive(pid)):
                continue
            with contextlib.suppress(OSError):
                file.unlink()
                removed.append(file)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def check_run_dir(path: Path) -> None:
    """Refuse a folder that was a run directory and lost its config.yaml (its checkpoints/ are
    there): without it the run's data, and so its test images, are unknown.

    Raises:
        CnnctlError: naming RUN/config.yaml and what still works.
    """
    path = Path(path)
    if path.is_dir() and not is_run(path) and (path / CHECKPOINTS).is_dir():
        raise CnnctlError(f"{path / CONFIG} is missing (the folder has {CHECKPOINTS}/ but no "
                          f"{CONFIG}); put the run's config back to eval or report it, or use "
                          f"its model file: cnnctl predict {path / CHECKPOINTS / BEST} IMAGES")


def load_config(run_dir: Path) -> config_lib.LoadedConfig:
    """The config a run was trained with."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise CnnctlError(f"{run_dir}: not a run directory (no {CONFIG}); give a directory "
                          "written by `cnnctl train`")
    then = "put the run's config back (`cnnctl train` wrote it; source_config.yaml is the " \
           "config as its user wrote it)"
    _text(path, then)  # binary bytes or not UTF-8: named as damaged, not a YAML traceback
    try:
        return config_lib.load(path)
    except CnnctlError:
        raise
    except (yaml.YAMLError, ValueError, TypeError) as e:
        raise DamagedRunFile(path, f"not YAML: {str(e).splitlines()[0][:80]}", then) from None


# --------------------------------------------------------------------------- finding runs
def is_run(path: Path) -> bool:
    """A run directory: a folder with a config.yaml."""
    return (Path(path) / CONFIG).is_file()


def resolve(path: Path) -> tuple[Path, bool]:
    """What a command that opens a trained run should open for `path`: a config's runs folder
    (a folder whose subfolders are runs, e.g. runs/quickstart) stands for its newest finished
    run; anything else is itself.

    Returns:
        (the path to open, whether it was chosen from a folder of runs).
    Raises:
        CnnctlError: `path` is a folder of runs with no finished run, or a folder of such
            folders (runs of several configs).
    """
    path = Path(path)
    if not path.is_dir() or is_run(path) or (path / CHECKPOINTS).is_dir():
        return path, False
    children = sorted(p for p in path.iterdir() if p.is_dir())
    found = [p for p in children if is_run(p)]
    if not found:
        folders = [p for p in children if any(is_run(q) for q in p.iterdir() if q.is_dir())]
        if folders:
            shown = ", ".join(str(p) for p in folders[:3]) + (", ..." if len(folders) > 3 else "")
            raise CnnctlError(f"{path}: holds folders of runs ({shown}), not runs; give one of "
                              "those folders (its newest finished run is used) or a run directory")
        return path, False
    finished = [p for p in found if is_finished(p)]
    if not finished:
        newest = max(found, key=lambda p: (p / CONFIG).stat().st_mtime)
        raise CnnctlError(f"{path}: none of its {len(found)} run(s) has finished (no {METRICS}); "
                          f"give a run directory to use an unfinished run's checkpoints, e.g. "
                          f"{newest}, or see `cnnctl runs {path}`")
    return max(finished, key=lambda p: ((p / METRICS).stat().st_mtime, p.name)), True


def find_runs(folder: Path) -> list[Path]:
    """The run directories under `folder` (itself, if it is one), sorted by path; a run's own
    subfolders are not searched.

    Raises:
        CnnctlError: `folder` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise CnnctlError(f"{folder}: no such folder; give a folder of runs (run.dir of a config, "
                          "`runs` by default)")
    if not folder.is_dir():
        raise CnnctlError(f"{folder}: not a folder; give a folder of runs (run.dir of a config, "
                          "`runs` by default)")
    found = []
    for where, subfolders, _ in os.walk(folder):
        if is_run(Path(where)):
            found.append(Path(where))
            subfolders.clear()
        else:
            subfolders.sort()
    return sorted(found)


def describe(run_dir: Path) -> dict:
    """What `cnnctl runs` shows of a run, read from its files (no model is loaded).

    Returns:
        {"path", "date" (ISO, when it started), "model" (model.name), "epochs" (finished
        epochs: of the newest backup while unfinished),
        "epochs_planned", "test_accuracy" (None if there is none), "state" ("finished": it
        wrote metrics.json; "unfinished": it did not, and has a usable backup to resume from;
        "failed": neither, or its loss became NaN; "training": a process trains it now),
        "detail" (why it failed, or who trains it, else None),
        "bytes" (size on disk)}.
    """
    run_dir = Path(run_dir)
    config = _read_json_or_yaml(run_dir / CONFIG) or {}
    damaged = []
    try:
        metrics = read_metrics(run_dir)
    except DamagedRunFile as e:
        metrics, damaged = None, [f"{METRICS}: {e.why}"]
    try:
        env = read_environment(run_dir) or {}
    except DamagedRunFile:
        env = {}
    started = env.get("time") if isinstance(env, dict) else None
    if not isinstance(started, str):
        started = datetime.datetime.fromtimestamp(
            (run_dir / CONFIG).stat().st_mtime).isoformat(timespec="seconds")
    train = config.get("train") if isinstance(config, dict) else None
    model = config.get("model") if isinstance(config, dict) else None
    state, detail, epochs = _state(run_dir, metrics)
    if damaged:
        state, detail = "damaged", damaged[0]
    test = metrics.get("test") if isinstance(metrics, dict) else None
    accuracy = test.get("accuracy") if isinstance(test, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    return {"path": str(run_dir), "date": started,
            "model": name if isinstance(name, str) else None,
            "epochs": epochs if isinstance(epochs, int) else _history_rows(run_dir / HISTORY),
            "epochs_planned": train.get("epochs") if isinstance(train, dict) and isinstance(
                train.get("epochs"), int) else None,
            "test_accuracy": accuracy if isinstance(accuracy, (int, float)) else None,
            "state": state, "detail": detail, "bytes": _size(run_dir)}


def _state(run_dir: Path, metrics) -> tuple[str, str | None, int | None]:
    """(state, why it failed, epochs done if the files say; else history.csv's rows count)."""
    if isinstance(metrics, dict):
        epochs = metrics.get("epochs")
        return "finished", None, epochs if isinstance(epochs, int) else None
    failed = _read_json_or_yaml(run_dir / FAILED)
    if isinstance(failed, dict) and isinstance(failed.get("epoch"), int):
        return ("failed", f"NaN loss at epoch {failed['epoch']}, step {failed.get('step')}",
                failed["epoch"] - 1)  # history.csv has a row of the epoch that failed
    backup = _usable_backup(run_dir / BACKUP)
    from cnnctl.train import lock  # it reads run files itself: imported when needed

    holder = lock.holder(run_dir)
    if holder is not None:
        return ("training", f"pid {holder.get('pid')} on {holder.get('host')}",
                backup.get("epoch") if backup else None)
    if backup is not None:
        return "unfinished", None, backup.get("epoch")
    return "failed", "no backup to resume from", None


def _usable_backup(folder: Path) -> dict | None:
    """The state of the newest backup whose model file is a whole zip (a cheap check: the
    zip's index only, not every byte as `cnnctl train --resume` checks), or None."""
    import zipfile

    for state_file in sorted(folder.glob("state-*.json"), reverse=True):
        state = _read_json_or_yaml(state_file)
        model = folder / state["model"] if isinstance(state, dict) and isinstance(
            state.get("model"), str) else None
        if model is not None and model.is_file() and zipfile.is_zipfile(model):
            return state
    return None


def _read_json_or_yaml(path: Path):
    """The contents of a JSON or YAML file of a run, or None if it is missing or unreadable."""
    try:
        text = path.read_text()
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return None


def _history_rows(history: Path) -> int:
    try:
        return len(read_history(history) or [])
    except CnnctlError:  # a damaged history.csv: its rows are not counted
        return 0


def _size(folder: Path) -> int:
    total = 0
    for where, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(where, name)).st_size
            except OSError:
                pass
    return total


def human_size(size: int) -> str:
    """Bytes in KiB, MiB or GiB (powers of 1024, the figures of `du -h`)."""
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def format_table(described: list[dict]) -> str:
    """`describe` of several runs as a table with a total line."""
    header = ("run", "date", "model", "epochs", "test acc", "state", "size")
    rows = [(r["path"], r["date"].replace("T", " ")[:16], r["model"] or "-",
             f"{r['epochs']}/{r['epochs_planned'] if r['epochs_planned'] is not None else '?'}",
             "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}",
             r["state"] + (f" ({r['detail']})" if r["detail"] else ""), human_size(r["bytes"]))
            for r in described]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    right = {3, 4, 6}  # numbers
    lines = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in (header, *rows)]
    total = sum(r["bytes"] for r in described)
    lines.append(f"{len(described)} run(s), {human_size(total)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reading run files
class DamagedRunFile(CnnctlError):
    """A file of a run directory that cannot be read as what cnnctl wrote there."""

    def __init__(self, path: Path, why: str, then: str):
        self.path, self.why = Path(path), why
        super().__init__(f"{path} is damaged ({why}); {then}")


_AGAIN = {METRICS: "`cnnctl eval RUN` still scores the run's checkpoint; `cnnctl train "
                   "CONFIG` writes a new run",
          HISTORY: "the checkpoints and metrics.json still work; the learning curves need it",
          ENVIRONMENT: "it only records the versions the run was trained with; the rest of "
                       "the run still works",
          CLASS_NAMES: "give the class names again (they are the data's folder names, in "
                       "order), or train a new run"}


def _file(run_dir: Path, name: str) -> Path:
    run_dir = Path(run_dir)
    return run_dir if run_dir.is_file() or run_dir.name == name else run_dir / name


def _text(path: Path, then: str) -> str | None:
    """The UTF-8 text of a run file, or None when it does not exist."""
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CnnctlError(f"{path}: cannot read ({(e.strerror or str(e)).lower()}); "
                          "make it readable") from None
    if b"\0" in data:
        raise DamagedRunFile(path, "binary bytes, not text", then)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DamagedRunFile(path, "not UTF-8 text", then) from None


def _json(path: Path, then: str):
    text = _text(path, then)
    if text is None:
        return None
    if not text.strip():
        raise DamagedRunFile(path, "empty", then)
    try:
        return json.loads(text)
    except ValueError as e:
        why = f"not JSON: {e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) \
            else "not JSON"
        raise DamagedRunFile(path, why, then) from None


def _kind(value) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def read_metrics(run_dir: Path) -> dict | None:
    """metrics.json of a run (None when there is none: the run did not finish), checked: a JSON
    object whose `epochs` is a number and whose `test`/`val` figures are numbers.

    Raises:
        DamagedRunFile: it is there but not what `cnnctl train` writes.
    """
    path = _file(run_dir, METRICS)
    then = _AGAIN[METRICS]
    data = _json(path, then)
    if data is None and not path.is_file():
        return None
    if not isinstance(data, dict):
        raise DamagedRunFile(path, f"not a JSON object: {_kind(data)}", then)
    if "epochs" in data and (not isinstance(data["epochs"], int) or isinstance(data["epochs"], bool)):
        raise DamagedRunFile(path, f"epochs is {_kind(data['epochs'])}, not a whole number", then)
    for split in ("test", "val"):
        figures = data.get(split)
        if split in data and not (isinstance(figures, dict) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in figures.values())):
            raise DamagedRunFile(path, f"its {split} figures are not numbers", then)
    for key in ("best_checkpoint", "test_time_augmentation"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise DamagedRunFile(path, f"{key} is {_kind(data[key])}, not a string", then)
    if "history" in data and not isinstance(data["history"], dict):
        raise DamagedRunFile(path, f"history is {_kind(data['history'])}, not an object", then)
    return data


def read_environment(run_dir: Path) -> dict | None:
    """environment.json of a run (None when there is none), a JSON object.

    Raises:
        DamagedRunFile: it is there but not a JSON object.
    """
    path = _file(run_dir, ENVIRONMENT)
    data = _json(path, _AGAIN[ENVIRONMENT])
    if data is None and not path.is_file():
        return None
    if not isinstance(data, dict):
        raise DamagedRunFile(path, f"not a JSON object: {_kind(data)}", _AGAIN[ENVIRONMENT])
    return data


def read_class_names(run_dir: Path) -> list[str] | None:
    """class_names.json of a run (None when there is none): a list of distinct strings.

    Raises:
        DamagedRunFile: it is there but not such a list.
    """
    path = _file(run_dir, CLASS_NAMES)
    then = _AGAIN[CLASS_NAMES]
    data = _json(path, then)
    if data is None and not path.is_file():
        return None
    if not isinstance(data, list) or not data:
        raise DamagedRunFile(path, "not a list of class names: "
                             + (_kind(data) if not isinstance(data, list) else "an empty list"), then)
    if not all(isinstance(n, str) and n for n in data):
        raise DamagedRunFile(path, "not a list of class names: not all are strings", then)
    if len(set(data)) != len(data):
        raise DamagedRunFile(path, "a class name is there twice", then)
    return data


_NOT_NUMBERS = {"", "na", "nan", "-nan", "inf", "-inf", "+inf", "infinity", "-infinity"}


def read_history(run_dir: Path) -> list[dict[str, str]] | None:
    """The rows of history.csv (of a run directory, or the file itself), checked: a header,
    every row with as many cells as the header, every cell a number (or "NA" / empty, a value
    an epoch did not log). None when there is no such file.

    Raises:
        DamagedRunFile: a row that is not what `cnnctl train` writes.
    """
    import csv

    path = _file(run_dir, HISTORY)
    then = _AGAIN[HISTORY]
    text = _text(path, then)
    if text is None:
        return None
    try:
        table = list(csv.reader(text.splitlines()))
    except csv.Error as e:
        raise DamagedRunFile(path, f"not CSV: {e}", then) from None
    if not table:
        return []
    header = table[0]
    if not header or any(not name.strip() for name in header) or len(set(header)) != len(header):
        raise DamagedRunFile(path, "its first line is not a row of column names", then)
    rows = []
    for line, cells in enumerate(table[1:], start=2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise DamagedRunFile(path, f"line {line} has {len(cells)} cells, the header "
                                 f"{len(header)}", then)
        for name, cell in zip(header, cells):
            if cell.strip().lower() in _NOT_NUMBERS:
                if name == "epoch":
                    raise DamagedRunFile(path, f"line {line}: no epoch number", then)
                continue
            try:
                value = float(cell)
            except ValueError:
                raise DamagedRunFile(path, f"line {line}: {cell[:20]!r} in column {name[:30]} "
                                     "is not a number", then) from None
            if name == "epoch" and value != int(value):
                raise DamagedRunFile(path, f"line {line}: epoch {cell[:20]} is not a whole "
                                     "number", then)
        rows.append(dict(zip(header, cells)))
    return rows
