"""Benchmark `folder_input`: images per second of reading a folder of CIFAR-10 JPEGs, cnnctl's
pipeline against plain `keras.utils.image_dataset_from_directory` (`folder_pipeline.py`)."""

from __future__ import annotations

import collections
import dataclasses
import os
import tarfile
from pathlib import Path

from bench import process, report
from bench.settings import Settings

NAME = "folder_input"
HERE = Path(__file__).resolve().parent
ARCHIVE = "cifar10-jpg.tar.gz"  # cifar10-jpg/{train,test}/<class>/NNNN.jpg
TRAIN_PER_CLASS, CLASSES = 5_000, 10
PIPELINES = {  # folder_pipeline.py's name: the row's name
    "keras": "plain Keras: image_dataset_from_directory + cache + prefetch",
    "cnnctl": "cnnctl: data.load + train_from",
}


@dataclasses.dataclass
class Pass:
    """What one pipeline measured, or why it has no figures (`error`)."""

    name: str
    images: int = 0
    setup_seconds: float | None = None
    pass_seconds: list[float] = dataclasses.field(default_factory=list)
    wall_seconds: float | None = None
    max_rss: int | None = None
    other_load: float | None = None
    error: str | None = None

    def rate(self, which: str) -> float | None:
        """Images per second of the first pass, the first pass including the setup, or the
        second pass."""
        if self.error:
            return None
        seconds = {"first": self.pass_seconds[0], "setup+first": self.setup_seconds +
                   self.pass_seconds[0], "second": self.pass_seconds[1]}[which]
        return self.images / seconds


def missing_data(data_dir: Path) -> str | None:
    """What this benchmark lacks under `data_dir`, or None."""
    archive = data_dir / ARCHIVE
    return None if archive.is_file() else f"{archive} not found"


def run(settings: Settings) -> str:
    """Extract the training JPEGs and time both pipelines; returns the markdown of the results."""
    per_class = min(settings.images_per_class or TRAIN_PER_CLASS, TRAIN_PER_CLASS)
    describe = (f"CIFAR-10 as JPEG files (`{ARCHIVE}`), the first {per_class:,} training images of "
                f"each class, 32x32 RGB; batch {settings.batch_size}, shuffled; no model.")
    if not process.importable(settings.python, "tensorflow"):
        return f"{describe}\n\nSkipped: TensorFlow is not installed (both pipelines are tf.data)."
    train_dir = settings.work / "cifar10-train"
    process.say(f"{NAME}: extracting {per_class * CLASSES:,} JPEGs to {train_dir} ...")
    extract(settings.data_dir / ARCHIVE, train_dir, per_class)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    passes = [_measure(settings, pipeline, train_dir, env) for pipeline in PIPELINES]
    return "\n\n".join([describe, _table(passes), _legend()])


def extract(archive: Path, target: Path, per_class: int) -> int:
    """Write the first `per_class` training JPEGs of each class (in archive order) to
    target/<class>/; returns how many were written."""
    taken: collections.Counter[str] = collections.Counter()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")  # cifar10-jpg/train/<class>/NNNN.jpg
            if not member.isfile() or len(parts) != 4 or parts[1] != "train":
                continue
            if taken[parts[2]] < per_class:
                taken[parts[2]] += 1
                path = target / parts[2] / parts[3]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tar.extractfile(member).read())
    return sum(taken.values())


def _measure(settings: Settings, pipeline: str, train_dir: Path, env: dict) -> Pass:
    name = PIPELINES[pipeline]
    process.say(f"{NAME}: {name} ...")
    command = [settings.python, str(HERE / "folder_pipeline.py"), pipeline, str(train_dir),
               "--batch-size", str(settings.batch_size)]
    child = process.run(command, env=env, cwd=settings.work,
                        log=settings.work / "logs" / f"{NAME}-{pipeline}")
    usage = {"wall_seconds": child.wall_seconds, "max_rss": child.max_rss,
             "other_load": child.other_load}
    if child.error:
        process.show_failure(child, f"{NAME}: {pipeline}")
        return Pass(name, error=child.error, **usage)
    try:
        result = child.result()
        measured = Pass(name, result["images"], result["setup_seconds"], result["pass_seconds"],
                        **usage)
    except (ValueError, KeyError, TypeError) as e:
        return Pass(name, error=f"no readable result: {type(e).__name__}: {e}", **usage)
    process.say(f"  {report.count(measured.rate('setup+first'))} images/s with setup, "
                f"{report.count(measured.rate('second'))} images/s on the second pass")
    return measured


def _table(passes: list[Pass]) -> str:
    plain = next(p for p in passes if p.name == PIPELINES["keras"])
    headers = ["pipeline", "images", "setup s", "first pass images/s",
               "setup + first pass images/s", "second pass images/s",
               "images/s ÷ plain Keras (setup + first pass)",
               "images/s ÷ plain Keras (second pass)", "peak RSS", "process wall s",
               "other load", "note"]
    rows = []
    for p in passes:
        def versus(which):
            mine, theirs = p.rate(which), plain.rate(which)
            return report.ratio(mine / theirs if mine and theirs else None)

        rows.append([p.name, report.count(p.images or None), report.seconds(p.setup_seconds),
                     report.count(p.rate("first")), report.count(p.rate("setup+first")),
                     report.count(p.rate("second")), versus("setup+first"), versus("second"),
                     report.mebibytes(p.max_rss), report.seconds(p.wall_seconds),
                     report.ratio(p.other_load), p.error or ""])
    return report.table(headers, rows)


def _legend() -> str:
    return ("Setup: building the pipeline (plain Keras: listing the files; cnnctl: checking "
            "every file and decoding the folder into memory). Images/s ÷ plain Keras: above 1 is "
            "faster than plain Keras.")
