"""The lock on a run directory while a process trains it: a second process is refused with
who holds it, and the lock of a process that died is taken over."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from cnnctl import outputs, runs
from cnnctl.errors import CnnctlError

HEARTBEAT_S = 10.0  # how often a held lock is touched
STALE_S = 60.0  # a lock not touched for this long is its dead holder's, whatever its host
UNREADABLE_S = 5.0  # an empty or unreadable lock this old: its writer died while it wrote it
READ_TRIES = 10  # a lock just created is read again (0.05 s apart) until its content is in

_held: dict[Path, str] = {}  # the locks this process holds: lock file -> its token
_held_guard = threading.Lock()


class RunLocked(CnnctlError):
    """Another process trains the run (or this one does already)."""


def holder(run_dir: Path) -> dict | None:
    """Who trains a run now: the content of its live lock ({"pid", "host", "started",
    "command", ...}), or None when no process does (no lock, or a stale one)."""
    found = _read(Path(run_dir) / runs.LOCK)
    if found is None or found[0] is None or _stale(*found):
        return None
    return found[0]


class RunLock:
    """The lock on `run_dir` (which must exist): `with RunLock(run_dir): ...`, or `acquire()`
    then `release()`.

    RUN/.lock holds {"pid", "host", "started", "command", "token", "process_start"} as JSON,
    and a thread touches it every HEARTBEAT_S seconds while it is held. It is stale, and taken
    over, when its process is gone (on this host: its pid is not alive, or is another process
    now, by its start time), when it has not been touched for STALE_S seconds (the way a lock
    of another host dies; on this host a holder that is alive keeps it, even stopped by
    Ctrl-Z, since it goes on after `fg`), or when it cannot be read and is UNREADABLE_S
    seconds old (its writer died while it wrote it).

    Raises (on acquire):
        RunLocked: another live process holds it, or this process does already.
        CnnctlError: the lock cannot be written (a read-only folder, a full disk).
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / runs.LOCK
        self.info: dict | None = None  # what this process wrote in the lock, while it holds it
        self._fd: int | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> "RunLock":
        key = self.path.absolute()
        again = RunLocked(f"{self.run_dir}: already being trained by this process (pid "
                          f"{os.getpid()}); a run is trained by one command at a time")
        with _held_guard:
            if key in _held:
                raise again
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": datetime.datetime.now().isoformat(timespec="seconds"),
                    "command": list(sys.argv), "token": uuid.uuid4().hex,
                    "process_start": _process_start(os.getpid())}
            while not self._create(info):
                found = _read(self.path)
                if found is None:  # released in between: try again
                    continue
                content, identity = found
                if content is not None and content.get("token") in _held.values():
                    raise again  # by another path to the same folder
                if not _stale(content, identity):
                    raise RunLocked(refusal(self.run_dir, self.path, content))
                _take_over(self.path, identity)
            _held[key] = info["token"]
        self.info = info
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name=f"lock {self.run_dir}",
                                           daemon=True)
        self._heartbeat.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, if it is still this process's (a lock taken
        over from it, after it stopped touching it, is left to its new holder)."""
        if self.info is None:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        found = _read(self.path)
        if found is not None and found[0] is not None and _is(found[0], self.info):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with _held_guard:
            _held.pop(self.path.absolute(), None)
        self.info = None

    def _create(self, info: dict) -> bool:
        """Create the lock with `info` in it; False if there is one."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except FileNotFoundError:
            raise  # no run directory: the caller's mistake
        except OSError as e:
            raise self._not_locked(e) from None
        try:
            os.write(fd, (json.dumps(info) + "\n").encode())
        except OSError as e:
            os.close(fd)
            self.path.unlink()
            raise self._not_locked(e) from None
        self._fd = fd
        return True

    def _not_locked(self, error: OSError) -> CnnctlError:
        return CnnctlError(f"{self.path}: cannot lock the run for training "
                           f"({outputs.problem(error)}); {outputs.advice(error)}")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):  # a lock taken over (this process was stopped)
                # the file this process made, by its descriptor, wherever a taker moved it
                os.utime(self._fd if os.utime in os.supports_fd else self.path)


def refusal(run_dir: Path, path: Path, info: dict | None) -> str:
    """The message that refuses to train a run whose lock (at `path`) has content `info` (None:
    not written yet)."""
    if info is None:
        return (f"{run_dir}: being trained by another process that is starting ({path} is being "
                "written); run the command again in a few seconds")
    if "unreadable" in info:
        return (f"{run_dir}: {path} cannot be read ({info['unreadable']}): another user's process "
                "may be training this run; ask them, or remove the file if none is")
    argv = info.get("command") or ["?"]
    program = Path(str(argv[0])).name
    shown = shlex.join(["python -m cnnctl" if program == "__main__.py" else program,
                        *map(str, argv[1:])])
    return (f"{run_dir}: being trained by another process (pid {info.get('pid')} on host "
            f"{info.get('host')}, started {info.get('started')}, `{shown}`); wait for it to "
            "finish or stop it (Ctrl-C writes a backup), then run the command again")


def _is(info: dict, ours: dict) -> bool:
    return all(info.get(key) == ours[key] for key in ("pid", "host", "token"))


def _read(path: Path) -> tuple[dict | None, tuple] | None:
    """(the lock's content, or None if it cannot be read yet; its identity: device, inode,
    modification time and bytes), or None when there is no lock. A lock whose content is not
    in yet is read again a few times first."""
    for attempt in range(READ_TRIES):
        try:
            with open(path, "rb") as f:
                data = f.read()
                info = os.fstat(f.fileno())
        except (FileNotFoundError, NotADirectoryError):  # no lock (or no run folder) there
            return None
        except OSError as e:  # another user's, not readable by this one: never taken over
            try:
                info = os.stat(path)
            except OSError:
                return None
            return ({"unreadable": e.strerror or str(e)},
                    (info.st_dev, info.st_ino, info.st_mtime_ns, b""))
        identity = (info.st_dev, info.st_ino, info.st_mtime_ns, data)
        try:
            content = json.loads(data)
            pid = content.get("pid") if isinstance(content, dict) else None
            if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
                return content, identity
        except ValueError:
            pass
        if attempt < READ_TRIES - 1:
            time.sleep(0.05)
    return None, identity


def _stale(info: dict | None, identity: tuple) -> bool:
    """Whether a lock, as `_read` gave it, is a dead process's."""
    age = time.time() - identity[2] / 1e9
    if info is None:
        return age > UNREADABLE_S
    if "unreadable" in info:
        return False
    if info.get("host") == socket.gethostname():
        pid = info["pid"]
        if pid == os.getpid() and info.get("token") not in _held.values():
            return True  # an earlier process with this pid (a container restarted)
        if not runs.process_alive(pid):
            return True
        started = info.get("process_start")
        now = _process_start(pid)
        if started is not None and now is not None:
            return started != now  # another process with its pid, or the holder (even stopped)
    return age > STALE_S


def _take_over(path: Path, identity: tuple) -> None:
    """Remove the stale lock read as `identity`, and only that one: of two processes that
    both found it stale, the second must not remove the lock the first has made since. It is
    renamed to a name of this process's, then compared with what was read; a lock that is not
    the stale one (a new holder's, or the old one touched again) is put back."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process took it over first: the caller tries again
    try:
        with open(aside, "rb") as f:
            data = f.read()
            info = os.fstat(f.fileno())
        same = (info.st_dev, info.st_ino, info.st_mtime_ns, data) == identity
    except OSError:
        same = False
    if not same:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # a third process made a lock since: that one stays
        except OSError:  # no hard links on this file system: a rename, if nothing is there
            if not path.exists():
                os.rename(aside, path)
                return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(aside)


def _process_start(pid: int) -> int | None:
    """When a process started (Linux: clock ticks after boot), to tell it from a later one
    with its pid; None where that cannot be read."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text[text.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
