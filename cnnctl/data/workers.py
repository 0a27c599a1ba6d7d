"""Worker processes for the check of many image files: they end with the command however it
ends, SIGKILL included, and SIGTERM or SIGINT stops them and the command with one line."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from cnnctl.errors import CnnctlError

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
WAIT_S = 0.2  # how often the command, waiting for a result, looks for a signal
WATCH_S = 1.0  # where there is no parent-death signal: how often a worker looks for its parent


class Interrupted(CnnctlError):
    """SIGTERM or SIGINT came while worker processes ran: they were stopped; exit code 128 + the
    signal's number, as a shell reports a process ended by it."""


def follow_parent(parent: int) -> None:
    """Initializer of each worker: it dies when the process that started it does, however that
    ends. A worker left behind would wait forever on the pool's queue, whose other end it holds
    itself, and keep the resource tracker (which exits once no process holds its pipe) alive.

    Linux's parent-death signal (SIGKILL) where there is one, else a thread that watches the
    parent's pid; either way a parent already gone (before the signal was asked for) ends it
    at once. Ctrl-C reaches every process of the terminal's group: the command answers it and
    stops the workers, which ignore it rather than each print a KeyboardInterrupt traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked while `map_in_processes` started it
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    death_signal = False
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            death_signal = ctypes.CDLL(None, use_errno=True).prctl(
                PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    if os.getppid() != parent:
        os._exit(1)
    if not death_signal:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(WATCH_S)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()


@contextlib.contextmanager
def _signals_recorded() -> Iterator[list[int]]:
    """SIGTERM and SIGINT recorded (in the list yielded) instead of ending the process, until
    the block ends; the handlers found are put back. Only the main thread can handle signals:
    elsewhere nothing is changed."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {}
    for number in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(number)
        # None: set outside Python, and it could not be put back; SIG_IGN: ignored on purpose
        # (nohup, a background job), so the workers must not be stopped by it either
        if handler not in (None, signal.SIG_IGN):
            previous[number] = signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT held back (not lost) in this thread while the workers start: they inherit the
    block until `follow_parent` ignores the signal, so a Ctrl-C to the terminal's process group
    as they start prints no KeyboardInterrupt of theirs. Here it comes once the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def map_in_processes(function: Callable, jobs: list[tuple], workers: int, doing: str,
                     each: Callable[[object], None] | None = None) -> list:
    """function(*job) for every job, in `workers` spawned processes; the results in order.

    Args:
        function: a module-level function (spawned processes import it by name).
        jobs: the argument tuples, one per call.
        workers: how many processes.
        doing: what the calls do, for the error messages ("checking the images of DIR").
        each: called with each result, in order, as soon as it and those before it are in.

    Raises:
        Interrupted: SIGTERM or SIGINT came (the workers are stopped first).
        CnnctlError: a worker process died (killed, out of memory, or crashed in a decoder).
    """
    with _signals_recorded() as received:
        results, died = _in_pool(function, jobs, workers, received, each)
    # raised here, once the pool is gone: an error that held it (by its traceback) would keep its
    # semaphores until the interpreter's teardown, which `cnnctl train` skips on a signal
    if received:
        error = Interrupted(f"interrupted by {signal.Signals(received[0]).name} while {doing}; "
                            "nothing was written, run the command again")
        error.exit_code = 128 + received[0]
        raise error
    if died:
        raise CnnctlError(f"a worker process died while {doing} (killed, out of memory, or "
                          "crashed in an image decoder); run the command again")
    return results


def _in_pool(function: Callable, jobs: list[tuple], workers: int, received: list[int],
             each: Callable[[object], None] | None) -> tuple[list, bool]:
    """`map_in_processes`'s work: (the results, whether a worker process died); it stops early
    once `received` holds a signal."""
    before = set(multiprocessing.active_children())
    # spawn, not fork: the parent may run TensorFlow's or JAX's threads
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=follow_parent, initargs=(os.getpid(),))
    results: list = []
    finished = False
    try:
        with _sigint_blocked():
            futures = [pool.submit(function, *job) for job in jobs]  # starts the workers
        for future in futures:
            while not received:
                try:
                    results.append(future.result(timeout=WAIT_S))
                    break
                except concurrent.futures.TimeoutError:
                    continue
                except concurrent.futures.process.BrokenProcessPool:
                    time.sleep(WAIT_S)  # a signal to the whole group: it is on its way here
                    return results, not received
            if received:
                return results, False
            if each is not None:
                each(results[-1])
        finished = True
        return results, False
    finally:
        if finished:
            pool.shutdown()
        else:
            _stop(pool, before)


def _stop(pool: concurrent.futures.ProcessPoolExecutor, before: set) -> None:
    """End the pool now: its processes killed, with the calls they ran, the queued calls
    cancelled. The pool's own thread finds them dead and closes its queues; waiting for it
    here frees their semaphores before the command ends (`cnnctl train` ends on a signal
    without the interpreter's teardown)."""
    for process in set(multiprocessing.active_children()) - before:  # the pool's processes
        process.kill()
    pool.shutdown(wait=True, cancel_futures=True)
