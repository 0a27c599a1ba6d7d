"""Messages from below the CLI: progress lines and summaries (`say`) and problems that did not
stop the command (`warn`) go to the `cnnctl` logger; the CLI sends them to the terminal
(`to_terminal`: info to stdout, warnings to stderr) before each command. Used as a library,
cnnctl shows only warnings (Python's last-resort handler). No Keras import: `--version` stays
instant."""

from __future__ import annotations

import logging
import sys
import time

LOGGER = logging.getLogger("cnnctl")


def say(message: str) -> None:
    """A line of progress or summary for the user (stdout under the CLI)."""
    LOGGER.info(message)


def warn(message: str) -> None:
    """A line about something that went wrong but did not stop the command (stderr)."""
    LOGGER.warning(message)


class TerminalHandler(logging.Handler):
    """Each message as one line on the streams of the moment (`sys.stdout` / `sys.stderr` are
    looked up at each line, so a test runner's captured streams are honoured), flushed."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        stream.write(record.getMessage() + "\n")
        stream.flush()


def showing() -> bool:
    """Whether messages reach the terminal (the CLI called `to_terminal`)."""
    return any(isinstance(h, TerminalHandler) for h in LOGGER.handlers)


def to_terminal() -> None:
    """Show cnnctl's messages on the terminal: what the CLI does before each command."""
    LOGGER.handlers[:] = [TerminalHandler()]
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


class FileCheckProgress:
    """Prints how far the check of a split's image files has come: a bar redrawn in place on
    a terminal, a line at every tenth otherwise; small splits (under 2,000 files) print
    nothing. Call it as progress(split, files checked, files in all)."""

    QUIET_UNDER = 2000

    def __init__(self, stream=None):
        self.given = stream  # None: stdout, and only where the CLI shows messages (`to_terminal`)
        self.shown: dict[str, int] = {}
        self.start: dict[str, float] = {}

    def __call__(self, split: str, done: int, total: int) -> None:
        if total < self.QUIET_UNDER:
            return
        if self.given is None and not showing():
            return  # cnnctl used as a library: silent, as `say` is
        self.stream = self.given or sys.stdout
        self.tty = self.stream.isatty()
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
