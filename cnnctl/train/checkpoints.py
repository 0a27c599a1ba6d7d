"""Checkpoints and backups that survive crashes: written atomically, checked on load, resumable.

A backup is a full `.keras` model (weights and optimizer state) plus a JSON state file: the
epoch and step it was taken at, the random-generator states Keras does not save, and the state
of the callbacks that carry memory across epochs. Both are written to a temporary file and
renamed into place, the state file last, so the newest state file always names a complete
model file. The two newest backups are kept: if the newest is corrupt, the one before is used.
They are removed when the run finishes (`prune_finished`), unless `run.keep` lists `backup`.

best.keras and last.keras hold the model and its weights, not the optimizer state (unless
`run.keep` lists `optimizer_state`): that is what `cnnctl eval`, `predict` and `export` need, a
third of the size with adam, and resuming uses the backup anyway.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import signal
from pathlib import Path

import warnings

import numpy as np

from cnnctl import keras_compat, runs
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError

BACKUP_DIR = runs.BACKUP
KEEP = 2


class CheckpointWriteError(CnnctlError):
    """A checkpoint or backup could not be written (e.g. the disk is full)."""


def atomic_save(model: keras.Model, path: Path, optimizer_state: bool = True) -> None:
    """model.save(path), through a temporary file renamed into place.

    Args:
        model: the model to save.
        path: the .keras file to write.
        optimizer_state: False saves the model as an uncompiled one, without its optimizer.

    Raises:
        CheckpointWriteError: the file could not be written (the previous one is kept).
    """
    from cnnctl import outputs

    def save(tmp: Path) -> None:
        with contextlib.nullcontext() if optimizer_state else keras_compat.uncompiled(model):
            model.save(tmp)

    outputs.write_file(Path(path), save, sync=True, error=_write_error)


def _write_error(path: Path, e: OSError) -> CheckpointWriteError:
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    return CheckpointWriteError(
        f"{path}: {'disk full' if full else e.strerror or e} while writing the checkpoint; "
        f"the previous {path.name} (if any) is kept. "
        + ("Free some space" if full else "Check the folder") + ", then run the same `cnnctl "
        "train` command again: it resumes the run from its newest backup, or starts it over if "
        "it stopped before its first one.")


def load_weights(model: keras.Model, path: Path) -> None:
    """The weights of a .keras checkpoint into a compiled model, whether or not the file holds
    optimizer state; where it holds none, the model's optimizer keeps its own."""
    with warnings.catch_warnings():
        # Keras warns that the optimizer's variables are skipped: on purpose (see atomic_save)
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def atomic_write_text(path: Path, text: str) -> None:
    """A backup's text file, flushed to the disk and renamed into place."""
    from cnnctl import outputs

    def error(path: Path, e: OSError) -> CheckpointWriteError:
        return CheckpointWriteError(str(outputs.fs_error(path, e)))

    outputs.write_file(Path(path), lambda tmp: tmp.write_text(text), sync=True, error=error)


def seed_states(model: keras.Model) -> list[list[int]]:
    """The states of the model's random generators (dropout, augmentation), which `save` omits."""
    return [np.asarray(v.numpy()).tolist() for v in keras_compat.seed_variables(model)]


def metric_states(model: keras.Model) -> list:
    """The running totals of the model's metrics (the loss's mean and the compiled metrics) in
    the middle of an epoch."""
    return [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in model.metrics_variables]


class ResumeMetrics(keras.callbacks.Callback):
    """Adds the metric totals of a backup taken mid-epoch to the resumed epoch's, so its history
    row, checkpoint choice and early-stopping memory count every step of the epoch, not only
    the steps after the resume point.

    The totals go in at the end of the resumed epoch's first call into the backend: TensorFlow
    makes the compiled metrics' variables only then. Every metric cnnctl compiles keeps sums
    (a mean's total and count, counts of hits, a confusion matrix), so the first call's sums
    plus the backup's are the epoch's, added in the order the uninterrupted run adds them.
    """

    def __init__(self, states: list | None):
        super().__init__()
        self.states = states

    def on_train_batch_end(self, batch, logs=None):
        if self.states is None:
            return
        variables = self.model.metrics_variables
        if len(variables) != len(self.states):
            raise CnnctlError(f"the backup holds {len(self.states)} metric totals, the model "
                              f"{len(variables)}; resume with the run's own config")
        for variable, value in zip(variables, self.states):
            saved = np.asarray(value, dtype=variable.dtype)
            variable.assign(saved + np.asarray(keras.ops.convert_to_numpy(variable)))
        self.states = None  # the epochs after it start from zero, as Keras starts them


def restore_seed_states(model: keras.Model, states: list) -> None:
    for variable, value in zip(keras_compat.seed_variables(model), states):
        variable.assign(np.asarray(value, dtype=variable.dtype))


# --------------------------------------------------------------------------- callbacks
class NanGuard(keras.callbacks.Callback):
    """Stops at the first batch whose loss is NaN or infinite and remembers where.

    Other callbacks ask `failed` before writing, so the last good checkpoint and backup survive
    (TerminateOnNaN alone lets the epoch-end checkpoint overwrite them with broken weights).
    """

    def __init__(self):
        super().__init__()
        self.failed: tuple[int, int] | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.failed is None:
            self.failed = (self.epoch, batch)
            self.model.stop_training = True


class Checkpoints(keras.callbacks.Callback):
    """best.keras (by `monitor`) and last.keras, each written atomically at every epoch end,
    with the optimizer state only if `optimizer_state`."""

    def __init__(self, folder: Path, monitor: str, guard: NanGuard, interruption: Interruption,
                 best: float | None = None, weights=contextlib.nullcontext,
                 optimizer_state: bool = False):
        super().__init__()
        self.folder, self.monitor, self.guard = Path(folder), monitor, guard
        self.interruption = interruption
        self.weights = weights  # () -> context in which the model holds the weights to save
        self.optimizer_state = optimizer_state
        self.mode = runs.monitor_mode(monitor)
        self.best = best

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.failed or self.interruption:
            return
        value = (logs or {}).get(self.monitor)
        with self.weights():
            atomic_save(self.model, self.folder / runs.LAST, self.optimizer_state)
            if value is not None and math.isfinite(float(value)) and self.improved(float(value)):
                self.best = float(value)
                atomic_save(self.model, self.folder / runs.BEST, self.optimizer_state)


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """`optimizer.ema_momentum`: validation runs on the optimizer's moving average of the weights
    (Keras's SwapEMAWeights), and so do best.keras and last.keras (`averaged()` around their
    writing); training and the backups keep the raw weights next to the average, so a resumed run
    continues exactly.

    Keras's `fit` ends by copying the average into the model. Where training goes on after a
    `fit` (a resumed run finishes its interrupted epoch in a `fit` of its own), `restore_raw()`
    puts back the raw weights of that last epoch end.
    """

    def __init__(self):
        super().__init__(swap_on_epoch=False)
        self.raw = None

    def averaged(self):
        """A context in which the model holds the averaged weights."""
        return keras_compat.ema_weights(self)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.params["epochs"] - 1:
            self.raw = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]

    def restore_raw(self) -> None:
        for variable, value in zip(self.model.trainable_variables, self.raw):
            variable.assign(value)


class Interruption:
    """Whether a signal stopped training in the middle of an epoch, and where: set by
    `SignalStop`, read by `Checkpoints` and `Backups`, for which the end of an interrupted epoch
    is no epoch end (no checkpoint, no epoch-end backup: the step backup is the newest state)."""

    def __init__(self):
        self.stopped_at: tuple[int, int] | None = None  # (epoch, steps done in it)

    def __bool__(self) -> bool:
        return self.stopped_at is not None


class Backups(keras.callbacks.Callback):
    """Full training state at every epoch end and, if asked, every `every_steps` steps.

    A NaN or infinite loss (`guard`) is recorded in RUN/failed.json, so `cnnctl runs` tells the
    run from one that can simply be resumed; the next backup (of a resumed run) removes it.
    """

    def __init__(self, run_dir: Path, guard: NanGuard, interruption: Interruption,
                 every_steps: int | None, steps_per_epoch: int, extra_state, start_epoch: int = 0,
                 start_step: int = 0):
        super().__init__()
        self.dir = Path(run_dir) / BACKUP_DIR
        self.guard, self.interruption = guard, interruption
        self.every, self.spe = every_steps, steps_per_epoch
        self.extra_state = extra_state  # () -> dict of other callbacks' state
        self.epoch, self.offset = start_epoch, start_step  # the first epoch may start mid-way

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.offset = 0
        if not self.guard.failed and not self.interruption:
            self.save(epoch + 1, 0)

    def on_train_batch_end(self, batch, logs=None):
        step = self.offset + batch + 1
        if self.every and not self.guard.failed and step % self.every == 0 and step < self.spe:
            self.save(self.epoch, step)

    def on_train_end(self, logs=None):
        if self.guard.failed:
            epoch, batch = self.guard.failed
            atomic_write_text(self.dir.parent / runs.FAILED, json.dumps(
                {"reason": "nan_loss", "epoch": epoch + 1, "step": batch + 1}, indent=1) + "\n")

    def save(self, epoch: int, step: int) -> Path:
        """Write a backup from which training resumes at (epoch, step)."""
        from cnnctl import outputs

        outputs.make_folder(self.dir, error=_write_error)
        global_step = epoch * self.spe + step
        model_file = self.dir / runs.BACKUP_MODEL.format(step=global_step)
        atomic_save(self.model, model_file)
        state = {"epoch": epoch, "step": step, "global_step": global_step,
                 "model": model_file.name, "seed_states": seed_states(self.model),
                 **self.extra_state()}
        if step:  # the epoch's figures so far: the resumed epoch logs what the whole one would
            state["metric_states"] = metric_states(self.model)
        atomic_write_text(self.dir / runs.BACKUP_STATE.format(step=global_step),
                          json.dumps(state, indent=1))
        for old in sorted(self.dir.glob(runs.BACKUP_STATES))[:-KEEP]:
            old_model = self.dir / json.loads(old.read_text()).get("model", "")
            old.unlink(missing_ok=True)
            if old_model.name != model_file.name:
                old_model.unlink(missing_ok=True)
        (self.dir.parent / runs.FAILED).unlink(missing_ok=True)  # training went on past it
        return model_file


def prune_finished(run_dir: Path, keep: list[str]) -> None:
    """What a finished run keeps (`run.keep`): remove backup/ unless `keep` lists "backup", and
    checkpoints/last.keras unless it lists "last" (only beside a best.keras). Only files that
    cnnctl writes there are removed, so a file of the user's in backup/ keeps the folder."""
    run_dir = Path(run_dir)
    if "backup" not in keep:
        folder = run_dir / BACKUP_DIR
        for pattern in runs.BACKUP_FILES:
            for file in folder.glob(pattern):
                file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # missing, or not empty
            folder.rmdir()
    best, last = run_dir / runs.CHECKPOINTS / runs.BEST, run_dir / runs.CHECKPOINTS / runs.LAST
    if "last" not in keep and best.is_file():
        last.unlink(missing_ok=True)


class Signalled(BaseException):
    """SIGINT or SIGTERM reached a worker training in lockstep (`SignalStop(at_once=True)`)."""


class SignalStop(keras.callbacks.Callback):
    """On SIGINT or SIGTERM: write a backup at the current step, then stop training.

    Workers training in lockstep (multi_worker) stop at once instead (`at_once`: the handler
    raises Signalled): a signal reaches one worker, or each at another step, and every step,
    evaluation and model writing of one worker takes part in collective ops that all the others
    must join. Their backups are the epoch-end and every-N-steps ones, written by all at once.
    """

    def __init__(self, backups: Backups, at_once: bool = False):
        super().__init__()
        self.backups, self.at_once = backups, at_once
        self.interruption = backups.interruption
        self.received: int | None = None
        self.previous = {}

    @property
    def stopped_at(self) -> tuple[int, int] | None:
        """(epoch, steps done in it) where a signal stopped training, or None."""
        return self.interruption.stopped_at

    def _handler(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signum
        if self.at_once:
            raise Signalled(signum)

    def on_train_begin(self, logs=None):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handler)

    def on_train_end(self, logs=None):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def on_train_batch_end(self, batch, logs=None):
        if self.received is not None and not self.model.stop_training:
            self.interruption.stopped_at = (self.backups.epoch, self.backups.offset + batch + 1)
            if not self.backups.guard.failed:
                self.backups.save(*self.stopped_at)
            self.model.stop_training = True


# --------------------------------------------------------------------------- resuming
def latest_backup(run_dir: Path) -> tuple[dict, Path, list[str]] | None:
    """The newest backup whose files are complete: (state, model file, problems skipped)."""
    folder = Path(run_dir) / BACKUP_DIR
    problems = []
    for state_file in sorted(folder.glob(runs.BACKUP_STATES), reverse=True):
        try:
            state = json.loads(state_file.read_text())
            model_file = folder / state["model"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(f"{state_file}: corrupt backup state ({e}); using an older backup")
            continue
        reason = check_keras_file(model_file)
        if reason:
            problems.append(f"{model_file}: corrupt backup ({reason}); using an older backup")
            continue
        return state, model_file, problems
    return None if not problems else ({}, Path(), problems)


def check_keras_file(path: Path) -> str | None:
    """Why a .keras file cannot be a complete model archive, or None if it looks whole."""
    import zipfile

    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = set(archive.namelist())
    except zipfile.BadZipFile as e:
        return f"not a complete .keras archive: {e}"
    if bad is not None:
        return f"damaged member {bad}"
    if "config.json" not in names or not any(n.endswith(".weights.h5") for n in names):
        return "the archive lacks config.json or the weights"
    return None
