"""Contenders as subprocesses: wall time, exit status and peak memory of each on its own."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

# absl / glog lines ("I0000 00:00:...", "W1124 ...") that TensorFlow and JAX print to stderr
_LOG_LINE = re.compile(r"^[IWEF]\d{4} ")


@dataclasses.dataclass
class Child:
    """A finished subprocess."""

    returncode: int
    wall_seconds: float
    max_rss: int  # bytes: the peak resident set size of this process alone
    other_load: float | None  # CPU cores other processes kept busy meanwhile, on average
    stdout: str
    stderr: str

    @property
    def error(self) -> str | None:
        """None after a clean exit, else the exit status and the last line of stderr that is
        not a library log line (for a Python exception: its message)."""
        if self.returncode == 0:
            return None
        lines = [line.strip() for line in self.stderr.splitlines()
                 if line.strip() and not _LOG_LINE.match(line)]
        return f"exit {self.returncode}: {lines[-1] if lines else 'no message on stderr'}"

    def result(self) -> dict:
        """The JSON object a contender script prints as its last line of stdout.

        Raises:
            ValueError: the last line is not a JSON object.
        """
        lines = self.stdout.strip().splitlines()
        value = json.loads(lines[-1]) if lines else None
        if not isinstance(value, dict):
            raise ValueError("the contender printed no JSON result line")
        return value


def run(command: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> Child:
    """Run `command` to its end, its stdout and stderr going to `log`.out and `log`.err.

    The peak memory comes from wait4(), which reports the resource usage of exactly this child
    (getrusage(RUSAGE_CHILDREN) would give the largest of all children so far). The load of
    other processes is the machine's busy CPU time during the run less the child's own.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path, err_path = Path(f"{log}.out"), Path(f"{log}.err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        busy, start = _busy_cpu_seconds(), time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall, busy_after = time.perf_counter() - start, _busy_cpu_seconds()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    # Linux reports ru_maxrss in KiB, macOS in bytes
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    other = None
    if busy is not None and busy_after is not None:
        other = max(0.0, busy_after - busy - usage.ru_utime - usage.ru_stime) / wall
    return Child(proc.returncode, wall, rss, other, out_path.read_text(errors="replace"),
                 err_path.read_text(errors="replace"))


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all cores have been busy (or stolen by the hypervisor) since boot, from
    /proc/stat; None where there is no such file."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(value) for value in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def importable(python: str, module: str) -> bool:
    """Whether `python` can import `module` (checked in a subprocess: this one stays free of
    TensorFlow, JAX and PyTorch)."""
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def say(message: str) -> None:
    """Progress on stderr (stdout stays free for the caller)."""
    print(message, file=sys.stderr, flush=True)


def show_failure(child: Child, what: str, lines: int = 20) -> None:
    """Print the end of a failed contender's stderr, so that the reason is not lost with its
    temporary folder."""
    tail = "\n".join(child.stderr.rstrip().splitlines()[-lines:])
    say(f"{what} failed ({child.error}); the end of its stderr:\n{tail}")
