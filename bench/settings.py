"""What one run of the suite measures, shared by the benchmarks."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Settings:
    scale: str  # "full" or "small": part of the section key in BENCHMARKS.md
    backends: tuple[str, ...]  # Keras backends; "torch" also brings in the hand-written loop
    epochs: int  # mnist_cnn; the first one is warm-up
    batch_size: int
    train_samples: int | None  # mnist_cnn: the first N training images; None: all
    images_per_class: int | None  # folder_input: training JPEGs per class; None: all
    target: float  # mnist_cnn: the training accuracy that "time to target" waits for
    data_dir: Path  # holds fashion-mnist/ and cifar10-jpg.tar.gz
    work: Path  # scratch: data copies, run directories, contender logs
    python: str  # the interpreter that runs every contender
