"""Benchmark `mnist_cnn`: the CNN of configs/fashion_mnist.yaml (93,322 parameters) trained on
Fashion-MNIST by `cnnctl train`, by the same model as a plain Keras script (`plain_keras.py`),
once per Keras backend, and by a hand-written PyTorch loop (`plain_torch.py`)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path

from bench import process, report
from bench.settings import Settings

NAME = "mnist_cnn"
HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "configs" / "fashion_mnist.yaml"
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000
PLAIN_KERAS, CNNCTL, TORCH_LOOP = "plain Keras", "cnnctl", "PyTorch loop"


@dataclasses.dataclass
class Run:
    """What one contender measured, or why it has no figures (`error`)."""

    contender: str
    backend: str
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    train_accuracy: list[float] = dataclasses.field(default_factory=list)
    test_accuracy: float | None = None
    wall_seconds: float | None = None
    max_rss: int | None = None
    other_load: float | None = None
    error: str | None = None
    note: str = ""

    @property
    def seconds_per_epoch(self) -> float | None:
        """Mean wall seconds of the epochs after the first (the first one traces and compiles)."""
        return statistics.fmean(self.epoch_seconds[1:]) if len(self.epoch_seconds) > 1 else None

    def time_to(self, target: float) -> tuple[float, int] | None:
        """(seconds, epoch): the epoch seconds summed up to the end of the first epoch whose
        training accuracy reaches `target`, warm-up included; None if none does."""
        total = 0.0
        pairs = zip(self.epoch_seconds, self.train_accuracy)
        for epoch, (seconds, accuracy) in enumerate(pairs, 1):
            total += seconds
            if accuracy >= target:
                return total, epoch
        return None


def missing_data(data_dir: Path) -> str | None:
    """What this benchmark lacks under `data_dir`, or None."""
    folder = data_dir / "fashion-mnist"
    absent = [name for name in FILES if not (folder / name).is_file()]
    return f"{folder}/ lacks {', '.join(absent)}" if absent else None


def run(settings: Settings) -> str:
    """Run every contender, one after another; returns the markdown of the results."""
    env = {**os.environ, "KERAS_HOME": str(_keras_home(settings))}
    runs = []
    for backend in settings.backends:
        if not process.importable(settings.python, backend):
            runs += [Run(name, backend, error=f"{backend} is not installed")
                     for name in (PLAIN_KERAS, CNNCTL)]
            continue
        backend_env = {**env, "KERAS_BACKEND": backend}
        runs.append(_plain_keras(settings, backend, backend_env))
        runs.append(_cnnctl(settings, backend, backend_env))
    if "torch" in settings.backends:
        runs.append(_torch_loop(settings, env))
    return "\n\n".join([_describe(settings), _table(runs, settings), _legend(settings)])


def _keras_home(settings: Settings) -> Path:
    """A KERAS_HOME whose datasets/fashion-mnist/ links to the shared files, so that
    keras.datasets and cnnctl read them instead of downloading."""
    home = settings.work / "keras_home"
    folder = home / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        link = folder / name
        if not link.exists():
            link.symlink_to((settings.data_dir / "fashion-mnist" / name).resolve())
    return home


def _train_options(settings: Settings) -> list[str]:
    options = ["--epochs", str(settings.epochs), "--batch-size", str(settings.batch_size)]
    if settings.train_samples:
        options += ["--train-samples", str(settings.train_samples)]
    return options


def _plain_keras(settings: Settings, backend: str, env: dict) -> Run:
    command = [settings.python, str(HERE / "plain_keras.py"), *_train_options(settings)]
    return _measure(settings, PLAIN_KERAS, backend, command, env, _figures)


def _cnnctl(settings: Settings, backend: str, env: dict) -> Run:
    """`cnnctl train` of the config itself, with command-line overrides only."""
    run_dir = settings.work / f"cnnctl-{backend}"
    overrides = [f"train.epochs={settings.epochs}", f"train.batch_size={settings.batch_size}",
                 "train.tensorboard=false"]
    if settings.train_samples:
        overrides.append(f"data.max_train_samples={settings.train_samples}")
    command = [settings.python, "-m", "cnnctl", "train", str(CONFIG), "--run-dir", str(run_dir)]
    for override in overrides:
        command += ["--set", override]

    def figures(child: process.Child) -> dict:
        with open(run_dir / "history.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return {"epoch_seconds": [float(row["epoch_seconds"]) for row in rows],
                "train_accuracy": [float(row["accuracy"]) for row in rows],
                "test_accuracy": metrics["test"]["accuracy"]}

    return _measure(settings, CNNCTL, backend, command, env, figures)


def _torch_loop(settings: Settings, env: dict) -> Run:
    if not process.importable(settings.python, "torch"):
        return Run(TORCH_LOOP, "torch", error="torch is not installed")
    command = [settings.python, str(HERE / "plain_torch.py"),
               "--data", str(settings.data_dir / "fashion-mnist"), *_train_options(settings)]

    def figures(child: process.Child) -> dict:
        result = child.result()
        return {**_figures(child), "note": f"device {result['device']}; PyTorch's default "
                                           "initialisation"}

    return _measure(settings, TORCH_LOOP, "torch", command, env, figures)


def _figures(child: process.Child) -> dict:
    """The figures a contender script printed as its JSON line."""
    result = child.result()
    return {key: result[key] for key in ("epoch_seconds", "train_accuracy", "test_accuracy")}


def _measure(settings: Settings, contender: str, backend: str, command: list[str], env: dict,
             figures: Callable[[process.Child], dict]) -> Run:
    """Run one contender and read its figures; a failure becomes the row's error."""
    what = f"{NAME}: {contender} ({backend})"
    process.say(f"{what} ...")
    log = settings.work / "logs" / f"{NAME}-{contender.replace(' ', '_')}-{backend}"
    child = process.run(command, env=env, cwd=settings.work, log=log)
    usage = {"wall_seconds": child.wall_seconds, "max_rss": child.max_rss,
             "other_load": child.other_load}
    if child.error:
        process.show_failure(child, what)
        return Run(contender, backend, error=child.error, **usage)
    try:
        run = Run(contender, backend, **figures(child), **usage)
        if len(run.epoch_seconds) < 2 or len(run.train_accuracy) != len(run.epoch_seconds):
            raise ValueError(f"{len(run.epoch_seconds)} epoch times and "
                             f"{len(run.train_accuracy)} accuracies for {settings.epochs} epochs")
    except (OSError, ValueError, KeyError, TypeError) as e:
        error = f"no readable result: {type(e).__name__}: {e}"
        return Run(contender, backend, error=error, **usage)
    process.say(f"  {report.seconds(run.seconds_per_epoch)} s/epoch after warm-up, "
                f"test accuracy {report.accuracy(run.test_accuracy)}, peak RSS "
                f"{report.mebibytes(run.max_rss)}")
    return run


def _describe(settings: Settings) -> str:
    n = _train_images(settings)
    which = f"the first {n:,} of {TRAIN_IMAGES:,}" if n < TRAIN_IMAGES else f"all {n:,}"
    return (f"Fashion-MNIST, {which} training images, {TEST_IMAGES:,} test images; "
            f"{settings.epochs} epochs, batch {settings.batch_size}, Adam 1e-3, categorical "
            "cross-entropy.")


def _train_images(settings: Settings) -> int:
    return min(settings.train_samples or TRAIN_IMAGES, TRAIN_IMAGES)


def _table(runs: list[Run], settings: Settings) -> str:
    images = _train_images(settings)
    reference = {run.backend: run.seconds_per_epoch for run in runs if run.contender == PLAIN_KERAS}
    headers = ["contender", "backend", "s/epoch after warm-up", "images/s",
               "s/epoch ÷ plain Keras", "test accuracy", f"time to train acc {settings.target:g}",
               "peak RSS", "process wall s", "other load", "s per epoch (all)", "note"]
    rows = []
    for run in runs:
        usage = [report.mebibytes(run.max_rss), report.seconds(run.wall_seconds),
                 report.ratio(run.other_load)]
        if run.error:
            rows.append([run.contender, run.backend, *[report.MISSING] * 5, *usage,
                         report.MISSING, run.error])
            continue
        per_epoch, base = run.seconds_per_epoch, reference.get(run.backend)
        reached = run.time_to(settings.target)
        rows.append([
            run.contender, run.backend, report.seconds(per_epoch), report.count(images / per_epoch),
            report.ratio(per_epoch / base if base else None), report.accuracy(run.test_accuracy),
            f"{reached[0]:.1f} s (epoch {reached[1]})" if reached else
            f"not reached (best {max(run.train_accuracy):.4f})",
            *usage, ", ".join(f"{s:.2f}" for s in run.epoch_seconds), run.note,
        ])
    return report.table(headers, rows)


def _legend(settings: Settings) -> str:
    return ("S/epoch ÷ plain Keras: over plain Keras on the same backend (the PyTorch loop: over "
            "plain Keras on the torch backend); above 1 is slower than plain Keras. Time to train "
            "acc: the epoch seconds, warm-up included, summed up to the end of the first epoch "
            f"whose training accuracy reaches {settings.target:g}.")
