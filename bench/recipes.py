"""Train the shipped recipes from fresh processes and write their results table.

    python bench/recipes.py                          # every recipe whose data is here
    python bench/recipes.py --only fashion_mnist --seeds 3 --out BENCHMARKS.md --out README.md
    python bench/recipes.py --tiny                   # the smoke test's setting: seconds

Each recipe is a shipped config and the data it needs. Every seed trains in its own
`python -m cnnctl train` subprocess (its own run directory in a temporary folder), and the
table gives, per recipe: the data, the epochs, the test accuracy as cnnctl wrote it to the run's
metrics.json (mean and spread over the seeds, and each seed's), the wall time of the command,
the seconds per epoch after the first (which includes compilation), the machine and the cnnctl
commit, and the command that reproduces a row. A recipe whose data is not on this machine is a
row saying so, not a guess. The GPU column stays "not measured" unless figures from a GPU run
are given (`--gpu NAME=ACCURACY`).

--out FILE writes the section `<!-- bench:recipes:MACHINE -->` of that markdown file (replaced
when there, else added at the end of its results); give it twice for BENCHMARKS.md and README.md.
The rows of recipes this run did not train stay in the section, each with the date and commit
it was measured at; --rows-from FILE takes rows measured earlier (an --out file of this machine)
instead of training those recipes again.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import machine, process, report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NAME = "recipes"
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TINY_SETS = ["data.max_train_samples=256", "data.max_test_samples=128", "train.epochs=1"]
HEADERS = ["recipe", "config", "data", "epochs", "test accuracy (mean ± sd)", "per seed",
           "wall s (mean)", "s/epoch after the first", "GPU (JAX)", "measured", "command"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    config: str  # under configs/
    data: str  # what it trains on, in words
    needs: str  # "fashion_mnist" (the Keras files), "cifar10_jpg" (the JPEG copy), "none"
    sets: tuple[str, ...] = ()  # --set items it runs with ({cifar} is the extracted JPEG folder)
    seeds: int = 3  # default number of seeds


RECIPES = {
    "quickstart": Recipe("quickstart.yaml", "Fashion-MNIST slice shipped in cnnctl", "none"),
    "fashion_mnist": Recipe("fashion_mnist.yaml", "Fashion-MNIST (keras.datasets files)",
                            "fashion_mnist", seeds=1),
    "cifar10_folders": Recipe("cifar10_folders.yaml", "CIFAR-10 JPEG copy", "cifar10_jpg",
                              ("data.train_dir={cifar}/train", "data.test_dir={cifar}/test",
                               "train.epochs=3")),
    "mnist": Recipe("mnist.yaml", "MNIST (keras.datasets file)", "mnist", seeds=1),
    "fashion_mnist_best": Recipe("fashion_mnist_best.yaml", "Fashion-MNIST (keras.datasets files)",
                                 "fashion_mnist", seeds=1),
    "fashion_mnist_small": Recipe("fashion_mnist_small.yaml",
                                  "Fashion-MNIST (keras.datasets files)", "fashion_mnist", seeds=1),
    "mnist_best": Recipe("mnist_best.yaml", "MNIST (keras.datasets file)", "mnist", seeds=1),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/recipes.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(RECIPES),
                        help=f"comma-separated recipes (default: all: {', '.join(RECIPES)})")
    parser.add_argument("--seeds", type=int, help="seeds per recipe (default: the recipe's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="one more --set for every training (repeat for several)")
    parser.add_argument("--tiny", action="store_true",
                        help="1 seed, 1 epoch, 256 training and 128 test images: a smoke run")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder holding fashion-mnist/ and cifar10-jpg.tar.gz "
                             "(default: ../shared/data beside the repository)")
    parser.add_argument("--gpu", action="append", default=[], metavar="NAME=ACCURACY",
                        help="a GPU (JAX) figure measured elsewhere for recipe NAME")
    parser.add_argument("--out", type=Path, action="append", default=[],
                        help="markdown file to write the table into (repeat for several)")
    parser.add_argument("--work-dir", type=Path, help="where runs and logs go (default: a new "
                                                      "temporary folder, removed after)")
    parser.add_argument("--rows-from", type=Path, metavar="FILE",
                        help="take the rows of the recipes in --only from this markdown file "
                        "(written by an earlier --out on this machine) instead of training them")
    args = parser.parse_args(argv)
    args.names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.names if n not in RECIPES]
    if unknown:
        parser.error(f"--only: unknown recipe(s) {', '.join(unknown)}; "
                     f"choose from {', '.join(RECIPES)}")
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be at least 1")
    args.gpu_figures = {}
    for text in args.gpu:
        name, sep, value = text.partition("=")
        if not sep or name not in RECIPES:
            parser.error(f"--gpu {text!r}: give NAME=ACCURACY with NAME one of {', '.join(RECIPES)}")
        args.gpu_figures[name] = value
    return args


def prepare_data(recipe: Recipe, data_dir: Path, work: Path) -> tuple[dict, dict] | str:
    """({placeholder: path}, extra environment) for the recipe's data, or why it is missing."""
    if recipe.needs == "none":
        return {}, {}
    if recipe.needs == "fashion_mnist":
        source = data_dir / "fashion-mnist"
        missing = [f for f in FASHION_FILES if not (source / f).is_file()]
        if missing:
            return f"not measured: no {', '.join(missing)} in {source}"
        home = work / "keras_home"
        target = home / "datasets" / "fashion-mnist"
        target.mkdir(parents=True, exist_ok=True)
        for f in FASHION_FILES:
            if not (target / f).exists():
                (target / f).symlink_to((source / f).resolve())
        return {}, {"KERAS_HOME": str(home)}
    if recipe.needs == "cifar10_jpg":
        archive = data_dir / "cifar10-jpg.tar.gz"
        if not archive.is_file():
            return f"not measured: no {archive}"
        folder = work / "cifar10-jpg"
        if not folder.is_dir():
            with tarfile.open(archive) as tar:
                tar.extractall(work, filter="data")
        return {"cifar": str(folder)}, {}
    return (f"not measured: the {recipe.needs} files are not on this machine (not in "
            f"{data_dir}) and cannot be downloaded here")


def train_once(name: str, recipe: Recipe, seed: int, sets: list[str], env: dict,
               work: Path) -> dict:
    """One training from a fresh process: its command, exit, wall time and metrics.json."""
    run_dir = work / "runs" / f"{name}-seed{seed}"
    command = [sys.executable, "-m", "cnnctl", "train", f"configs/{recipe.config}",
               "--run-dir", str(run_dir), "--set", f"train.seed={seed}",
               "--set", "train.tensorboard=false"]
    for item in sets:
        command += ["--set", item]
    child = process.run(command, env=env, cwd=REPO, log=work / "logs" / f"{name}-seed{seed}")
    result = {"command": command, "wall": child.wall_seconds, "error": child.error}
    if child.error is None:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        seconds = metrics["history"]["epoch_seconds"]
        result.update(accuracy=metrics["test"]["accuracy"], epochs=metrics["epochs"],
                      later_epochs=seconds[1:] or seconds)
    else:
        process.show_failure(child, f"{name} (seed {seed})")
    return result


def shown_command(command: list[str], work: Path, placeholders: dict) -> str:
    """The command as a reader would type it: `cnnctl train ...`, without the run directory and
    with the temporary data folders named as their placeholders."""
    words = ["cnnctl", *command[3:]]
    i = words.index("--run-dir")
    del words[i:i + 2]
    text = shlex.join(words)
    for key, path in placeholders.items():
        text = text.replace(path, f"<{key}>")
    return text.replace(str(work), "<work>")


def row(name: str, recipe: Recipe, results: list[dict] | str, gpu: str | None,
        work: Path, placeholders: dict) -> list[str]:
    gpu = gpu or "not measured"
    if isinstance(results, str):
        return [name, f"configs/{recipe.config}", recipe.data, report.MISSING, results,
                report.MISSING, report.MISSING, report.MISSING, gpu, report.MISSING]
    good = [r for r in results if r["error"] is None]
    if not good:
        return [name, f"configs/{recipe.config}", recipe.data, report.MISSING,
                f"failed: {results[0]['error']}", report.MISSING, report.MISSING,
                report.MISSING, gpu, report.MISSING]
    accuracies = [r["accuracy"] for r in good]
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    per_epoch = statistics.mean(s for r in good for s in r["later_epochs"])
    failed = len(results) - len(good)
    return [name, f"configs/{recipe.config}", recipe.data, str(good[0]["epochs"]),
            f"{statistics.mean(accuracies):.4f} ± {spread:.4f} ({len(good)} seed"
            f"{'s' if len(good) > 1 else ''}{f', {failed} failed' if failed else ''})",
            ", ".join(f"{a:.4f}" for a in accuracies),
            f"{statistics.mean(r['wall'] for r in good):.1f}", f"{per_epoch:.2f}", gpu,
            f"`{shown_command(good[0]['command'], work, placeholders)}`"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    extra = list(args.set) + (TINY_SETS if args.tiny else [])
    with tempfile.TemporaryDirectory(prefix="cnnctl-recipes-") as scratch:
        work = args.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        rows, failures = [], 0
        info = machine.info()
        scale = "tiny" if args.tiny else "full"
        key = f"{NAME}:{machine.kind(info)}:{scale}"
        earlier = {cells[0]: cells for cells in kept_rows(args.rows_from, key)} \
            if args.rows_from else {}
        for name in args.names:
            recipe = RECIPES[name]
            if name in earlier:
                continue
            prepared = prepare_data(recipe, args.data_dir, work)
            if isinstance(prepared, str):
                process.say(f"{name}: {prepared}")
                rows.append(row(name, recipe, prepared, args.gpu_figures.get(name), work, {}))
                continue
            placeholders, env_extra = prepared
            env = {**os.environ, **env_extra}
            sets = [s.format(**placeholders) for s in recipe.sets] + extra
            seeds = 1 if args.tiny else (args.seeds or recipe.seeds)
            results = []
            for seed in range(1, seeds + 1):
                process.say(f"{name}: seed {seed} of {seeds}")
                results.append(train_once(name, recipe, seed, sets, env, work))
            failures += sum(r["error"] is not None for r in results)
            rows.append(row(name, recipe, results, args.gpu_figures.get(name), work,
                            placeholders))
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "unknown"
        measured = f"{datetime.date.today().isoformat()}, {commit}"
        for cells in rows:
            cells.insert(HEADERS.index("measured"), measured)
        rows = merged(rows, list(earlier.values()))

        def section(all_rows: list[list[str]]) -> str:
            return "\n\n".join([
                f"### Recipes on {machine.kind(info)} ({scale})",
                f"Last run {datetime.date.today().isoformat()} at commit {commit}: "
                f"`python bench/recipes.py {shlex.join(argv if argv is not None else sys.argv[1:])}`"
                f" (rows of recipes it did not run are kept, with the date and commit they were "
                f"measured at) on:\n\n{machine.markdown(info)}",
                report.table(HEADERS, all_rows),
            "Test accuracy: `metrics.json`'s `test.accuracy` of each run (with the config's "
            "test-time augmentation, if any); sd: the sample standard deviation over the seeds "
            "(0 for one seed). Wall s: the whole `cnnctl train` command (start-up, data, "
            "training, final evaluation). s/epoch: `history.epoch_seconds` after the first "
            "epoch, which includes compilation. The command leaves out `--run-dir`; "
            "`<cifar>` is the extracted JPEG copy."])

        print(section(rows))
        for path in args.out:
            report.update(path, key, section(merged(rows, kept_rows(path, key))))
    return 1 if failures else 0


def kept_rows(path: Path, key: str) -> list[list[str]]:
    """The table rows of section `key` already in the markdown file `path` (none if it has no
    such section), each with its `measured` cell (older tables name one commit above them)."""
    import re

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start = text.find(f"<!-- bench:{key} -->")
    if start < 0:
        return []
    block = text[start:text.find(report.SECTION_END, start)]
    found = re.search(r"Measured (\S+) at commit (\w+)", block)
    rows = []
    for line in block.splitlines():
        if not line.startswith("| ") or " | configs/" not in line:
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == len(HEADERS) - 1 and found:  # a table from before the measured column
            cells.insert(HEADERS.index("measured"), f"{found.group(1)}, {found.group(2)}")
        if len(cells) == len(HEADERS):
            rows.append(cells)
    return rows


def merged(new: list[list[str]], old: list[list[str]]) -> list[list[str]]:
    """`new` rows, and the `old` ones of recipes `new` has none of, in RECIPES order."""
    ran = {cells[0] for cells in new}
    rows = new + [cells for cells in old if cells[0] not in ran]
    order = list(RECIPES)
    return sorted(rows, key=lambda cells: order.index(cells[0]) if cells[0] in order else len(order))


if __name__ == "__main__":
    sys.exit(main())
