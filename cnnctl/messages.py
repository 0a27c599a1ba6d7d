"""Messages from below the CLI: progress lines and summaries (`say`) and problems that did not
stop the command (`warn`) go to the `cnnctl` logger; the CLI sends them to the terminal
(`to_terminal`: info to stdout, warnings to stderr) before each command. Used as a library,
cnnctl shows only warnings (Python's last-resort handler). No Keras import: `--version` stays
instant."""

from __future__ import annotations

import logging
import sys

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


def to_terminal() -> None:
    """Show cnnctl's messages on the terminal: what the CLI does before each command."""
    LOGGER.handlers[:] = [TerminalHandler()]
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
