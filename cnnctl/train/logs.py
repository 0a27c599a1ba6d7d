"""What a training run shows and records as it goes: the progress line of each epoch on the
terminal, the per-epoch rows of history.csv, and the progress of checking image files."""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

from cnnctl.backend import keras
from cnnctl.messages import say


class Progress(keras.callbacks.Callback):
    """Keras's progress bar (`keras.utils.Progbar`) with the steps counted as the run counts
    them: an epoch resumed at step 50 of 157 goes on from 51/157, and an epoch cut short (a
    signal, a NaN loss) ends its line at the step it stopped at (`109/157`), not at 157/157.

    Args:
        verbose: 1: a live bar (a terminal); 2: one line per epoch (a log file).
        steps_per_epoch: the steps of a whole epoch.
        epochs: the epochs of the run.
        first_step: the step the first epoch of this fit() starts at (a resumed epoch).
    """

    def __init__(self, verbose: int, steps_per_epoch: int, epochs: int, first_step: int = 0):
        super().__init__()
        self.verbose, self.steps, self.epochs = verbose, steps_per_epoch, epochs
        self.offset = first_step
        self.bar = None
        self.done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.bar = keras.utils.Progbar(self.steps, verbose=self.verbose, unit_name="step")
        self.done = self.offset
        if self.epochs > 1:
            resumed = f" (resumed at step {self.offset})" if self.offset else ""
            sys.stdout.flush()  # after Keras's own progress output
            say(f"Epoch {epoch + 1}/{self.epochs}{resumed}")

    def on_train_batch_end(self, batch, logs=None):
        self.done = self.offset + batch + 1
        if self.verbose == 1:
            self.bar.update(self.done, list((logs or {}).items()), finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(self.done, list((logs or {}).items()), finalize=True)
        if self.done < self.steps:
            sys.stdout.flush()
            say(f"epoch {epoch + 1} stopped after step {self.done} of {self.steps}")
        self.offset = 0


class HistoryCSV(keras.callbacks.Callback):
    """history.csv: one row per finished (or interrupted) epoch, `epoch` counted from 1 as the
    terminal counts, then the logged values in name order. Appends to an existing file with
    its own columns (a resumed run), so its rows stay aligned; a value an epoch did not log is
    empty.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        columns = self._columns(logs)
        row = [str(epoch + self._base())] + [_cell(logs.get(name)) for name in columns[1:]]
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            if new:
                writer.writerow(columns)
            writer.writerow(row)

    def _base(self) -> int:
        """1, or 0 when appending to a file of a run started before epochs counted from 1."""
        if not self.path.exists():
            return 1
        with self.path.open(newline="") as f:
            return first_epoch(list(csv.DictReader(f)))

    def _columns(self, logs: dict) -> list[str]:
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                return header
        return ["epoch", *sorted(logs)]


def _cell(value) -> str:
    if value is None:
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return repr(number) if math.isfinite(number) else str(number)


def first_epoch(rows: list[dict]) -> int:
    """What the `epoch` column of history.csv rows calls the first epoch: 1, or 0 in files
    written before it counted from 1 (Keras's CSVLogger counts from 0)."""
    try:
        return 0 if rows and int(float(rows[0]["epoch"])) == 0 else 1
    except (KeyError, ValueError):
        return 1


class FileCheckProgress:
    """Prints how far the check of a split's image files has come: a bar redrawn in place on
    a terminal, a line at every tenth otherwise; small splits (under 2,000 files) print
    nothing. Call it as progress(split, files checked, files in all)."""

    QUIET_UNDER = 2000

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.shown: dict[str, int] = {}
        self.start: dict[str, float] = {}

    def __call__(self, split: str, done: int, total: int) -> None:
        if total < self.QUIET_UNDER:
            return
        now = time.perf_counter()
        start = self.start.setdefault(split, now)
        tenth = done * 10 // total
        if not self.tty and self.shown.get(split, -1) == tenth and done < total:
            return
        self.shown[split] = tenth
        line = f"checking {split} images: {done:,}/{total:,} files ({now - start:.0f} s)"
        if self.tty:
            width = 30
            filled = done * width // total
            self.stream.write(f"\r{line} [{'=' * filled}{' ' * (width - filled)}]")
            if done == total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
