"""cnnctl.train.lock: one process at a time trains a run; the lock of a dead process, or one
not touched for STALE_S seconds, is taken over, by exactly one of the processes that want it.

The holders and racers are real processes (a small script that takes the lock and answers on
its stdin/stdout); the lock files of other hosts are written by hand."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cnnctl.errors import CnnctlError
from cnnctl.train import lock

HOLD = textwrap.dedent("""
    import sys
    from cnnctl.train import lock

    # one line on stdin per round: "go" tries to take the lock, "drop" releases it
    held = None
    for line in sys.stdin:
        if line.strip() == "go":
            try:
                held = lock.RunLock(sys.argv[1]).acquire()
                print("won", flush=True)
            except lock.RunLocked as e:
                print("refused", e, flush=True)
        elif held is not None:
            held.release()
            held = None
            print("dropped", flush=True)
""")


@pytest.fixture
def run(tmp_path) -> Path:
    folder = tmp_path / "runs" / "x" / "20261207-101010"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def start(tmp_path):
    """start(run) -> a process running HOLD on the run (killed at the end)."""
    script = tmp_path / "hold.py"
    script.write_text(HOLD, encoding="utf-8")
    started = []

    def start(run: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, str(script), str(run)], text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def ask(process: subprocess.Popen, line: str) -> str:
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def write_lock(run: Path, age_s: float = 0, **content) -> Path:
    """A lock file as another process would have left it, last touched `age_s` seconds ago."""
    info = {"pid": 4321, "host": "elsewhere", "started": "2026-12-07T10:10:10",
            "command": ["/usr/bin/cnnctl", "train", "configs/x.yaml"], "token": "theirs",
            **content}
    path = run / ".lock"
    path.write_text(json.dumps(info), encoding="utf-8")
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def content(run: Path) -> dict:
    return json.loads((run / ".lock").read_text())


def test_a_second_process_is_refused_with_who_holds_the_lock(run, start):
    holder = start(run)
    assert ask(holder, "go") == "won"
    info = content(run)
    assert info["pid"] == holder.pid and info["host"] == socket.gethostname()
    assert lock.holder(run) == info
    with pytest.raises(lock.RunLocked) as refused:
        lock.RunLock(run).acquire()
    assert str(refused.value) == (
        f"{run}: being trained by another process (pid {holder.pid} on host "
        f"{socket.gethostname()}, started {info['started']}, `hold.py {run}`); wait for it to "
        "finish or stop it (Ctrl-C writes a backup), then run the command again")
    assert isinstance(refused.value, CnnctlError) and refused.value.exit_code == 2
    other = start(run)  # another process too
    assert ask(other, "go") == f"refused {refused.value}"
    assert ask(holder, "drop") == "dropped" and not (run / ".lock").exists()
    assert lock.holder(run) is None
    with lock.RunLock(run) as mine:
        assert content(run) == mine.info and mine.info["pid"] == os.getpid()
    assert not (run / ".lock").exists()


def test_the_lock_of_a_killed_process_is_taken_over(run, start):
    holder = start(run)
    assert ask(holder, "go") == "won"
    holder.kill()
    holder.wait()
    assert content(run)["pid"] == holder.pid  # left behind, freshly touched
    assert lock.holder(run) is None
    with lock.RunLock(run) as mine:
        assert content(run)["token"] == mine.info["token"]


def test_a_stopped_holder_keeps_its_lock_but_a_reused_pid_does_not(run, start):
    holder = start(run)
    assert ask(holder, "go") == "won"
    os.kill(holder.pid, signal.SIGSTOP)  # Ctrl-Z: no heartbeat, but it goes on after `fg`
    try:
        os.utime(run / ".lock", (time.time() - 10 * lock.STALE_S,) * 2)
        with pytest.raises(lock.RunLocked, match=f"pid {holder.pid} on host"):
            lock.RunLock(run).acquire()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    holder.kill()
    holder.wait()
    alive = start(run)  # a live process with the dead holder's pid, as far as the lock says
    write_lock(run, pid=alive.pid, host=socket.gethostname(), process_start=1)
    with lock.RunLock(run) as mine:
        assert content(run)["token"] == mine.info["token"]


def test_another_hosts_lock_is_taken_over_only_once_its_heartbeat_stopped(run):
    write_lock(run, age_s=lock.STALE_S / 2)
    with pytest.raises(lock.RunLocked) as refused:
        lock.RunLock(run).acquire()
    assert str(refused.value) == (
        f"{run}: being trained by another process (pid 4321 on host elsewhere, started "
        "2026-12-07T10:10:10, `cnnctl train configs/x.yaml`); wait for it to finish or stop it "
        "(Ctrl-C writes a backup), then run the command again")
    assert lock.holder(run)["token"] == "theirs" and content(run)["token"] == "theirs"
    write_lock(run, age_s=lock.STALE_S + 1)
    assert lock.holder(run) is None
    with lock.RunLock(run) as mine:
        assert content(run)["token"] == mine.info["token"]
    assert list(run.iterdir()) == []  # nothing of the takeover is left behind


def test_an_empty_lock_is_waited_for_while_young_and_taken_over_when_old(run):
    (run / ".lock").write_bytes(b"")
    with pytest.raises(lock.RunLocked, match="is being written"):
        lock.RunLock(run).acquire()
    old = time.time() - lock.UNREADABLE_S - 1
    os.utime(run / ".lock", (old, old))
    with lock.RunLock(run):
        assert content(run)["pid"] == os.getpid()


def test_of_processes_racing_for_a_stale_lock_exactly_one_wins(run, start):
    racers = [start(run) for _ in range(3)]
    # an unlink of the stale lock, without checking that it is still that one, lets two win in
    # about one round of five here
    for _ in range(20):
        write_lock(run, age_s=lock.STALE_S + 1)
        for racer in racers:  # all at once: each reads the stale lock before it answers
            racer.stdin.write("go\n")
            racer.stdin.flush()
        answers = [racer.stdout.readline().strip() for racer in racers]
        winners = [r for r, a in zip(racers, answers) if a == "won"]
        assert len(winners) == 1, answers
        assert content(run)["pid"] == winners[0].pid
        for racer, answer in zip(racers, answers):
            if racer is not winners[0]:
                assert answer.startswith(f"refused {run}: being trained by another process "
                                         f"(pid {winners[0].pid} on host"), answers
        assert ask(winners[0], "drop") == "dropped"
        assert list(run.iterdir()) == []


def test_the_heartbeat_touches_the_lock(run, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    with lock.RunLock(run):
        old = time.time() - 1000
        os.utime(run / ".lock", (old, old))
        time.sleep(0.5)
        assert time.time() - (run / ".lock").stat().st_mtime < 5
    assert not (run / ".lock").exists()


def test_release_leaves_a_lock_that_is_no_longer_ours(run):
    mine = lock.RunLock(run).acquire()
    (run / ".lock").unlink()
    write_lock(run)  # another process took it over (say, this one was stopped for minutes)
    mine.release()
    assert content(run)["token"] == "theirs"
    mine.release()  # a second release does nothing


def test_taking_a_lock_this_process_holds_is_refused_not_a_deadlock(run):
    with lock.RunLock(run) as mine:
        for path in (run, run.parent / ".." / "x" / run.name):  # by another path too
            with pytest.raises(lock.RunLocked) as refused:
                lock.RunLock(path).acquire()
            assert str(refused.value) == (
                f"{path}: already being trained by this process (pid {os.getpid()}); a run is "
                "trained by one command at a time")
        assert content(run) == mine.info
    with lock.RunLock(run):  # released: it can be taken again
        pass


def test_a_lock_left_by_an_earlier_process_with_this_pid_is_stale(run):
    # a container restarted: its new `cnnctl train` can have the pid the killed one had
    write_lock(run, pid=os.getpid(), host=socket.gethostname(), process_start=None)
    with lock.RunLock(run) as mine:
        assert content(run)["token"] == mine.info["token"]
