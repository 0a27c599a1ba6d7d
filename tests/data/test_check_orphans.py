"""cnnctl.data.workers: the processes that check a large image folder end with the command, by
SIGKILL included, and SIGTERM / SIGINT there stop them and end the command with one line.

Each test starts a real `python -m cnnctl data check` on a folder of a few thousand hard links
to one 512x512 PNG (one file on disk, seconds of decoding), restricted to two CPUs (two
workers), and signals it once its workers have checked their first files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnctl.data import images

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
    reason="walks /proc; needs two CPUs for probe_all to start worker processes")

FILES = images.PROCESSES_FROM + 2000  # parallel, and seconds of work left when the signal comes
GONE_S = 10  # how long the processes left behind get to end


@pytest.fixture(scope="module")
def large_folder(tmp_path_factory) -> Path:
    """A config whose data is FILES hard links to one noisy 512x512 PNG, in two classes."""
    root = tmp_path_factory.mktemp("orphans")
    one = root / "one.png"
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    Image.fromarray(noise).save(one)
    for i in range(FILES):
        folder = root / "train" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        os.link(one, folder / f"{i:05d}.png")
    data = f"data: {{source: folder, train_dir: {root / 'train'}, validation_split: 0.1}}\n"
    (root / "config.yaml").write_text("model: {input_shape: [32, 32, 3]}\n" + data,
                                      encoding="utf-8")
    (root / "train.yaml").write_text(
        "model:\n  input_shape: [32, 32, 3]\n  layers:\n    - {type: global_avg_pool2d}\n"
        "    - {type: dense, units: 2, activation: softmax}\n" + data, encoding="utf-8")
    return root


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the state on (state, ppid, pgrp, ...), None once gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _group(pgrp: int) -> dict[int, tuple[str, str]]:
    """pid -> (start time, command line) of each live process of a process group."""
    found = {}
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields and fields[0] != "Z" and int(fields[2]) == pgrp:
            try:
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            found[int(entry)] = (fields[19], command.decode(errors="replace"))
    return found


def _alive(pid: int, started: str) -> bool:
    """The process runs still (a zombie has ended; another one with its pid is not it)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def _start_check(folder: Path, at_work: bool = True, args: tuple[str, ...] | None = None,
                 ) -> tuple[subprocess.Popen, dict[int, tuple[str, str]]]:
    """`cnnctl data check` on the folder (or `cnnctl ARGS...`), in a session of its own, once
    its workers have checked a first chunk of files (its first progress line), or (`at_work`
    False) as soon as its worker processes exist; with its processes then."""

    def two_cpus():
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background job's ignored SIGINT

    command = subprocess.Popen(
        [sys.executable, "-m", "cnnctl",
         *(args or ("data", "check", str(folder / "config.yaml"), "--json"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=two_cpus, cwd=folder)
    if not at_work:
        deadline = time.monotonic() + 60
        while not any("multiprocessing.spawn" in cmd for _, cmd in _group(command.pid).values()):
            assert command.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        return command, _group(command.pid)
    seen = []
    for line in command.stderr:
        seen.append(line)
        if line.startswith("checking train images:"):
            break
    else:
        pytest.fail(f"the check ended before any progress line: {''.join(seen)}")
    processes = _group(command.pid)
    workers = [p for p, (_, cmd) in processes.items() if "multiprocessing.spawn" in cmd]
    trackers = [p for p, (_, cmd) in processes.items() if "resource_tracker" in cmd]
    assert len(workers) == 2 and len(trackers) == 1, processes
    return command, processes


def _survivors(processes: dict[int, tuple[str, str]]) -> dict[int, str]:
    deadline = time.monotonic() + GONE_S
    while True:
        left = {pid: cmd for pid, (started, cmd) in processes.items() if _alive(pid, started)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def checks():
    """`_start_check`; whatever it started and is left at the end is killed (a failing test
    must not leave processes blocked forever on the machine)."""
    started = []

    def start(folder, at_work=True, args=None):
        command, processes = _start_check(folder, at_work, args)
        started.append(processes)
        return command, processes

    yield start
    for processes in started:
        for pid, (begun, _) in processes.items():
            if _alive(pid, begun):
                os.kill(pid, signal.SIGKILL)


def test_sigkill_of_the_command_leaves_no_worker_or_tracker_behind(large_folder, checks):
    command, processes = checks(large_folder)
    os.kill(command.pid, signal.SIGKILL)
    assert command.wait(timeout=10) == -signal.SIGKILL
    command.stderr.close()
    assert _survivors(processes) == {}
    assert _group(command.pid) == {}


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_stops_the_workers_and_says_so(large_folder, checks, number):
    command, processes = checks(large_folder)
    start = time.monotonic()
    os.kill(command.pid, number)  # to the command alone, not to its workers
    try:
        rest = command.communicate(timeout=GONE_S)[1]  # its stderr ends when every holder does
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running or left behind: {_survivors(processes)}")
    assert command.returncode == 128 + number
    assert time.monotonic() - start < GONE_S  # not after the seconds of checking left
    name = signal.Signals(number).name
    assert rest.splitlines()[-1] == (
        f"interrupted by {name} while checking the images of {large_folder / 'train'}; "
        "nothing was written, run the command again")
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    assert "leaked" not in rest, rest  # the resource tracker found nothing to clean up
    assert _survivors(processes) == {}
    assert _group(command.pid) == {}


def test_ctrl_c_as_the_workers_start_prints_no_traceback_of_theirs(large_folder, checks):
    command, processes = checks(large_folder, at_work=False)
    os.killpg(command.pid, signal.SIGINT)  # a terminal's Ctrl-C: to every process of the group
    try:
        rest = command.communicate(timeout=GONE_S)[1]
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running or left behind: {_survivors(processes)}")
    assert command.returncode == 130
    assert rest.splitlines()[-1].startswith("interrupted by SIGINT while checking the images of")
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    assert _survivors(_group(command.pid)) == {}


def test_sigterm_while_training_checks_its_images_ends_it_cleanly(large_folder, checks, tmp_path):
    # `cnnctl train` ends on a signal without the interpreter's teardown: the pool must be
    # gone by then, or the resource tracker reports its semaphores as leaked
    run = tmp_path / "run"
    command, processes = checks(large_folder, at_work=False,
                                args=("train", str(large_folder / "train.yaml"), "--run-dir", str(run)))
    time.sleep(1)
    os.kill(command.pid, signal.SIGTERM)
    try:
        rest = command.communicate(timeout=GONE_S)[1]
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running or left behind: {_survivors(processes)}")
    assert command.returncode == 143
    assert rest.splitlines()[-1] == (
        f"interrupted by SIGTERM while checking the images of {large_folder / 'train'}; "
        "nothing was written, run the command again")
    assert "Traceback" not in rest and "leaked" not in rest, rest
    assert _survivors(_group(command.pid)) == {} and not run.exists()
