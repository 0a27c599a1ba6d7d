"""Run directories: where a training run writes its config, environment, checkpoints and results."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import yaml

from cnnctl import __version__
from cnnctl import config as config_lib
from cnnctl.errors import CnnctlError

CONFIG = "config.yaml"
CLASS_NAMES = "class_names.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
CURVES = "curves.png"
ENVIRONMENT = "environment.json"
CHECKPOINTS = "checkpoints"
BEST = "best.keras"
LAST = "last.keras"
LOGS = "logs"


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
    if path.is_dir() and any(path.iterdir()):
        names = sorted(p.name for p in path.iterdir())
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


def write_config(path: Path, config: config_lib.Config) -> None:
    """The resolved config (defaults filled in, overrides applied), readable by `cnnctl`.

    Written to a temporary file renamed into place, so config.yaml is never half written.
    """
    data = config.model_dump(mode="json")
    tmp = path / f".{CONFIG}.tmp-{os.getpid()}"
    try:
        tmp.write_text("# resolved config of this run; `cnnctl train` reads it as is\n"
                       + yaml.safe_dump(data, sort_keys=False))
        os.replace(tmp, path / CONFIG)
    finally:
        tmp.unlink(missing_ok=True)


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


def is_unfinished(run_dir: Path, config: config_lib.Config) -> bool:
    """A run of this very config that has a backup and no results yet."""
    run_dir = Path(run_dir)
    backup = run_dir / "backup"
    if (run_dir / METRICS).exists() or not any(backup.glob("state-*.json")):
        return False
    try:
        return load_config(run_dir).config == config
    except CnnctlError:
        return False


def load_config(run_dir: Path) -> config_lib.LoadedConfig:
    """The config a run was trained with."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise CnnctlError(f"{run_dir}: not a run directory (no {CONFIG}); give a directory "
                          "written by `cnnctl train`")
    return config_lib.load(path)
