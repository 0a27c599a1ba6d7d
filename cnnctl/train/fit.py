"""`cnnctl train`: data, model and callbacks from the config, then Keras `fit`, then test."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cnnctl.train import callbacks as callbacks_lib
from cnnctl.train import checkpoints
from cnnctl.train import class_metrics, class_weights
from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.data import load as data_lib
from cnnctl.train import distribute
from cnnctl import messages
from cnnctl.train import lock, logs
from cnnctl.model import build as model_lib
from cnnctl.train import optim
from cnnctl.train import phases as phases_lib
from cnnctl import runs
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError


@contextlib.contextmanager
def _precision(policy: str):
    previous = keras.config.dtype_policy()
    if policy != "off":
        keras.config.set_dtype_policy(f"mixed_{policy}")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _check_classes(loaded, model: keras.Model, class_names: list[str]) -> None:
    from cnnctl.model import classes  # the rule `cnnctl check` applies too, before any data is read

    classes.check_output(loaded, model.output_shape[-1], class_names)


def _check_logits(loaded, model: keras.Model) -> None:
    from cnnctl.model import classes  # as `cnnctl check` does: before minutes of data loading

    classes.check_logits(loaded, model)


class Interrupted(CnnctlError):
    """Training was stopped by a signal after writing a backup."""


class NumericalFailure(CnnctlError):
    """The loss became NaN or infinite."""

    exit_code = 3


def train(loaded: config_lib.LoadedConfig, run_dir: Path | None = None, *,
          resume: Path | None = None, restart: bool = False, allow_data_change: bool = False,
          verbose: int | None = None, extra_callbacks: list | None = None) -> dict:
    """Train the model of a config and write a run directory, or resume an interrupted run.

    With train.distribute: multi_worker, a worker other than the chief trains in lockstep with it
    but writes to a temporary folder, removed at the end; it reads the chief's backup to resume.

    `extra_callbacks` run after cnnctl's own, at each epoch end once its backup is written (a
    tuning trial's pruning): one that sets `model.stop_training` ends the run there, finished.

    A process trains a run directory only while it holds its lock (`cnnctl.train.lock`): a second
    one is refused, naming the holder. `restart`: `run_dir` holds a run of this config killed
    before its first backup (`runs.rerun`), trained again from the start. `allow_data_change`:
    a resumed run whose data changed since its backup restarts the backup's epoch with the new
    data instead of being refused.

    Returns:
        {"run_dir" (None on a worker other than the chief), "metrics", "seconds", "epochs",
        "resumed_from", "task"}.
    Raises:
        CnnctlError: bad data, a config that does not fit the data, an unwritable run directory,
            a resume that does not match its run.
        Interrupted: SIGINT / SIGTERM (after writing a backup).
        NumericalFailure: a NaN or infinite loss (the last good checkpoints are kept).
        distribute.ClusterFailure: another worker of a multi_worker run stopped.
    """
    cfg = loaded.config
    if cfg.data is None:
        raise CnnctlError(f"{loaded.file}: no `data:` section; say what to train on, e.g. "
                          "data: {source: keras, name: fashion_mnist}")
    with loaded.located():  # first: a multi_worker cluster must be set up before TensorFlow runs
        spread = distribute.plan(cfg.train, cfg.optimizer.reference_batch_size)
        class_metrics.check_monitors(cfg)  # a misspelt monitor would never pick best.keras
    locks: list = []  # the run directory's lock, once this process holds it
    try:
        if spread.chief and (resume is not None or restart):
            held = lock.RunLock(Path(resume if resume is not None else run_dir))
            held.acquire()  # before reading the backup: the holder may be writing one
            locks.append(held)
            runs.remove_temporaries(held.run_dir)  # of writes a killed process never finished
        backup = None
        if resume is not None:
            backup = _resumable(loaded, Path(resume))
            run_dir = Path(resume)
            _check_writable(loaded, run_dir)  # before minutes of data loading and training
        elif restart and spread.chief:
            if runs.rerun(run_dir, loaded.config) != "restart":
                raise CnnctlError(f"{run_dir}: no longer a run to restart (another process "
                                  "wrote to it); run the command again")
            runs.clear_for_restart(run_dir)
            messages.say(f"restarting {run_dir}: it stopped before its first backup")
            runs.check_can_create(loaded, run_dir)
        elif spread.chief:
            runs.check_can_create(loaded, run_dir)  # before minutes of data loading, not after
        # before the first variable: workers that disagree would wait on each other's collectives
        distribute.agree(spread, *((backup[0]["epoch"], backup[0]["step"]) if backup else (0, 0)))
        with loaded.located():  # a value that fails in data loading, the model or compile
            if spread.chief:
                return _train(loaded, spread, run_dir, backup, verbose, extra=extra_callbacks or [],
                              locks=locks, allow_data_change=allow_data_change)
            scratch = Path(tempfile.mkdtemp(prefix=f"cnnctl-{spread.task.replace(' ', '-')}-"))
            try:
                return _train(loaded, spread, run_dir, backup, verbose, scratch=scratch,
                              extra=extra_callbacks or [], allow_data_change=allow_data_change)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    finally:
        for held in locks:
            held.release()


def _train(loaded, spread: distribute.Plan, run_dir: Path | None, backup, verbose,
           scratch: Path | None = None, extra: list = (), locks: list | None = None,
           allow_data_change: bool = False) -> dict:
    """train() once the strategy is set up; `scratch`: where a worker other than the chief
    writes; `locks`: the run directory's lock, held by train() (a fresh run's is taken here,
    once the directory is made, and added to it: train() gives it back)."""
    cfg = loaded.config
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    start = time.perf_counter()
    scaled = spread.effective(cfg)  # global batch size and learning rates of all replicas
    with _precision(cfg.train.mixed_precision), spread.scope:
        model = model_lib.assemble(loaded)
        _check_logits(loaded, model)
        splits = data_lib.load(scaled, input_shape=tuple(cfg.model.input_shape),
                               label_mode=optim.label_mode(cfg),
                               multiple=spread.replicas if spread.kind == "data_parallel" else 1,
                               progress=messages.FileCheckProgress())
        _check_classes(loaded, model, splits.class_names)
        class_weight = class_weights.resolve(cfg.train.class_weight, splits.class_counts["train"])
        spe = splits.steps_per_epoch
        phases_lib.check(model, cfg)
        restart_epoch = False
        if backup is not None:  # before any training: the backup's batches are the old data's
            restart_epoch = _check_same_data(loaded, run_dir, backup[0], splits, allow_data_change)
        per_call = steps_per_call(cfg.train.steps_per_execution, spe)

        def compile_phase(span: phases_lib.Span) -> None:
            phases_lib.set_trainable(model, span)
            model.compile(optimizer=phases_lib.optimizer(cfg, scaled, span, spe),
                          loss=optim.loss(cfg), metrics=optim.metrics(cfg, model.output_shape[-1]),
                          jit_compile=cfg.train.jit_compile,
                          steps_per_execution=per_call)

        spans = phases_lib.spans(cfg)
        # a backup holds the optimizer of the phase it was taken in: compiled as that one
        current = spans[0] if backup is None else phases_lib.resumed_in(
            spans, backup[0]["epoch"], backup[0]["step"])
        compile_phase(current)
        state: dict = {}
        if backup is not None:
            state, model_file = backup
            model.optimizer.build(model.trainable_variables)
            model.load_weights(model_file)
            checkpoints.restore_seed_states(model, state["seed_states"])
            if restart_epoch:
                state = {**state, "step": 0}
            if scratch is None:
                path = run_dir
                _truncate_history(path / runs.HISTORY, state["epoch"])
            else:
                path = _scratch_run(loaded, scratch, resumed=run_dir)
            if state["epoch"] >= cfg.train.epochs:
                messages.say(f"resuming {run_dir}: all {cfg.train.epochs} epochs are trained "
                             f"(backup {model_file.name}); computing the final metrics")
            else:
                messages.say(f"resuming {run_dir} at epoch {state['epoch'] + 1}, step "
                             f"{state['step']} (backup {model_file.name})")
        elif scratch is None:
            path = runs.create(loaded, run_dir)
            if locks is not None and not locks:  # a restarted run's is held already
                held = lock.RunLock(path)
                held.acquire()  # made a moment ago: only a process resuming it since can hold it
                locks.append(held)
            runs.write_json(path / runs.ENVIRONMENT, {**runs.environment(), "distribute": {
                "strategy": spread.kind, "replicas": spread.replicas, "devices": spread.devices,
                "global_batch_size": scaled.train.batch_size,
                **({"workers": spread.workers, "chief": spread.task} if spread.workers else {})}})
            runs.write_json(path / runs.CLASS_NAMES, splits.class_names)
        else:
            path = _scratch_run(loaded, scratch)
        epoch, step = state.get("epoch", 0), state.get("step", 0)
        if spread.replicas > 1:
            messages.say(_spread_line(spread, scaled, path))
        _report_data(splits)
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        callbacks, named = callbacks_lib.build(cfg, path, splits.val is not None, spe, state,
                                               lockstep=spread.kind == "multi_worker",
                                               data=splits.fingerprint,
                                               restart_epoch=restart_epoch)
        if cfg.train.phases:  # history.csv's `phase` column, written with the epoch's row
            at = next(i for i, c in enumerate(callbacks) if isinstance(c, logs.HistoryCSV))
            callbacks.insert(at, phases_lib.PhaseColumn(spans))
        # Keras's own progress bar counts the steps of each fit() call; ours counts the run's
        progress = logs.Progress(verbose, spe, cfg.train.epochs) if verbose else None
        fit = dict(validation_data=splits.val,
                   class_weight=class_weight,
                   callbacks=callbacks + list(extra) + ([progress] if progress else []),
                   verbose=0, shuffle=False)
        try:
            with distribute.lost_workers(spread, path):
                for span in spans[current.index:]:
                    if span is not current:
                        if named["averaged"] and named["averaged"].raw is not None:
                            named["averaged"].restore_raw()  # fit() left the average in the model
                        compile_phase(span)  # a new optimizer for the phase
                    _fit(model, splits, named, span.end, fit, max(epoch, span.start),
                         step if span is current else 0, spe)
                    if _stopped(named) or model.stop_training:
                        break
        except checkpoints.Signalled:
            named["stop"].on_train_end()  # the handlers it replaced
        _raise_if_stopped(loaded, path, named, spread)
    fresh = spread.kind == "data_parallel"
    if fresh:
        # every image, on one device: the sharded batches of fit() had to divide evenly
        splits.val, splits.test = (None if ds is None else ds.whole()
                                   for ds in (splits.val, splits.test))
    with distribute.lost_workers(spread, path):
        metrics = _final_metrics(model, path, splits, cfg, fresh=fresh)
    result = {"run_dir": path if scratch is None else None, "metrics": metrics,
              "seconds": time.perf_counter() - start, "epochs": metrics["epochs"],
              "resumed_from": state.get("global_step"), "task": spread.task}
    if scratch is not None:
        return result
    from cnnctl import plots

    try:  # before metrics.json: a run killed once it is finished has its curves
        plots.curves(path / runs.HISTORY, path / runs.CURVES, cfg.train.checkpoint_monitor)
        no_curves = None
    except CnnctlError as e:  # a full disk: the run still finishes, the message comes after
        no_curves = e
    for held in locks or []:  # given back before the run is finished, so that a kill after it
        held.release()        # leaves no lock behind (a resume in between only finishes it)
    if locks:
        locks.clear()
    try:
        runs.write_json(path / runs.METRICS, metrics)
    except CnnctlError as e:  # the run is not finished: its backup and checkpoints are kept
        raise CnnctlError(f"{e}; the run is not finished (its checkpoints and backup are kept): "
                          f"resume it with {resume_command(loaded, path)}") from None
    checkpoints.prune_finished(path, cfg.run.keep)  # nothing left to resume: run.keep says what stays
    runs.remove_temporaries(path)
    if no_curves is not None:  # metrics.json is written: the run is finished all the same
        raise CnnctlError(f"{no_curves}; the run is finished ({runs.METRICS} is written): `cnnctl "
                          f"report {path}` draws its curves once there is space") from None
    return result


def steps_per_call(asked: int, steps_per_epoch: int) -> int:
    """`train.steps_per_execution` as run: the largest number up to it that divides the steps
    of an epoch. Keras runs whole calls of that many steps, so a call across the end of an epoch
    would take the next epoch's first batches into this one (and a resumed run would differ)."""
    if steps_per_epoch <= 0:
        return asked
    per_call = next(n for n in range(min(asked, steps_per_epoch), 0, -1) if steps_per_epoch % n == 0)
    if per_call != asked:
        messages.say(f"train.steps_per_execution: {asked} does not divide the {steps_per_epoch} "
                     f"steps of an epoch; running {per_call} per call")
    return per_call


def _check_same_data(loaded, run_dir: Path, state: dict, splits, allow_change: bool) -> bool:
    """Refuse to resume on data other than the backup's (its epoch's batches, and the step it
    stopped at, are those of the old images). Returns whether the backup's epoch restarts from
    its first step instead (`allow_change`, or a step the new epoch does not have).

    Raises:
        CnnctlError: what changed, and the three ways on.
    """
    from cnnctl.data import fingerprint

    saved = state.get("data")
    changed = fingerprint.differences(saved, splits.fingerprint) if saved else []
    too_far = state.get("step", 0) >= splits.steps_per_epoch > 0
    if too_far and not changed:
        changed = [f"the backup is at step {state['step']}, an epoch now has "
                   f"{splits.steps_per_epoch}"]
    if not changed:
        return False
    if allow_change:
        messages.warn(f"{run_dir}: the data changed since the backup ({'; '.join(changed)}); "
                      f"--allow-data-change: epoch {state['epoch'] + 1} starts over with the new data")
        return bool(state.get("step"))
    raise CnnctlError(
        f"{run_dir}: the data changed since the backup ({'; '.join(changed[:4])}); a resumed run "
        f"must see the images it was trained on. Put the data back, or pass --allow-data-change "
        f"to go on with the new data (epoch {state['epoch'] + 1} starts over), or start a new run "
        "with --new")


def _fit(model, splits, named: dict, end: int, fit: dict, epoch: int, step: int, spe: int) -> None:
    """The fit() calls of a run (or phase) that starts at (epoch, step) and ends before `end`."""
    progress = next((c for c in fit["callbacks"] if isinstance(c, logs.Progress)), None)
    if step and epoch < end:
        # finish the interrupted epoch from the step its backup was taken at
        if progress is not None:
            progress.offset = step
        model.fit(splits.train_from(epoch, step), initial_epoch=epoch, epochs=epoch + 1,
                  steps_per_epoch=spe - step, **fit)
        if named["averaged"] and named["averaged"].raw is not None:
            named["averaged"].restore_raw()  # fit() left the average in the model
        epoch += 1
    if epoch < end and not _stopped(named) and not model.stop_training:
        model.fit(splits.train_from(epoch, 0), initial_epoch=epoch, epochs=end,
                  steps_per_epoch=spe, **fit)


def _scratch_run(loaded, scratch: Path, resumed: Path | None = None) -> Path:
    """The temporary run directory of a worker other than the chief. Resuming, it starts with
    the chief's best.keras (the final figures are computed on it by all workers together)."""
    path = runs.create(loaded, scratch / "run")
    best = resumed / runs.CHECKPOINTS / runs.BEST if resumed else None
    if best is not None and best.exists():
        shutil.copyfile(best, path / runs.CHECKPOINTS / runs.BEST)
    return path


def _spread_line(spread: distribute.Plan, scaled, path: Path) -> str:
    lr = f", learning rates x{spread.replicas}" if scaled.train.scale_lr_with_replicas else ""
    line = (f"distribute: {spread.kind}, {spread.replicas} replicas on "
            f"{', '.join(spread.devices)} (global batch {scaled.train.batch_size}{lr})")
    if spread.workers:
        role = (f"the chief, writing {path}" if spread.chief else
                "writing to a temporary folder (the chief writes the run)")
        line += f"; {len(spread.workers)} workers ({', '.join(spread.workers)}), this is {spread.task}, {role}"
    return line


def _stopped(named: dict) -> bool:
    es = named.get("early_stopping")
    return bool(named["guard"].failed or named["stop"].received is not None
                or (es is not None and es.stopped_epoch > 0))


def _raise_if_stopped(loaded, path: Path, named: dict, spread: distribute.Plan) -> None:
    guard, stop = named["guard"], named["stop"]
    if guard.failed:
        epoch, batch = guard.failed
        kept = (f"the last good checkpoints and backup are kept in {path}"
                 if any((path / runs.CHECKPOINTS).glob("*.keras")) else
                 "no epoch had finished, so there is no checkpoint")
        raise NumericalFailure(
            f"the loss became NaN or infinite at epoch {epoch + 1}, step {batch + 1}; training "
            f"stopped and {kept}. Lower optimizer.learning_rate, set optimizer.clipnorm, or "
            "check the data")
    if stop.received is not None:
        import signal

        name = signal.Signals(stop.received).name
        b = named["backups"]
        if spread.kind == "multi_worker":
            error = Interrupted(
                f"{spread.task}: interrupted by {name} at epoch {b.epoch + 1}; multi_worker backs up "
                "at epoch ends and every train.backup_every_steps steps, on all workers together, "
                f"not on a signal: {distribute.kept(spread, path)}. Start every worker again with "
                "the same command to resume the run")
        else:
            epoch, step = stop.stopped_at or (b.epoch, 0)
            error = Interrupted(
                f"interrupted by {name} at epoch {epoch + 1}, step {step} of {b.spe}; a backup is in "
                f"{path / checkpoints.BACKUP_DIR}. Resume with: {resume_command(loaded, path)}")
        error.exit_code = 128 + stop.received
        raise error


def resume_command(loaded: config_lib.LoadedConfig, run_dir: Path) -> str:
    """The shell command that resumes `run_dir`: with the config file as given, or, when
    `--set` changed it, with the run's own resolved config (the file alone would differ)."""
    import shlex

    config = loaded.file if not loaded.source.overridden else Path(run_dir) / runs.CONFIG
    return f"cnnctl train {shlex.quote(str(config))} --resume {shlex.quote(str(run_dir))}"


def _check_writable(loaded: config_lib.LoadedConfig, run_dir: Path) -> None:
    """Refuse to resume a run whose directory cannot be written (read-only, no permission, a
    full disk): a probe file is written there, the way every file of the run is, and removed."""
    from cnnctl import outputs

    probe = run_dir / f".cnnctl-write-test-{os.getpid()}"
    try:
        outputs.write_file(probe, lambda tmp: tmp.write_bytes(b""),
                           error=lambda _, e: outputs.fs_error(run_dir, e, kept=(
                               "nothing was changed; the run is not resumed")))
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _resumable(loaded: config_lib.LoadedConfig, run_dir: Path) -> tuple[dict, Path]:
    """The backup to resume `run_dir` from, refusing a finished run and one whose config differs."""
    saved = runs.load_config(run_dir).config
    if runs.is_finished(run_dir):
        raise CnnctlError(f"{run_dir}: the run is finished ({runs.METRICS} is written); there is "
                          f"nothing to resume: `cnnctl eval {run_dir}` scores it, and without "
                          "--resume `cnnctl train` starts a new run")
    changed = config_diff(saved, loaded.config)
    if changed:
        raise CnnctlError(f"{run_dir}: cannot resume with a changed config ({'; '.join(changed[:5])}"
                          f"{'; ...' if len(changed) > 5 else ''}); resume with the run's own "
                          f"config ({run_dir / runs.CONFIG}) or start a new run")
    found = checkpoints.latest_backup(run_dir)
    for problem in (found[2] if found else []):
        messages.warn(problem)
    if not found or not found[0]:
        raise CnnctlError(f"{run_dir}: no usable backup in {run_dir / checkpoints.BACKUP_DIR} "
                          "(the run stopped before its first backup); start a new run")
    return found[0], found[1]


def config_diff(old: schema_lib.Config, new: schema_lib.Config) -> list[str]:
    """`path: old -> new` for every value that differs between two configs."""
    return config_lib.differences(old.model_dump(mode="json"), new.model_dump(mode="json"))


def _truncate_history(history: Path, epoch: int) -> None:
    """Drop history rows of epochs at or after `epoch` (a partial, interrupted epoch)."""
    rows = runs.read_history(history)  # a damaged file is named before anything is trained
    if rows is None:
        return
    lines = [line for line in history.read_text().splitlines(keepends=True) if line.strip()]
    if not rows or "epoch" not in rows[0]:
        return
    base = runs.first_epoch(rows)
    keep = lines[:1] + [line for line, row in zip(lines[1:], rows)
                        if int(float(row["epoch"])) - base < epoch]
    if keep != lines:
        checkpoints.atomic_write_text(history, "".join(keep))


def _final_metrics(model, path: Path, splits, cfg: schema_lib.Config, fresh: bool = False) -> dict:
    """Test (and validation) figures of best.keras, the checkpoint `cnnctl eval` uses; `fresh`:
    evaluated as loaded from the file (on one device), not in the trained model."""
    best = path / runs.CHECKPOINTS / runs.BEST
    if fresh:
        saved = best if best.exists() else path / runs.CHECKPOINTS / runs.LAST
        model = keras.saving.load_model(saved, safe_mode=True, compile=False)
        model.compile(loss=optim.loss(cfg), metrics=optim.metrics(cfg, model.output_shape[-1]))
    elif best.exists():
        checkpoints.load_weights(model, best)  # best.keras may hold no optimizer state
    rows = runs.read_history(path) or []
    out = {"epochs": len(rows), "best_checkpoint": str(best),
           "test_time_augmentation": cfg.train.test_time_augmentation}
    if cfg.train.test_time_augmentation == "flip":
        if cfg.loss.from_logits:  # average probabilities, as `cnnctl eval` does, not logits
            from cnnctl.use import trained

            model = trained.with_probabilities(model, optim.probability_activation(cfg))
            probabilities = cfg.loss.model_copy(update={"from_logits": False})
            cfg = cfg.model_copy(update={"loss": probabilities})
        model = model_lib.with_flip_tta(model)
        model.compile(loss=optim.loss(cfg), metrics=optim.metrics(cfg, model.output_shape[-1]))
    for name, ds in (("val", splits.val), ("test", splits.test)):
        if ds is not None:
            out[name] = {k: float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
    out["history"] = {k: [_number(r[k]) for r in rows] for k in (rows[0] if rows else {}) if k != "epoch"}
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # CSVLogger writes "NA" for a value an epoch did not have
        return None


def _report_data(splits) -> None:
    counts = ", ".join(f"{k} {v:,}" for k, v in splits.counts.items() if v)
    messages.say(f"data: {counts} images, {len(splits.class_names)} classes")
    if len(splits.class_names) <= 20:
        for split, per_class in splits.class_counts.items():
            if per_class:
                messages.say(f"  {split}: " + ", ".join(f"{c} {n:,}" for c, n in per_class.items()))
    for path, reason in splits.skipped:
        messages.say(f"  skipped {path}: {reason}")
