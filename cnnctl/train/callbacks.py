"""The callbacks of a training run, built in one place in the order they must run."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from cnnctl import runs
from cnnctl.backend import keras
from cnnctl.config import schema as schema_lib
from cnnctl.train import checkpoints, logs


class KeepState(keras.callbacks.Callback):
    """Carries the memory of early stopping and LR-on-plateau across `fit` calls and resumes
    (Keras resets it in on_train_begin)."""

    FIELDS = ("wait", "best", "cooldown_counter", "stopped_epoch")

    def __init__(self, callbacks: dict, saved: dict | None):
        super().__init__()
        self.callbacks, self.saved = callbacks, saved or {}

    def state(self) -> dict:
        return {name: {f: plain_number(getattr(cb, f)) for f in self.FIELDS if hasattr(cb, f)}
                for name, cb in self.callbacks.items()}

    def on_train_begin(self, logs=None):
        for name, fields in self.saved.items():
            for field, value in fields.items():
                setattr(self.callbacks[name], field, value)

    def on_train_end(self, logs=None):
        self.saved = self.state()


def plain_number(value):
    try:
        return float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        return None


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` (wall time of the epoch, validation included) to the logs, so that
    history.csv records the speed of every epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self.start


def build(cfg: schema_lib.Config, run_dir: Path, has_val: bool, steps_per_epoch: int,
               state: dict, lockstep: bool = False, data: dict | None = None,
               restart_epoch: bool = False) -> tuple[list, dict]:
    """The callbacks of a run, in the order they must run, and the ones `fit.train` inspects.

    Args:
        cfg: the run's config.
        run_dir: the run directory (checkpoints/, backup/, history.csv, logs/).
        has_val: whether there is validation data (else `val_*` monitors fall back to `*`).
        steps_per_epoch: training steps in one epoch.
        state: the resumed backup's state ({} for a fresh run).
        lockstep: one of several multi_worker processes (a signal stops it at once).
        data: the fingerprint of the run's data (`cnnctl.data.fingerprint`), kept in every
            backup so that a resume can tell the data changed.
        restart_epoch: the resumed backup's epoch starts over from its first step (the data
            changed): its metric totals are not put back.

    Returns:
        (callbacks in the order they run, {"guard", "stop", "backups", "averaged", and
        "early_stopping" / "reduce_lr" when configured: the ones `fit.train` reads}).

    The order matters, and `tests/train/test_callbacks.py` holds it: the NaN guard first (every later
    callback asks it before writing); the metric totals of a resumed epoch; the signal stop next (a stop mid-epoch must be known
    before the epoch-end callbacks write anything); checkpoints; early stopping and LR on
    plateau, then KeepState, which records their memory; the epoch timer before history.csv,
    which records its `epoch_seconds`; the epoch-end backup after all of them (it holds that
    memory and history.csv has the epoch's row before it exists); the EMA swap last.
    """
    def monitored(name: str) -> str:
        return name if has_val or not name.startswith("val_") else name[len("val_"):]

    guard, interruption = checkpoints.NanGuard(), checkpoints.Interruption()
    averaged = checkpoints.AveragedWeights() if cfg.optimizer.ema_momentum is not None else None
    ckpt = checkpoints.Checkpoints(run_dir / runs.CHECKPOINTS, monitored(cfg.train.checkpoint_monitor),
                                   guard, interruption, best=state.get("best"),
                                   weights=averaged.averaged if averaged else contextlib.nullcontext,
                                   optimizer_state="optimizer_state" in cfg.run.keep)
    stateful = {}
    if cfg.train.early_stopping:
        es = cfg.train.early_stopping
        stateful["early_stopping"] = keras.callbacks.EarlyStopping(
            monitor=monitored(es.monitor), patience=es.patience, min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights)
    if cfg.train.reduce_lr_on_plateau:
        rl = cfg.train.reduce_lr_on_plateau
        stateful["reduce_lr"] = keras.callbacks.ReduceLROnPlateau(
            monitor=monitored(rl.monitor), factor=rl.factor, patience=rl.patience, min_lr=rl.min_lr)
    keep = KeepState(stateful, state.get("callbacks"))
    backups = checkpoints.Backups(run_dir, guard, interruption, cfg.train.backup_every_steps,
                                  steps_per_epoch,
                                  extra_state=lambda: {"best": ckpt.best, "callbacks": keep.state(),
                                                       **({"data": data} if data else {})},
                                  start_epoch=state.get("epoch", 0),
                                  start_step=0 if restart_epoch else state.get("step", 0))
    stop = checkpoints.SignalStop(backups, at_once=lockstep)
    # the epoch-end backup after every other epoch-end step: it holds the early-stopping and
    # LR-plateau memory of that epoch, and history.csv has the epoch's row before it exists
    totals = None if restart_epoch else state.get("metric_states")
    resumed = [checkpoints.ResumeMetrics(totals)] if totals else []
    callbacks = [guard, *resumed, stop, ckpt, *stateful.values(), keep, EpochTimer(),
                 logs.HistoryCSV(run_dir / runs.HISTORY), backups]
    if averaged:
        # last: its end-of-fit snapshot of the raw weights follows the checkpoints' swaps, which
        # round (TensorFlow swaps in place by adding and subtracting)
        callbacks.append(averaged)
    if cfg.train.tensorboard and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(run_dir / runs.LOGS, profile_batch=0))
    return callbacks, {"guard": guard, "stop": stop, "backups": backups, "averaged": averaged,
                       **stateful}
