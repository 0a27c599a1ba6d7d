"""What a training run shows and records as it goes: the progress line of each epoch on the
terminal and the per-epoch rows of history.csv."""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from cnnctl import runs
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
    empty. Each row rewrites the file through a temporary one renamed into place.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        columns = self._columns(logs)
        row = [str(epoch + self._base())] + [_cell(logs.get(name)) for name in columns[1:]]
        before = self.path.read_text() if self.path.exists() else ""
        lines = io.StringIO()
        writer = csv.writer(lines, lineterminator="\n")
        if not before:
            writer.writerow(columns)
        elif not before.endswith("\n"):
            before += "\n"
        writer.writerow(row)
        from cnnctl import outputs

        # the whole file renamed into place: a kill or a full disk leaves the rows before
        outputs.write_file(self.path, lambda tmp: tmp.write_text(before + lines.getvalue()),
                           error=lambda path, e: outputs.fs_error(path, e, kept=(
                               "the rows of the epochs before are kept" if before else
                               "nothing was changed")))

    def _base(self) -> int:
        """1, or 0 when appending to a file of a run started before epochs counted from 1."""
        if not self.path.exists():
            return 1
        with self.path.open(newline="") as f:
            return runs.first_epoch(list(csv.DictReader(f)))

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


