"""Kill a training run at random moments, again and again, and check it still ends as if it
never was: the same history.csv (less the wall time of each epoch), metrics.json, best.keras
weights and files as an uninterrupted run, and no stray file (no temporary, no backup).

    python bench/soak_kill.py                       # 20 kills in each of 5 rounds: minutes
    python bench/soak_kill.py --kills 3 --rounds 1  # what the test suite runs
    python bench/soak_kill.py --config my.yaml      # your own config (deterministic: true)

Each round trains the config with `cnnctl train CONFIG --run-dir RUN`, SIGKILLs it at a random
moment within the uninterrupted run's duration, and runs the same command again until it ends
(the last time without a kill). Exit status 0 when every round matched, 1 otherwise, with what
differed.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_CONFIG = """\
model:
  name: soak
  input_shape: [28, 28, 1]
  layers:
    - {type: conv2d, filters: 8, kernel_size: 3, activation: relu}
    - {type: max_pool2d, pool_size: 2}
    - {type: dropout, rate: 0.2}
    - {type: flatten}
    - {type: dense, units: 10, activation: softmax}
data: {source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 1024,
       max_test_samples: 128}
augmentation: {placement: model, layers: [{type: random_flip, mode: horizontal}]}
optimizer: {name: sgd, learning_rate: 0.05, momentum: 0.9, schedule: {type: cosine}}
loss: categorical_crossentropy
train: {epochs: 3, batch_size: 64, seed: 3, deterministic: true, backup_every_steps: 3,
        tensorboard: false, checkpoint_monitor: loss}
"""


def train(config: Path, run: Path, kill_after: float | None) -> bool:
    """One `cnnctl train`; SIGKILLed after `kill_after` seconds. Returns whether it ended."""
    proc = subprocess.Popen([sys.executable, "-m", "cnnctl", "train", str(config), "--run-dir",
                             str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        _, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return False
    if proc.returncode != 0:
        raise SystemExit(f"cnnctl train {config} --run-dir {run} failed "
                         f"({proc.returncode}): {err.strip().splitlines()[-1:]}")
    return True


def finished(run: Path) -> bool:
    try:
        return "epochs" in json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return False


def history(run: Path) -> list[dict]:
    with (run / "history.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in csv.DictReader(f)]


def metrics(run: Path) -> dict:
    data = json.loads((run / "metrics.json").read_text())
    data["history"].pop("epoch_seconds", None)
    data.pop("best_checkpoint", None)
    return data


def files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def differences(ours: Path, theirs: Path) -> list[str]:
    """What differs between two finished runs ([] when they are the same run)."""
    from cnnctl.backend import keras

    found = []
    if files(ours) != files(theirs):
        found.append(f"files: extra {sorted(files(ours) - files(theirs))}, "
                     f"missing {sorted(files(theirs) - files(ours))}")
    if history(ours) != history(theirs):
        found.append("history.csv differs")
    if metrics(ours) != metrics(theirs):
        found.append("metrics.json differs")
    best = [keras.saving.load_model(r / "checkpoints" / "best.keras", compile=False).get_weights()
            for r in (ours, theirs)]
    if any(not np.array_equal(x, y) for x, y in zip(*best)):
        found.append("best.keras weights differ")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/soak_kill.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="config to train (default: a small CNN on "
                        "the shipped Fashion-MNIST slice); it should set train.deterministic")
    parser.add_argument("--kills", type=int, default=20, help="kills per round (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="cnnctl-soak-") as scratch:
        work = Path(scratch)
        config = args.config
        if config is None:
            config = work / "soak.yaml"
            config.write_text(DEFAULT_CONFIG)
        started = time.monotonic()
        train(config, work / "straight", None)
        whole = time.monotonic() - started
        print(f"uninterrupted run: {whole:.1f} s")
        failed = 0
        for round_ in range(1, args.rounds + 1):
            run = work / f"killed-{round_}"
            commands = kills = 0
            while not finished(run):
                last = kills >= args.kills
                commands += 1
                if not train(config, run, None if last else rng.uniform(0.5, whole)):
                    kills += 1
            found = differences(run, work / "straight")
            failed += bool(found)
            print(f"round {round_}: {kills} kills, {commands} commands: "
                  + ("; ".join(found) if found else "equal to the uninterrupted run"))
        print(f"{args.rounds - failed} of {args.rounds} rounds equal to the uninterrupted run")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
