"""One trial of a study, in its own process (`python -m cnnctl.tune.trial SPEC`): an ordinary
`cnnctl train` of the config with the trial's values, that reports its metric to the study at
every epoch end and stops where the pruner says, then records the trial's value in its run's
metrics.json. The worker that started it reads that file; the process ends when the worker does."""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

from cnnctl.errors import CnnctlError

METRIC_MISSING_EXIT = 4  # the tune metric is not one the runs compute: every trial would fail
THREADS_ENV = "CNNCTL_TUNE_THREADS"  # set by `--jobs K`: the threads each of K trials computes with
TUNE_KEY = "tune"  # metrics.json: {"study", "trial", "metric", "value", "pruned_at_epoch"}


class MetricMissing(CnnctlError):
    exit_code = METRIC_MISSING_EXIT


def follow_parent(parent: int) -> None:
    """SIGTERM this process when the worker that started it ends, however it ends (SIGKILL
    included): the run backs up and stops, and the next worker resumes it. Linux's parent-death
    signal where there is one, else a thread that watches the parent's pid."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it ended before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def objective(metrics: dict, metric: str, reported: float | None) -> float | None:
    """The trial's value: a val_* metric of best.keras (the checkpoint `cnnctl eval` scores),
    else the metric's last epoch in history.csv; a pruned trial's is its last reported one."""
    if metric.startswith("val_") and metric[4:] in (metrics.get("val") or {}):
        return metrics["val"][metric[4:]]
    values = [v for v in (metrics.get("history") or {}).get(metric, []) if v is not None]
    return values[-1] if values else reported


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    follow_parent(spec["parent"])
    from cnnctl import messages

    messages.to_terminal()
    try:
        return _run(spec)
    except CnnctlError as e:
        messages.warn(f"{e}")  # stderr, into the trial's log: the worker reads its last line
        return e.exit_code


def limit_threads() -> None:
    """With `--jobs K`, each trial computes on cores / K threads (THREADS_ENV), before the
    backend starts its thread pools."""
    threads = int(os.environ.get(THREADS_ENV) or 0)
    if not threads:
        return
    from cnnctl.backend import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    elif name == "torch":
        import torch

        torch.set_num_threads(threads)


def _run(spec: dict) -> int:
    import optuna

    from cnnctl.backend import keras

    limit_threads()

    from cnnctl import runs
    from cnnctl.config import load as config_lib
    from cnnctl.train import fit
    from cnnctl.tune import study as study_lib

    search = config_lib.load(spec["config"], spec["search_overrides"])
    loaded = config_lib.load(spec["config"], spec["overrides"])
    storage = study_lib.open_storage(spec["storage"])
    study = optuna.load_study(study_name=spec["study"], storage=storage,
                              pruner=study_lib.pruner(search.config.tune))
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(spec["study"]), spec["number"])
    trial = optuna.trial.Trial(study, trial_id)
    metric = spec["metric"]

    class Pruning(keras.callbacks.Callback):
        """The metric to the study at each epoch end; stops the run where the pruner says."""

        pruned_at: int | None = None
        reported: float | None = None

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if metric not in logs:
                names = ", ".join(sorted(k for k in logs if not k.startswith("learning_rate")))
                hint = ("" if any(k.startswith("val_") for k in logs) else
                        ", or hold out validation images with data.validation_split")
                raise MetricMissing(str(search.error_at("tune.metric", (
                    f"{metric} is not computed by this run (its epochs have {names}); choose one "
                    f"of them{hint}"))))
            value = float(logs[metric])
            self.reported = value
            if math.isfinite(value):
                trial.report(value, epoch)
            if trial.should_prune():
                self.pruned_at = epoch + 1
                self.model.stop_training = True

    pruning = Pruning()
    run_dir = Path(spec["run_dir"])
    if spec["resume"]:
        result = fit.train(loaded, resume=run_dir, extra_callbacks=[pruning])
    else:
        result = fit.train(loaded, run_dir, extra_callbacks=[pruning])
    metrics = result["metrics"]
    value = objective(metrics, metric, pruning.reported)
    metrics[TUNE_KEY] = {"study": spec["study"], "trial": spec["number"], "metric": metric,
                         "value": value, "pruned_at_epoch": pruning.pruned_at}
    runs.write_json(run_dir / runs.METRICS, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
