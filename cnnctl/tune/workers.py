"""The loop of `cnnctl tune`: each worker takes a trial (one left running by a worker that
stopped, else a new one while the budget lasts), trains it in its own process and tells the
study how it ended.

Who runs which trial is decided with file locks in the study folder (`.locks/`): a worker holds
`trial-NNNN.lock` for as long as it, or the trial's process, runs the trial (the process
inherits the lock), and takes new trials under `ask.lock`. A lock the operating system has
released belongs to a worker that ended, however it ended: its trial is continued, from its
run's backup, by the next worker that finds it. Workers of one study therefore share its folder
(one machine, or a shared file system); several machines with their own folders share a
PostgreSQL or MySQL storage, and each continues the trials its own folder holds."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna

from cnnctl import messages, runs
from cnnctl.errors import CnnctlError
from cnnctl.tune import space as space_lib
from cnnctl.tune import study as study_lib
from cnnctl.tune import trial as trial_lib

TrialState = optuna.trial.TrialState
WAIT_SECONDS = 1.0  # how often an idle worker looks again for a trial another one left


class Interrupted(CnnctlError):
    """SIGINT / SIGTERM: the running trials backed up; the same command continues the study."""


class StudyStopped(CnnctlError):
    """A trial failed in a way every trial would (the tune metric is not computed)."""


@dataclasses.dataclass
class Job:
    number: int
    trial: optuna.trial.Trial
    lock: int  # the file descriptor holding trial-NNNN.lock
    resumed: bool  # taken over from a worker that stopped


def _lock(path: Path, block: bool = False) -> int | None:
    """A file descriptor holding an exclusive lock on `path` (made if missing), or None where
    another holds it (`block`: wait for it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def _held(path: Path):
    fd = _lock(path, block=True)
    try:
        yield
    finally:
        os.close(fd)


class Search:
    """The workers of one `cnnctl tune` command, and what they share."""

    def __init__(self, plan: study_lib.Plan, study: optuna.Study, jobs: int):
        self.plan, self.study, self.jobs = plan, study, jobs
        self.deadline = None if plan.timeout is None else time.monotonic() + plan.timeout
        self.stop_signal: int | None = None
        self.stopped: CnnctlError | None = None
        self.children: dict[int, subprocess.Popen] = {}
        self.mutex = threading.Lock()
        self.finished: list[int] = []
        self.local = plan.storage_url.startswith("sqlite:")  # every worker shares this folder
        self.storage = study_lib.open_storage(plan.storage_url)
        self.study_id = self.storage.get_study_id_from_name(plan.name)

    @property
    def stopping(self) -> bool:
        return self.stop_signal is not None or self.stopped is not None

    def locks(self) -> Path:
        return self.plan.folder / study_lib.LOCKS

    # ------------------------------------------------------------------------ taking a trial
    def take(self) -> Job | None | str:
        """A trial for this worker: a running one whose worker ended, else a new one; "wait"
        while trials of live workers are running and the budget is spent, None when done."""
        if self.stopping:
            return None
        with _held(self.locks() / "ask.lock"):
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            held = False
            for frozen in running:
                lock = self.locks() / f"trial-{frozen.number:04d}.lock"
                if not lock.exists() and not self.local \
                        and frozen.user_attrs.get(study_lib.HOST_ATTR) != study_lib.host():
                    continue  # another machine's, with its own folder: that machine continues it
                fd = _lock(lock)
                if fd is None:
                    held = True
                    continue
                trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, frozen.number)
                return Job(frozen.number, optuna.trial.Trial(self.study, trial_id), fd, resumed=True)
            # trials given in advance (Optuna's enqueue_trial) wait to be asked: not yet counted
            count = len([t for t in study_lib.counted(self.study.get_trials(deepcopy=False))
                         if t.state != TrialState.WAITING])
            out_of_time = self.deadline is not None and time.monotonic() >= self.deadline
            if (self.plan.trials is not None and count >= self.plan.trials) or out_of_time:
                return "wait" if held else None
            trial = self.study.ask({path: space_lib.distribution(d)
                                    for path, d in self.plan.tune.space.items()})
            fd = _lock(self.locks() / f"trial-{trial.number:04d}.lock")
            if self.plan.trials is not None and trial.number >= self.plan.trials + self._skipped():
                # another machine, with its own folder, asked at the same moment
                trial.set_user_attr(study_lib.SKIPPED_ATTR, "over the trial budget (asked at the "
                                                            "same moment as another worker's)")
                self.study.tell(trial, state=TrialState.FAIL)
                os.close(fd)
                return None
            trial.set_user_attr(study_lib.HOST_ATTR, study_lib.host())
            trial.set_user_attr(study_lib.RUN_ATTR, str(self.plan.trial_dir(trial.number)
                                                        .relative_to(self.plan.folder)))
            trial.set_user_attr(study_lib.OVERRIDES_ATTR,
                                space_lib.overrides(self.plan.tune.space, trial.params))
            return Job(trial.number, trial, fd, resumed=False)

    def _skipped(self) -> int:
        return sum(study_lib.SKIPPED_ATTR in t.user_attrs for t in self.study.get_trials(deepcopy=False))

    # ------------------------------------------------------------------------- one trial
    def run_trial(self, job: Job) -> None:
        plan, number = self.plan, job.number
        run_dir = plan.trial_dir(number)
        params = job.trial.params
        if not job.resumed and run_dir.exists():  # never a run of someone else's: leave it
            self._tell(job, 2, None, reason=f"{run_dir} is there already (a run of another study?); "
                                            "it is left as it is: move it away and run the study again")
            return
        metrics = _read_metrics(run_dir)
        if metrics is not None and (metrics[trial_lib.TUNE_KEY].get("study"), metrics[trial_lib.TUNE_KEY].get("trial")) \
                != (plan.name, number):
            metrics = None
        resume = False
        if metrics is None and run_dir.exists():
            resume = (run_dir / runs.CONFIG).exists() and runs.describe(run_dir)["state"] == "unfinished"
            if not resume and not study_lib.remove_partial_run(run_dir):
                self._tell(job, 2, None, reason=f"{run_dir} holds checkpoints but no backup to resume "
                                                "from; it is left as it is")
                return
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
        verb = ("continues from its backup" if resume else "is finished; recording it"
                if metrics is not None else "starts again (no backup yet)") if job.resumed else "started"
        messages.say(f"trial {number} {verb}: {shown} ({run_dir})")
        if metrics is None:
            code = self._train(job, run_dir, resume)
            if code is None:
                return  # interrupted: it stays running, for the next worker
            metrics = _read_metrics(run_dir) if code == 0 else None
        else:
            code = 0
        self._tell(job, code, metrics)

    def _train(self, job: Job, run_dir: Path, resume: bool) -> int | None:
        """The trial's process; its exit code, or None when this command was interrupted."""
        plan = self.plan
        overrides = job.trial.user_attrs.get(study_lib.OVERRIDES_ATTR) or \
            space_lib.overrides(plan.tune.space, job.trial.params)
        spec = {"config": str(plan.loaded.file),  # the process starts in this folder: as given
                "search_overrides": plan.loaded.overrides,
                "overrides": [*plan.loaded.overrides, *overrides, "tune="],
                "run_dir": str(run_dir.absolute()), "resume": resume, "storage": plan.storage_url,
                "study": plan.name, "number": job.number, "metric": plan.tune.metric,
                "parent": os.getpid()}
        env = dict(os.environ)
        if self.jobs > 1:
            # K trials side by side share the cores instead of each spreading over all of them
            threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
            env.setdefault("OMP_NUM_THREADS", threads)
            env.setdefault(trial_lib.THREADS_ENV, threads)
        log_path = plan.trial_log(job.number)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            log.write(f"# trial {job.number}: {' '.join(overrides)}\n")
            log.flush()
            child = subprocess.Popen([sys.executable, "-m", "cnnctl.tune.trial", json.dumps(spec)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     pass_fds=(job.lock,), env=env)
            with self.mutex:
                self.children[job.number] = child
            if self.stop_signal is not None:  # a signal came while it started
                child.send_signal(signal.SIGTERM)
            code = child.wait()
            with self.mutex:
                del self.children[job.number]
        if self.stop_signal is not None and (code < 0 or code >= 128):
            messages.say(f"trial {job.number} interrupted: the next `cnnctl tune` of this study "
                         "continues it from its backup")
            os.close(job.lock)
            return None
        return code

    def _tell(self, job: Job, code: int, metrics: dict | None, reason: str | None = None) -> None:
        trial, number = job.trial, job.number
        tuned = (metrics or {}).get(trial_lib.TUNE_KEY) or {}
        try:
            if metrics is not None and tuned:
                trial.set_user_attr(study_lib.EPOCHS_ATTR, metrics.get("epochs"))
                value = tuned.get("value")
                if tuned.get("pruned_at_epoch") is not None:
                    trial.set_user_attr(study_lib.PRUNED_ATTR, tuned["pruned_at_epoch"])
                    self.study.tell(trial, state=TrialState.PRUNED)
                    messages.say(f"trial {number} pruned at epoch {tuned['pruned_at_epoch']}: "
                                 f"{self.plan.tune.metric} {_short(value)}")
                elif value is None or value != value:
                    trial.set_user_attr(study_lib.ERROR_ATTR, f"{self.plan.tune.metric} has no value")
                    self.study.tell(trial, state=TrialState.FAIL)
                    messages.say(f"trial {number} failed: {self.plan.tune.metric} has no value")
                else:
                    self.study.tell(trial, value)
                    best = study_lib.best_trial(self.study)
                    note = " (best so far)" if best is not None and best.number == number else ""
                    messages.say(f"trial {number} complete: {self.plan.tune.metric} {value:.4f}{note}")
            else:
                reason = reason or _last_error(self.plan.trial_log(number), code)
                trial.set_user_attr(study_lib.ERROR_ATTR, reason)
                self.study.tell(trial, state=TrialState.FAIL)
                messages.say(f"trial {number} failed: {reason} (log: {self.plan.trial_log(number)})")
                if code == trial_lib.METRIC_MISSING_EXIT:
                    self.stopped = StudyStopped(reason)
        finally:
            os.close(job.lock)
        with self.mutex:
            self.finished.append(number)
        with contextlib.suppress(CnnctlError), _held(self.locks() / "results.lock"):
            study_lib.write_results(self.study, self.plan.folder, plots=False)

    # --------------------------------------------------------------------------- the loop
    def work(self) -> None:
        while True:
            job = self.take()
            if job is None:
                return
            if job == "wait":
                time.sleep(WAIT_SECONDS)
                continue
            self.run_trial(job)

    def signalled(self, signum, frame) -> None:
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_signal = signum
        with self.mutex:
            children = list(self.children.values())
        for child in children:  # a signal sent to this process alone reaches them this way
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)


def _read_metrics(run_dir: Path) -> dict | None:
    path = run_dir / runs.METRICS
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and trial_lib.TUNE_KEY in data else None


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _last_error(log: Path, code: int) -> str:
    """Why a trial's process failed: the last line it printed, or its exit."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    if code < 0:
        name = signal.Signals(-code).name
        return f"its process was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    for line in reversed(lines):
        if not line.startswith("#"):
            return line[:300]
    return f"its process exited with code {code}"


def search(plan: study_lib.Plan, jobs: int = 1) -> tuple[optuna.Study, list[int]]:
    """Run the study's trials with `jobs` workers, until the budget is spent, the timeout has
    passed, or a signal comes. Returns the study and the trials this command ended.

    Raises:
        Interrupted: SIGINT / SIGTERM, once the running trials have backed up.
        StudyStopped: the tune metric is not one the runs compute.
    """
    plan.folder.mkdir(parents=True, exist_ok=True)
    with _held(plan.folder / study_lib.LOCKS / "create.lock"):
        study = study_lib.open_study(plan)
        study_lib.check_trials_folder(study, plan.folder)
        study_lib.write_study_file(plan)
    job_runner = Search(plan, study, jobs)
    previous = {sig: signal.signal(sig, job_runner.signalled) for sig in (signal.SIGINT, signal.SIGTERM)}
    errors: list[BaseException] = []

    def work():
        try:
            job_runner.work()
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread below)
            errors.append(e)
            job_runner.stopped = job_runner.stopped or CnnctlError(str(e))

    try:
        threads = [threading.Thread(target=work, name=f"tune-worker-{k}", daemon=True) for k in range(jobs)]
        for thread in threads:
            thread.start()
            time.sleep(0.2)  # the workers' first asks, one after another
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    with _held(plan.folder / study_lib.LOCKS / "results.lock"):
        study_lib.write_results(study, plan.folder)
    if job_runner.stop_signal is not None:
        name = signal.Signals(job_runner.stop_signal).name
        error = Interrupted(f"interrupted by {name}; the study is kept in {plan.folder}: run the same "
                            "command again to continue it (running trials resume from their backups)")
        error.exit_code = 128 + job_runner.stop_signal
        raise error
    if isinstance(job_runner.stopped, StudyStopped):
        raise job_runner.stopped
    for e in errors:
        raise e
    return study, job_runner.finished
