"""Run the benchmark suite and write its tables into BENCHMARKS.md.

    python bench/run.py            # Fashion-MNIST 60,000 images x 5 epochs; 50,000 CIFAR JPEGs
    python bench/run.py --small    # 10,000 images x 3 epochs; 5,000 JPEGs: minutes on 2 cores

Every contender runs as its own subprocess, one after another, so that its times and peak
memory are its own. A run replaces the sections of BENCHMARKS.md for the same benchmark, kind
of machine and scale, and leaves the rest of the file as it is. See BENCHMARKS.md for what each
figure means.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import folder_input, machine, mnist_cnn, process, report  # noqa: E402
from bench.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = {module.NAME: module for module in (mnist_cnn, folder_input)}
BACKENDS = ("tensorflow", "jax", "torch")
# scale: (epochs, mnist_cnn training images, folder_input JPEGs per class, mnist_cnn training
# accuracy target); None: all
SCALES = {"full": (5, None, None, 0.85), "small": (3, 10_000, 500, 0.8)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true",
                        help="10,000 training images x 3 epochs and 500 JPEGs per class")
    parser.add_argument("--only", type=_choices(BENCHMARKS), default=",".join(BENCHMARKS),
                        help=f"comma-separated benchmarks to run (default: {','.join(BENCHMARKS)})")
    parser.add_argument("--backends", type=_choices(BACKENDS), default=",".join(BACKENDS),
                        help="comma-separated Keras backends for plain Keras and cnnctl; "
                             "torch also runs the hand-written PyTorch loop (default: all three)")
    parser.add_argument("--epochs", type=int, help="mnist_cnn epochs, at least 2 (the first is "
                                                   "warm-up); default 5, --small 3")
    parser.add_argument("--batch-size", type=int, default=64, help="default 64")
    parser.add_argument("--train-samples", type=int,
                        help="mnist_cnn: the first N training images; default all, --small 10000")
    parser.add_argument("--images-per-class", type=int,
                        help="folder_input: JPEGs per class; default all 5000, --small 500")
    parser.add_argument("--target", type=float,
                        help="mnist_cnn: training accuracy for the time-to-target column; "
                             "default 0.85, --small 0.8")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder holding fashion-mnist/ and cifar10-jpg.tar.gz "
                             "(default: ../shared/data beside the repository)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md",
                        help="markdown file to write the results into (default: BENCHMARKS.md "
                             "of the repository)")
    parser.add_argument("--machine", help="label of this kind of machine in the results; "
                                          "default from the GPU or CPU, e.g. cpu-amd-epyc-2c")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is warm-up and not timed")
    for name in ("batch_size", "train_samples", "images_per_class"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    defaults = SCALES["small" if args.small else "full"]
    for name, default in zip(("epochs", "train_samples", "images_per_class", "target"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def _choices(allowed):
    """An argparse type: a comma-separated list of names from `allowed`, as a tuple."""
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
        return names

    return parse


def section(name: str, kind: str, scale: str, info: dict, body: str, argv: list[str]) -> str:
    """The markdown of one benchmark's results on this machine."""
    command = shlex.join(["python", "bench/run.py", *argv])
    today = datetime.date.today().isoformat()
    return (f"### {name} on {kind} ({scale})\n\n"
            f"Measured {today} with `{command}` on:\n\n{machine.markdown(info)}\n\n{body}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.data_dir.is_dir():
        missing = [f"{args.data_dir} not found"]
    else:
        missing = [problem for name in args.only
                   if (problem := BENCHMARKS[name].missing_data(args.data_dir))]
    if missing:
        print(f"error: benchmark data missing: {'; '.join(missing)}. Pass --data-dir DIR, the "
              "folder holding fashion-mnist/ (the four IDX .gz files keras.datasets downloads) "
              "and cifar10-jpg.tar.gz", file=sys.stderr)
        return 2
    info = machine.info()
    kind = args.machine or machine.kind(info)
    scale = "small" if args.small else "full"
    with tempfile.TemporaryDirectory(prefix="cnnctl-bench-") as work:
        settings = Settings(scale=scale, backends=args.backends, epochs=args.epochs,
                            batch_size=args.batch_size, train_samples=args.train_samples,
                            images_per_class=args.images_per_class, target=args.target,
                            data_dir=args.data_dir.resolve(), work=Path(work),
                            python=sys.executable)
        for name in args.only:
            body = BENCHMARKS[name].run(settings)
            report.update(args.out, f"{name}:{kind}:{scale}",
                          section(name, kind, scale, info, body, argv))
            process.say(f"{name}: results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
