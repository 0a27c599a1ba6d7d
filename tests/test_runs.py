"""Run directories on disk: what a finished run keeps (`run.keep`), `cnnctl runs` over finished,
unfinished and failed runs, and a config's runs folder standing for its newest finished run."""

import json
import os
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.config import load as config_lib
from cnnctl.use import trained
from cnnctl import runs
from cnnctl.train import fit as train_lib
from cnnctl.cli import app

runner = CliRunner()

PARAMS = 8 * (9 + 1) + 13 * 13 * 8 * 10 + 10


@pytest.fixture(scope="module")
def tiny_yaml(cnn_yaml) -> str:
    """13,610 parameters (PARAMS): large enough that the optimizer state shows in the file sizes;
    2 epochs of 3 steps (192 of 256 shipped Fashion-MNIST images, batch 64)."""
    return cnn_yaml(
        name="tiny",
        layers=["{type: conv2d, filters: 8, kernel_size: 3, strides: 2, activation: relu}",
                "{type: flatten}",
                "{type: dense, units: 10, activation: softmax}"],
        data='{source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 256, '
             'max_test_samples: 64, validation_split: 0.25}',
        optimizer="{name: adam}", train="{epochs: 2, batch_size: 64, tensorboard: false}")


@pytest.fixture(scope="module")
def train(train_yaml, tiny_yaml):
    """train(tmp_path, run, *overrides) -> run: `tiny_yaml` (with these `--set` overrides)
    trained into `run`."""

    def train(tmp_path: Path, run: Path, *overrides: str) -> Path:
        train_yaml(tiny_yaml, tmp_path / "tiny.yaml", run, *overrides)
        return run

    return train


def h5_groups(keras_file: Path) -> list[str]:
    """The top-level groups of the weights file inside a .keras archive."""
    with zipfile.ZipFile(keras_file) as archive, archive.open("model.weights.h5") as weights:
        with h5py.File(weights, "r") as h5:
            return sorted(h5.keys())


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def kept(tmp_path_factory, train) -> Path:
    """A finished 2-epoch run that kept its backup (run.keep: [last, backup])."""
    tmp = tmp_path_factory.mktemp("kept")
    return train(tmp, tmp / "run", "run.keep=[last, backup]")


# --------------------------------------------------------------------------- disk use
@pytest.mark.slow
def test_a_finished_run_keeps_the_model_without_optimizer_state_and_no_backup(tmp_path, train):
    run = train(tmp_path, tmp_path / "run")
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert files == ["checkpoints/best.keras", "checkpoints/last.keras", "class_names.json",
                     "config.yaml", "curves.png", "environment.json", "history.csv",
                     "metrics.json", "source_config.yaml"]
    best = run / "checkpoints" / "best.keras"
    assert h5_groups(best) == ["layers", "vars"]          # no "optimizer" group
    with zipfile.ZipFile(best) as archive:
        assert not json.loads(archive.read("config.json"))["compile_config"]  # loads uncompiled
    # the weights (4 bytes each) and a few kB of config: adam's two moments would triple it
    assert PARAMS * 4 < best.stat().st_size < PARAMS * 4 * 1.5
    model = trained.load_model(run)                        # safe mode, as eval/predict/export
    assert model.count_params() == PARAMS
    # the final figures are those of best.keras as eval computes them
    metrics = json.loads((run / "metrics.json").read_text())
    result = runner.invoke(app, ["eval", str(run), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


@pytest.mark.slow
def test_run_keep_chooses_backup_last_and_optimizer_state(tmp_path, kept, train):
    assert sorted(p.name for p in (kept / "backup").iterdir()) == [
        "ckpt-000000003.keras", "ckpt-000000006.keras", "state-000000003.json",
        "state-000000006.json"]   # 192 training images: 3 steps an epoch
    run = train(tmp_path, tmp_path / "run", "run.keep=[optimizer_state]")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.keras"]
    assert not (run / "backup").exists()
    best = run / "checkpoints" / "best.keras"
    assert h5_groups(best) == ["layers", "optimizer", "vars"]
    assert best.stat().st_size > PARAMS * 4 * 3               # weights and adam's two moments
    assert trained.load_model(run).count_params() == PARAMS


# --------------------------------------------------------------------------- cnnctl runs
def unfinished(run: Path, target: Path) -> Path:
    """A copy of a run as an interruption in its second epoch leaves it: the backup of epoch 1,
    one row of history, no metrics."""
    shutil.copytree(run, target)
    (target / "metrics.json").unlink()
    for name in ("state-000000006.json", "ckpt-000000006.keras"):
        (target / "backup" / name).unlink()
    history = (target / "history.csv").read_text().splitlines(keepends=True)
    (target / "history.csv").write_text("".join(history[:2]))
    return target


@pytest.mark.slow
def test_runs_lists_finished_unfinished_and_failed_runs(tmp_path, kept, tiny_yaml):
    folder = tmp_path / "runs"
    finished = folder / "tiny" / "20261202-101500"
    shutil.copytree(kept, finished)
    half = unfinished(kept, folder / "tiny" / "20261202-111500")
    crashed = unfinished(kept, folder / "tiny" / "20261202-121500")
    shutil.rmtree(crashed / "backup")                     # died before its first backup
    nan_config = tmp_path / "nan.yaml"
    nan_config.write_text(tiny_yaml.replace("{name: adam}", "{name: sgd, learning_rate: 1.0e+30}"))
    nan = folder / "other" / "nan-run"
    with pytest.raises(train_lib.NumericalFailure):
        train_lib.train(config_lib.load(nan_config), nan, verbose=0)
    step = json.loads((nan / "failed.json").read_text())["step"]
    (folder / "notes").mkdir()                            # not a run: skipped
    (folder / "notes" / "todo.txt").write_text("compare lrs\n")

    result = runner.invoke(app, ["runs", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    date = json.loads((kept / "environment.json").read_text())["time"]
    nan_date = json.loads((nan / "environment.json").read_text())["time"]
    accuracy = json.loads((kept / "metrics.json").read_text())["test"]["accuracy"]

    def row(run, state, epochs, detail=None, acc=None, when=date):
        return {"path": str(run), "date": when, "model": "tiny", "epochs": epochs,
                "epochs_planned": 2, "test_accuracy": acc, "state": state, "detail": detail,
                "bytes": disk_bytes(run)}

    assert json.loads(result.stdout) == [
        row(nan, "failed", 0, f"NaN loss at epoch 1, step {step}", when=nan_date),
        row(finished, "finished", 2, acc=accuracy),
        row(half, "unfinished", 1),
        row(crashed, "failed", 1, "no backup to resume from"),
    ]

    table = runner.invoke(app, ["runs", str(folder)])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["run", "date", "model", "epochs", "test", "acc", "state", "size"]
    day, minute = date[:10], date[11:16]
    assert lines[2].split()[:7] == [str(finished), day, minute, "tiny", "2/2", f"{accuracy:.4f}",
                                    "finished"]
    assert lines[3].split()[:7] == [str(half), day, minute, "tiny", "1/2", "-", "unfinished"]
    assert " failed (no backup to resume from) " in lines[4]
    assert f" failed (NaN loss at epoch 1, step {step}) " in lines[1]
    total = sum(disk_bytes(r) for r in (finished, half, crashed, nan))
    assert lines[-1] == f"4 run(s), {runs.human_size(total)}"
    assert lines[2].endswith(runs.human_size(disk_bytes(finished)))


def test_runs_of_a_missing_folder_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["runs", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr == (f"{tmp_path / 'nope'}: no such folder; give a folder of runs "
                             "(run.dir of a config, `runs` by default)\n")
    empty = runner.invoke(app, ["runs", str(tmp_path)])
    assert empty.exit_code == 0 and empty.stdout == f"no runs under {tmp_path}\n"


def test_human_size():
    assert [runs.human_size(n) for n in (1023, 1024, 266_050_988, 88_662_389, 3 * 2 ** 30)] == [
        "1023 B", "1.0 KiB", "253.7 MiB", "84.6 MiB", "3.0 GiB"]


# --------------------------------------------------------------------------- which run
@pytest.mark.slow
def test_a_config_runs_folder_stands_for_its_newest_finished_run(tmp_path, kept):
    folder = tmp_path / "runs" / "tiny"
    older, newer = folder / "20261202-101500", folder / "20261202-111500"
    for run in (older, newer):
        shutil.copytree(kept, run)
    os.utime(older / "metrics.json", (1e9, 1e9))
    os.utime(newer / "metrics.json", (2e9, 2e9))          # the one that finished last
    unfinished(kept, folder / "20261202-121500")            # newer still, but not finished
    image = tmp_path / "shoe.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(image)

    predicted = runner.invoke(app, ["predict", str(folder), str(image), "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert predicted.stderr == f"using the newest finished run: {newer}\n"
    names = json.loads((kept / "class_names.json").read_text())
    assert json.loads(predicted.stdout)[0]["top"][0]["label"] in names   # the run's class names

    evaluated = runner.invoke(app, ["eval", str(folder)])
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.stderr == f"using the newest finished run: {newer}\n"
    assert (newer / "eval_test.json").is_file() and not (folder / "eval_test.json").exists()
    assert not (older / "eval_test.json").exists()


def test_a_runs_folder_without_a_finished_run_or_of_several_configs_is_refused(tmp_path, tiny_yaml):
    config = tmp_path / "runs" / "tiny" / "20261202-101500" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(tiny_yaml)
    result = runner.invoke(app, ["predict", str(config.parent.parent), "x.png"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"{config.parent.parent}: none of its 1 run(s) has finished (no metrics.json); give a "
        f"run directory to use an unfinished run's checkpoints, e.g. {config.parent}, or see "
        f"`cnnctl runs {config.parent.parent}`\n")
    result = runner.invoke(app, ["report", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert result.stderr == (f"{tmp_path / 'runs'}: holds folders of runs ({config.parent.parent}), "
                             "not runs; give one of those folders (its newest finished run is "
                             "used) or a run directory\n")
