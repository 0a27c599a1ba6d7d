"""cnnctl.train.checkpoints, nothing lost: resume after SIGKILL equals an uninterrupted run,
signals leave a backup (a lockstep worker stops at once instead), corrupt backups are skipped,
NaN stops the run without overwriting good checkpoints, a full disk keeps the previous
checkpoint."""

import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnctl.train import checkpoints
from cnnctl.config import load as config_lib
from cnnctl.data import load as data_lib
from cnnctl.train import fit as train_lib
from cnnctl.backend import keras
from cnnctl.cli import app

STEPS = 32  # 2048 / 64


@pytest.fixture(scope="module")
def resumable_yaml(cnn_yaml) -> str:
    """3 deterministic epochs of 32 steps (2,048 shipped Fashion-MNIST images, batch 64) with
    in-model augmentation, SGD on a cosine schedule and a backup every 4 steps."""
    return cnn_yaml(
        name="resumable",
        layers=["{type: conv2d, filters: 32, kernel_size: 3, activation: relu}",
                "{type: max_pool2d, pool_size: 2}",
                "{type: dropout, rate: 0.3}",
                "{type: flatten}",
                "{type: dense, units: 10, activation: softmax}"],
        data='{source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 2048, '
             'max_test_samples: 128}',
        augmentation="{placement: model, layers: [{type: random_flip, mode: horizontal}]}",
        optimizer="{name: sgd, learning_rate: 0.05, momentum: 0.9, schedule: {type: cosine}}",
        train="{epochs: 3, batch_size: 64, seed: 7, deterministic: true, backup_every_steps: 4, "
              "tensorboard: false}")


@pytest.fixture
def config(tmp_path, resumable_yaml) -> Path:
    path = tmp_path / "resumable.yaml"
    path.write_text(resumable_yaml)
    return path


def cnnctl(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnctl", *map(str, args)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def finish(proc: subprocess.Popen, timeout=300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def newest_state(run_dir: Path) -> dict | None:
    states = sorted((run_dir / "backup").glob("state-*.json"))
    for state in reversed(states):
        try:
            return json.loads(state.read_text())
        except (OSError, ValueError):
            continue
    return None


def wait_for(run_dir: Path, proc: subprocess.Popen, ready, timeout=240) -> dict:
    """Poll the run's backups until `ready(state)`; the process must still be running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = newest_state(run_dir)
        if state and ready(state):
            return state
        assert proc.poll() is None, f"the run ended before the moment to interrupt it: {proc.communicate()}"
        time.sleep(0.005)
    raise AssertionError("no backup appeared in time")


def weights(path: Path) -> list[np.ndarray]:
    return keras.saving.load_model(path, safe_mode=True, compile=False).get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--set", "optimizer.ema_momentum=0.9"]],
                         ids=["plain", "weight_ema"])
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(config, tmp_path, extra):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    a = cnnctl("train", config, "--run-dir", straight, *extra)
    rc, out, err = finish(a)
    assert rc == 0, err

    b = cnnctl("train", config, "--run-dir", killed, *extra)
    state = wait_for(killed, b, lambda s: s["epoch"] == 1 and s["step"] >= 4)
    b.send_signal(signal.SIGKILL)
    assert b.wait() == -signal.SIGKILL
    assert 0 < state["step"] < STEPS                   # killed in the middle of epoch 2
    assert not (killed / "metrics.json").exists()

    rc, out, err = finish(cnnctl("train", config, "--resume", killed, *extra))
    assert rc == 0, err
    assert "resuming" in out and "at epoch 2, step" in out
    for name in ("last.keras", "best.keras"):
        for x, y in zip(weights(straight / "checkpoints" / name), weights(killed / "checkpoints" / name)):
            np.testing.assert_array_equal(x, y)       # bit-identical: CPU, deterministic ops
    ours = json.loads((killed / "metrics.json").read_text())
    theirs = json.loads((straight / "metrics.json").read_text())
    assert ours["test"] == theirs["test"] and ours["epochs"] == theirs["epochs"] == 3


@pytest.mark.slow
def test_sigterm_backs_up_then_resume_skips_a_corrupt_backup(config, tmp_path):
    run = tmp_path / "run"
    proc = cnnctl("train", config, "--run-dir", run)
    wait_for(run, proc, lambda s: s["global_step"] >= 8)
    proc.send_signal(signal.SIGTERM)
    rc, out, err = finish(proc)
    assert rc == 128 + signal.SIGTERM
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert re.match(r"interrupted by SIGTERM at epoch \d+, step \d+ of 32; ", line)
    assert line.endswith(f"Resume with: cnnctl train {config} --resume {run}")
    state = newest_state(run)
    newest = run / "backup" / state["model"]
    assert not (run / "metrics.json").exists()

    # damage the newest backup as a crash mid-write would have on a filesystem without rename
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    rc, out, err = finish(cnnctl("train", config, "--resume", run))
    assert rc == 0, err
    assert f"{newest}: corrupt backup" in err and "using an older backup" in err
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3


def test_resume_with_a_changed_config_is_refused(config, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(config), "--run-dir", str(run), "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    (run / "metrics.json").unlink()                         # pretend it did not finish
    changed = CliRunner().invoke(app, ["train", str(config), "--resume", str(run),
                                       "--set", "train.epochs=2", "--set", "train.seed=8"])
    assert changed.exit_code == 2
    assert (f"{run}: cannot resume with a changed config (train.epochs: 1 -> 2; train.seed: 7 -> 8); "
            f"resume with the run's own config ({run / 'config.yaml'}) or start a new run") in changed.output


def test_an_unfinished_run_of_the_same_config_is_picked_up(config, tmp_path):
    runs_dir = tmp_path / "runs"
    keep = ["--set", "run.keep=[last, backup]"]  # a finished run removes its backup by default
    first = CliRunner().invoke(app, ["train", str(config), "--set", f"run.dir={runs_dir}",
                                     "--set", "train.epochs=1", *keep])
    assert first.exit_code == 0, first.output
    (run,) = (runs_dir / "resumable").iterdir()
    (run / "metrics.json").unlink()
    again = CliRunner().invoke(app, ["train", str(config), "--set", f"run.dir={runs_dir}",
                                     "--set", "train.epochs=1", *keep])
    assert again.exit_code == 0, again.output
    assert f"found an unfinished run of this config: {run}" in again.output
    assert len(list((runs_dir / "resumable").iterdir())) == 1
    fresh = CliRunner().invoke(app, ["train", str(config), "--set", f"run.dir={runs_dir}",
                                     "--set", "train.epochs=1", *keep, "--new"])
    assert fresh.exit_code == 0 and len(list((runs_dir / "resumable").iterdir())) == 2


def test_nan_config_stops_with_epoch_and_step_and_no_finished_run(config, tmp_path, resumable_yaml):
    bad = tmp_path / "nan.yaml"
    bad.write_text(resumable_yaml.replace("{name: sgd, learning_rate: 0.05, momentum: 0.9, schedule: {type: cosine}}",
                                          "{name: sgd, learning_rate: 1.0e+30}"))
    run = tmp_path / "run"
    rc, out, err = finish(cnnctl("train", bad, "--run-dir", run))
    assert rc == 3 and "Traceback" not in err
    assert err.strip().startswith("the loss became NaN or infinite at epoch 1, step ")
    step = int(re.match(r"the loss became NaN or infinite at epoch 1, step (\d+)", err.strip())[1])
    # the progress line ends where the epoch really stopped, not at 32/32
    assert f"{step}/32 - " in out and "32/32" not in out
    assert f"epoch 1 stopped after step {step} of 32" in out
    assert "no epoch had finished, so there is no checkpoint" in err
    assert not (run / "metrics.json").exists() and not list((run / "checkpoints").glob("*.keras"))


def test_nan_in_a_later_epoch_keeps_the_last_good_checkpoint_and_backup(config, tmp_path,
                                                                        monkeypatch):
    """From step 3 of epoch 2 the images overflow the network (NaN pixels would vanish in ReLU
    and max-pooling): epoch 1's checkpoints and backup must survive as they were."""
    import tensorflow as tf

    real_load = data_lib.load

    def poisoned(*args, **kwargs):
        splits = real_load(*args, **kwargs)
        clean = splits.train_from

        def train_from(epoch, step):
            first = epoch * STEPS + step       # position of the stream's first batch
            return clean(epoch, step).enumerate().map(
                lambda i, xy: (xy[0] * tf.where(first + i >= STEPS + 2, 1e38, 1.0), xy[1]))

        splits.train_from = train_from
        return splits

    monkeypatch.setattr(data_lib, "load", poisoned)
    loaded = config_lib.load(config, ["train.backup_every_steps=null"])
    run = tmp_path / "run"
    with pytest.raises(train_lib.NumericalFailure) as failure:
        train_lib.train(loaded, run, verbose=0)
    assert str(failure.value).startswith("the loss became NaN or infinite at epoch 2, step 3;")
    assert f"the last good checkpoints and backup are kept in {run}" in str(failure.value)
    state = newest_state(run)
    assert (state["epoch"], state["step"]) == (1, 0)    # the epoch-1 backup is the newest
    backup = weights(run / "backup" / state["model"])
    for name in ("last.keras", "best.keras"):
        saved = weights(run / "checkpoints" / name)
        assert all(np.isfinite(w).all() for w in saved)
        for x, y in zip(saved, backup):
            np.testing.assert_array_equal(x, y)
    assert not (run / "metrics.json").exists()


def test_full_disk_keeps_the_previous_checkpoint(config, tmp_path, monkeypatch):
    run = tmp_path / "run"
    loaded = config_lib.load(config, ["train.epochs=2", "train.backup_every_steps=null"])
    real_save = keras.Model.save
    calls = {"last": 0}

    def save(self, filepath, *args, **kwargs):
        if ".last.tmp" in str(filepath):
            calls["last"] += 1
            if calls["last"] == 2:          # epoch 2's last.keras: half written, then ENOSPC
                Path(filepath).write_bytes(b"PK\x03\x04partial")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save)
    with pytest.raises(checkpoints.CheckpointWriteError) as error:
        train_lib.train(loaded, run, verbose=0)
    last = run / "checkpoints" / "last.keras"
    assert str(error.value) == (f"{last}: disk full while writing the checkpoint; the previous "
                                "last.keras (if any) is kept. Free some space, then run the same "
                                "`cnnctl train` command again: it resumes the run from its newest "
                                "backup, or starts it over if it stopped before its first one.")
    assert checkpoints.check_keras_file(last) is None          # the epoch-1 file, whole
    assert not list(last.parent.glob(".*tmp*"))                # no half-written leftovers
    states = [json.loads(p.read_text()) for p in (run / "backup").glob("state-*.json")]
    epoch1 = run / "backup" / next(s["model"] for s in states if (s["epoch"], s["step"]) == (1, 0))
    for x, y in zip(weights(last), weights(epoch1)):
        np.testing.assert_array_equal(x, y)


def test_the_epoch_end_backup_holds_that_epochs_history_and_callback_memory(config, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", str(config), "--run-dir", str(run), "--set", "train.epochs=2",
        "--set", "run.keep=[last, backup]",  # to look at the backup of the finished run
        "--set", "train.early_stopping={monitor: loss, patience: 5}",
        "--set", "train.reduce_lr_on_plateau={monitor: loss, patience: 5}"])
    assert result.exit_code == 0, result.output
    state = newest_state(run)
    assert (state["epoch"], state["step"]) == (2, 0)
    losses = json.loads((run / "metrics.json").read_text())["history"]["loss"]
    assert len(losses) == 2
    # the memory of the second epoch, not of the first: a run resumed from this backup goes on
    # as the uninterrupted one would
    for name in ("early_stopping", "reduce_lr"):
        assert state["callbacks"][name]["best"] == pytest.approx(min(losses))
        assert state["callbacks"][name]["wait"] == (0 if losses[1] < losses[0] else 1)


@pytest.mark.slow
def test_the_printed_resume_command_resumes_a_run_started_with_set(config, tmp_path,
                                                                   console_script):
    run = tmp_path / "run dir"  # a space: the printed command must quote it
    overrides = ["--set", "train.epochs=2", "--set", "data.max_train_samples=1024"]
    script = console_script
    proc = subprocess.Popen([str(script), "train", str(config), *overrides, "--run-dir", str(run)],
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(run, proc, lambda s: s["global_step"] >= 4)
    proc.send_signal(signal.SIGINT)
    rc, out, err = finish(proc)
    assert rc == 128 + signal.SIGINT, err
    assert "Traceback" not in err
    step = newest_state(run)["step"]
    assert f"epoch 1 stopped after step {step} of 16" in out   # not 16/16
    assert f" {step}/16 - " in out and "16/16" not in out
    assert f"interrupted by SIGINT at epoch 1, step {step} of 16; " in err
    printed = err.strip().splitlines()[-1].split("Resume with: ", 1)[1]
    assert printed == f"cnnctl train '{run / 'config.yaml'}' --resume '{run}'"
    command = shlex.split(printed)
    assert command[0] == "cnnctl"
    rc, out, err = finish(subprocess.Popen([str(script), *command[1:]], text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert rc == 0, err
    assert f"resuming {run} at epoch 1, step {step}" in out
    assert f"Epoch 1/2 (resumed at step {step})" in out and f"16/16 - " in out  # counts on from there
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    # the run is finished now: resuming it again is refused, and nothing in it changes
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, out, err = finish(subprocess.Popen([str(script), *command[1:]], text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert rc == 2
    assert err == (f"{run}: the run is finished (metrics.json is written); there is nothing to "
                   f"resume: `cnnctl eval {run}` scores it, and without --resume `cnnctl train` "
                   "starts a new run\n")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_lockstep_worker_stops_at_once_on_a_signal(tmp_path):
    """multi_worker: a signal must not make one worker write a backup or evaluate on its own."""
    import numpy as np

    from cnnctl.train import checkpoints
    from cnnctl.backend import keras

    guard = checkpoints.NanGuard()
    backups = checkpoints.Backups(tmp_path, guard, checkpoints.Interruption(), None, 8, extra_state=dict)
    stop = checkpoints.SignalStop(backups, at_once=True)

    class Terminate(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    before = signal.getsignal(signal.SIGTERM)
    seen = []
    with pytest.raises(checkpoints.Signalled):
        model.fit(np.zeros((64, 4)), np.zeros((64, 2)), batch_size=8, epochs=2, verbose=0,
                  callbacks=[guard, stop, Terminate(), keras.callbacks.LambdaCallback(
                      on_train_batch_end=lambda batch, logs: seen.append(batch))])
    stop.on_train_end()
    assert stop.received == signal.SIGTERM and max(seen) <= 3  # no further step, no epoch end
    assert not (tmp_path / "backup").exists()
    assert signal.getsignal(signal.SIGTERM) == before
