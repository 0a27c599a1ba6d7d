"""Trials per hour of `cnnctl tune` with --jobs 1 against --jobs K, side by side in one run.

    python bench/tune_jobs.py                 # configs/tune_fashion_mnist.yaml, 6 trials each
    python bench/tune_jobs.py --trials 4 --jobs 2 --train-samples 6000

Each setting is its own study (a new folder), trained with the pruner off so that both train the
same number of epochs; the sampler is seeded, so both draw the same trials in the same order.
The section `<!-- bench:tune_jobs:MACHINE:SCALE -->` of BENCHMARKS.md is replaced."""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import machine, process, report  # noqa: E402
from bench.mnist_cnn import FILES  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NAME = "tune_jobs"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "tune_fashion_mnist.yaml")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2, help="the K compared with --jobs 1")
    parser.add_argument("--train-samples", type=int, help="data.max_train_samples of every trial")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--machine", help="the machine's kind in BENCHMARKS.md (default: read off it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cnnctl-bench-tune-"))
    home = work / "keras_home" / "datasets" / "fashion-mnist"
    home.mkdir(parents=True)
    for name in FILES:
        (home / name).symlink_to((args.data_dir / "fashion-mnist" / name).resolve())
    env = {**os.environ, "KERAS_HOME": str(work / "keras_home")}
    sets = ["--set", "tune.pruner=none", "--set", f"tune.dir={work / 'studies'}"]
    if args.train_samples:
        sets += ["--set", f"data.max_train_samples={args.train_samples}"]
    rows = []
    for jobs in (1, args.jobs):
        study = f"jobs{jobs}"
        command = [sys.executable, "-m", "cnnctl", "tune", str(args.config), "--trials", str(args.trials),
                   "--jobs", str(jobs), "--study", study, *sets]
        process.say(f"{NAME}: --jobs {jobs}: {shlex.join(command)}")
        start = time.perf_counter()
        child = process.run(command, env=env, cwd=work, log=work / f"{study}.log")
        seconds = time.perf_counter() - start
        if child.returncode != 0:
            process.show_failure(child, f"--jobs {jobs}")
            rows.append([f"--jobs {jobs}", "failed", "", "", "", ""])
            continue
        rows.append([f"--jobs {jobs}", str(args.trials), report.seconds(seconds),
                     f"{args.trials * 3600 / seconds:.0f}", "", _trial_seconds(work / "studies" / study)])
    base = float(rows[0][3]) if rows[0][1] != "failed" else None
    for row in rows:
        row[4] = report.ratio(float(row[3]) / base) if base and row[1] != "failed" else ""
    info = machine.info()
    kind = args.machine or machine.kind(info)
    body = report.table(["command", "trials", "wall time", "trials per hour", "vs --jobs 1",
                         "seconds per trial (mean, from trials.csv)"], rows)
    shown = shlex.join(["python", "bench/tune_jobs.py", *argv])
    text = (f"### {NAME} on {kind}\n\nMeasured {datetime.date.today().isoformat()} with `{shown}` "
            f"({args.config.name}, {args.trials} trials per setting, pruner off) on:\n\n"
            f"{machine.markdown(info)}\n\n{body}")
    report.update(args.out, f"{NAME}:{kind}:small", text)
    print(text)
    return 0


def _trial_seconds(folder: Path) -> str:
    """The mean duration of the study's trials: each trial's own process, start to end."""
    with open(folder / "trials.csv", newline="") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f) if row["seconds"]]
    return report.seconds(sum(seconds) / len(seconds)) if seconds else ""


if __name__ == "__main__":
    sys.exit(main())
