"""Reading a file a user names (a config, a label CSV): regular files only, up to a size limit."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MiB = 2**20

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


class UnfitFile(Exception):
    """A path that is not a regular file (`kind` says what it is) or holds more than the limit
    (`size`: its size in bytes, at least limit + 1). `reason` is the phrase to show after the
    path: `not a regular file (a FIFO)`, `50.0 MiB, more than ... (1 MiB)`."""

    def __init__(self, reason: str, kind: str | None = None, size: int | None = None):
        super().__init__(reason)
        self.reason, self.kind, self.size = reason, kind, size


def size_text(size: int) -> str:
    """`1 MiB`, `50.0 MiB`, `1 GiB`: whole multiples bare, others to one decimal."""
    for unit, name in ((2**30, "GiB"), (MiB, "MiB"), (2**10, "KiB")):
        if size >= unit:
            return f"{size // unit} {name}" if size % unit == 0 else f"{size / unit:.1f} {name}"
    return f"{size} bytes"


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def read_bytes(path: str | Path, limit: int, what: str = "the file") -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes; at most
    limit + 1 bytes are read, so a file that grows while it is read cannot exhaust memory, and
    a FIFO or device is refused before it is opened (opening a FIFO would block).

    Args:
        what: how the size error names the file (`a config file`).

    Raises:
        UnfitFile: not a regular file, or larger than `limit`.
        OSError: it cannot be opened or read (FileNotFoundError where it does not exist).
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise UnfitFile(f"not a regular file ({_kind(mode)})", kind=_kind(mode))
    # O_NONBLOCK: a FIFO put in its place after the stat must not block the open either
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnfitFile(f"not a regular file ({_kind(info.st_mode)})", kind=_kind(info.st_mode))
        chunks, got = [], 0
        while info.st_size <= limit and got <= limit:  # bounded even if the file grows
            chunk = f.read(min(max(info.st_size + 1, MiB), limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        size = max(info.st_size, got)
        if size > limit:
            shown = f"{size / MiB:.1f} MiB" if size >= MiB else size_text(size)
            raise UnfitFile(f"{shown}, more than {what} can be ({size_text(limit)})",
                            size=size)
    return b"".join(chunks)
