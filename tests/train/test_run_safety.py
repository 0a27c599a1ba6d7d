"""A run is never corrupted, raced, hung or half-finished: a resume refuses data that changed,
one process trains a run at a time, a resumed run equals the uninterrupted one (history,
best.keras, metrics.json), a full disk at any write leaves a run the same command finishes, a run
killed before its first backup is trained again, and killed at random moments it always
finishes as if it never was, with no stray file."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cnnctl import outputs, runs
from cnnctl.backend import keras
from cnnctl.config import load as config_lib
from cnnctl.data import fingerprint
from cnnctl.errors import CnnctlError
from cnnctl.train import fit as train_lib

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import soak_kill  # noqa: E402  (its run comparison and file readers)

history, metrics, files = soak_kill.history, soak_kill.metrics, soak_kill.files

SMALL_NPZ = '{source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: %d, ' \
            'max_test_samples: 128%s}'


def npz_yaml(cnn_yaml, *, images=1024, val=False, epochs=3, backup_every=4) -> str:
    """`epochs` deterministic epochs of images/64 steps on the shipped Fashion-MNIST slice."""
    return cnn_yaml(
        name="safe",
        layers=["{type: conv2d, filters: 8, kernel_size: 3, activation: relu}",
                "{type: max_pool2d, pool_size: 2}",
                "{type: dropout, rate: 0.2}",
                "{type: flatten}",
                "{type: dense, units: 10, activation: softmax}"],
        data=SMALL_NPZ % (images, ", validation_split: 0.2" if val else ""),
        augmentation="{placement: model, layers: [{type: random_flip, mode: horizontal}]}",
        optimizer="{name: sgd, learning_rate: 0.05, momentum: 0.9, schedule: {type: cosine}}",
        train=f"{{epochs: {epochs}, batch_size: 64, seed: 3, deterministic: true, "
              f"backup_every_steps: {backup_every}, tensorboard: false, "
              f"checkpoint_monitor: {'val_loss' if val else 'loss'}}}")


def spawn(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnctl", *map(str, args)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout=300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def newest_state(run_dir: Path) -> dict | None:
    for state in sorted((run_dir / "backup").glob("state-*.json"), reverse=True):
        try:
            return json.loads(state.read_text())
        except (OSError, ValueError):
            continue
    return None


def wait_until(proc: subprocess.Popen, ready, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ready()
        if found:
            return found
        assert proc.poll() is None, f"the run ended too early: {proc.communicate()}"
        time.sleep(0.005)
    raise AssertionError("the moment to act never came")


def assert_same_run(ours: Path, theirs: Path) -> None:
    """history.csv (less wall times), metrics.json, best.keras weights and the set of files (no
    temporary, no backup left) equal: bench/soak_kill.py's comparison."""
    assert soak_kill.differences(ours, theirs) == []


# --------------------------------------------------------------------------- the data changed
def write_pngs(folder: Path, per_class: int, first: int = 0) -> None:
    from PIL import Image

    data = np.load(Path(__file__).resolve().parents[2] / "cnnctl" / "data" / "fashion_mnist_small.npz")
    for label in range(4):
        picked = np.flatnonzero(data["y_train"] == label)[first:first + per_class]
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        for i in picked:
            Image.fromarray(data["x_train"][i]).save(folder / f"c{label}" / f"{i}.png")


def test_a_resume_refuses_data_that_shrank_and_goes_on_when_allowed(tmp_path, cnn_yaml):
    write_pngs(tmp_path / "train", 40)        # 160 images: 10 steps of 16
    write_pngs(tmp_path / "test", 10, first=100)
    config = tmp_path / "folders.yaml"
    config.write_text(cnn_yaml(
        name="folders", input_shape="[28, 28, 1]",
        layers=["{type: conv2d, filters: 4, kernel_size: 3, activation: relu}",
                "{type: flatten}", "{type: dense, units: 4, activation: softmax}"],
        data=f"{{source: folder, train_dir: {tmp_path / 'train'}, test_dir: {tmp_path / 'test'}}}",
        train="{epochs: 2, batch_size: 16, seed: 1, backup_every_steps: 7, tensorboard: false}"))
    run = tmp_path / "run"
    loaded = config_lib.load(config)

    class KillAtStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 6:  # Ctrl-C after step 7: the signal's backup is at step 8
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(train_lib.Interrupted):
        train_lib.train(loaded, run, verbose=0, extra_callbacks=[KillAtStep()])
    assert newest_state(run)["step"] == 8
    for path in sorted((tmp_path / "train").rglob("*.png"))[::4][:25] + sorted(
            (tmp_path / "train").rglob("*.png"))[1::4][:25]:
        path.unlink()  # 110 left: an epoch is 7 steps now, the backup is at step 8

    started = time.monotonic()
    with pytest.raises(CnnctlError) as refused:
        train_lib.train(loaded, resume=run, verbose=0)
    assert str(refused.value) == (
        f"{run}: the data changed since the backup (train images 160 -> 110); a resumed run "
        "must see the images it was trained on. Put the data back, or pass --allow-data-change "
        "to go on with the new data (epoch 1 starts over), or start a new run with --new")
    assert not (run / "metrics.json").exists()

    result = train_lib.train(loaded, resume=run, allow_data_change=True, verbose=0)
    assert time.monotonic() - started < 60  # ends: no epoch of a negative number of steps
    assert result["epochs"] == 2 and len(history(run)) == 2
    assert runs.is_finished(run) and not (run / "backup").exists()


def test_the_fingerprint_names_what_changed():
    base = {"class_names": ["a", "b"], "steps_per_epoch": 4,
            "splits": {"train": {"images": 60, "per_class": [30, 30], "files_sha256": "1"},
                       "test": {"images": 20, "per_class": [10, 10]}}}

    def changed(**train) -> list[str]:
        new = json.loads(json.dumps(base))
        new["splits"]["train"].update(train)
        return fingerprint.differences(base, new)

    assert changed() == []
    assert changed(images=59, per_class=[29, 30]) == ["train images 60 -> 59"]
    assert changed(per_class=[31, 29]) == ["train images per class: a 30 -> 31, b 30 -> 29"]
    assert changed(files_sha256="2") == ["train image files renamed, replaced or resized (same count)"]
    renamed = {**base, "class_names": ["a", "c"]}
    assert fingerprint.differences(base, renamed) == ["classes [a, b] (2) -> [a, c] (2)"]


# --------------------------------------------------------------------------- one trainer per run
@pytest.mark.slow
def test_a_second_training_of_a_run_in_training_is_refused_with_its_holder(tmp_path, cnn_yaml):
    config = tmp_path / "safe.yaml"
    config.write_text(npz_yaml(cnn_yaml, images=4096, epochs=4))
    run = tmp_path / "run"
    first = spawn("train", config, "--run-dir", run)
    wait_until(first, lambda: newest_state(run))  # a backup: the run looks unfinished
    rc, out, err = finish(spawn("train", config, "--run-dir", run))
    assert rc == 2, err
    assert f": being trained by another process (pid {first.pid} on host " in err
    assert "Traceback" not in err
    rc, out, err = finish(first)
    assert rc == 0, err
    assert len(history(run)) == 4 and metrics(run)["epochs"] == 4


# --------------------------------------------------------------------------- honest resumes
@pytest.mark.slow
@pytest.mark.parametrize("val", [False, True], ids=["no_validation", "validation"])
def test_a_run_killed_mid_epoch_and_resumed_equals_the_uninterrupted_run(tmp_path, cnn_yaml, val):
    """Without validation data best.keras is chosen by the training loss: the resumed epoch's
    must count the steps before the resume point too."""
    config = tmp_path / "safe.yaml"
    config.write_text(npz_yaml(cnn_yaml, val=val))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    rc, _, err = finish(spawn("train", config, "--run-dir", straight))
    assert rc == 0, err
    proc = spawn("train", config, "--run-dir", killed)
    wait_until(proc, lambda: (s := newest_state(killed)) and s["epoch"] == 1 and s["step"] == 12)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rc, out, err = finish(spawn("train", config, "--run-dir", killed))
    assert rc == 0, err
    assert "at epoch 2, step 12" in out
    assert_same_run(killed, straight)


# --------------------------------------------------------------------------- no dead ends
@pytest.mark.slow
def test_a_run_killed_before_its_first_backup_is_trained_again(tmp_path, cnn_yaml):
    config = tmp_path / "safe.yaml"
    config.write_text(npz_yaml(cnn_yaml, images=2048, epochs=2, backup_every=0).replace(
        "backup_every_steps: 0", "backup_every_steps: null"))
    run = tmp_path / "run"
    proc = spawn("train", config, "--run-dir", run)
    wait_until(proc, lambda: (run / "environment.json").exists())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not newest_state(run)
    for _ in range(2):  # the same command, as often as it takes
        rc, out, err = finish(spawn("train", config, "--run-dir", run))
        if rc == 0:
            break
    assert rc == 0, err
    assert f"restarting {run}: it stopped before its first backup" in err + out
    assert runs.is_finished(run) and len(history(run)) == 2


def test_temporaries_of_dead_writers_go_and_those_of_live_ones_stay(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / "checkpoints" / f".last.tmp-{dead}.keras"
    live = tmp_path / f".eval_test.tmp-{os.getppid()}.json"
    mine = tmp_path / ".history.csv"
    for path in (stale, live, mine):
        path.write_text("x")
    assert runs.remove_temporaries(tmp_path) == [stale]
    assert live.exists() and mine.exists() and not stale.exists()


@pytest.mark.slow
def test_a_full_disk_at_any_write_leaves_a_run_the_same_command_finishes(tmp_path, cnn_yaml,
                                                                        monkeypatch, cnnctl):
    config = tmp_path / "safe.yaml"
    config.write_text(npz_yaml(cnn_yaml, images=256, epochs=2, backup_every=2))
    real = outputs.write_file
    written: list[str] = []

    def counting(path, *args, **kwargs):
        written.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(outputs, "write_file", counting)
    straight = tmp_path / "straight"
    assert cnnctl("train", config, "--run-dir", straight).exit_code == 0
    monkeypatch.setattr(outputs, "write_file", real)
    assert "metrics.json" in written and "history.csv" in written and len(written) > 10

    for n, name in enumerate(written):
        run = tmp_path / f"run{n}"
        calls = {"n": 0}

        def full(path, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n + 1:  # what write_file raises when the disk is full
                error = OSError(errno.ENOSPC, "No space left on device", str(path))
                make = kwargs.get("error") or outputs.fs_error
                raise make(Path(path), error)
            return real(path, *args, **kwargs)

        monkeypatch.setattr(outputs, "write_file", full)
        failed = cnnctl("train", config, "--run-dir", run)
        monkeypatch.setattr(outputs, "write_file", real)
        assert failed.exit_code == 2, (name, failed.output)
        assert "Traceback" not in failed.output
        if not runs.is_finished(run):  # the same command, once there is space again
            again = cnnctl("train", config, "--run-dir", run)
            assert again.exit_code == 0, (name, again.output)
        assert runs.is_finished(run), name
        assert not [f for f in files(run) if ".tmp-" in f or f.startswith("backup/")], name
        assert history(run) == history(straight), name


# --------------------------------------------------------------------------- kill anywhere
@pytest.mark.slow
def test_a_run_killed_at_random_moments_ends_as_the_uninterrupted_run():
    """bench/soak_kill.py (its longer soak: 20 kills in each of 5 rounds) with 3 kills."""
    script = Path(__file__).resolve().parents[2] / "bench" / "soak_kill.py"
    done = subprocess.run([sys.executable, str(script), "--kills", "3", "--rounds", "1",
                           "--seed", os.environ.get("CNNCTL_KILL_SEED", "1")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    # a kill may come after the run wrote its results (it then ends there, killed or not)
    assert re.search(r"^round 1: [1-3] kills, [2-4] commands: equal to the uninterrupted run$",
                     done.stdout, re.M), done.stdout
    assert done.stdout.strip().endswith("1 of 1 rounds equal to the uninterrupted run")
