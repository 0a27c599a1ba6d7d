"""The `cnnctl` command line: parses arguments and hands each command to its stage module."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cnnctl.errors import CnnctlError

app = typer.Typer(
    help="Train convolutional image classifiers from a YAML config.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="A cnnctl YAML config file.", show_default=False)]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a config value: path.to.key=value (repeatable).", show_default=False)]


def user_errors(command):
    """Print a CnnctlError as clear lines on stderr and exit 2; bugs keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CnnctlError as e:
            print(f"{e}", file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
def check(
    config: ConfigArg,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Validate a config and build its model without data: per-layer shapes, params, FLOPs."""
    from cnnctl import config as config_lib

    loaded = config_lib.load(config, set_)  # config errors come before the seconds Keras takes to import
    from cnnctl import summary

    info = summary.describe(loaded)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(summary.format_table(info))


@app.command()
@user_errors
def train(
    config: ConfigArg,
    set_: SetOption = None,
    run_dir: Annotated[Optional[Path], typer.Option(
        "--run-dir", help="Write the run here instead of runs/<config name>/<timestamp>/.")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        "--resume", help="Continue this interrupted run from its newest backup.")] = None,
    new: Annotated[bool, typer.Option(
        "--new", help="Start a new run even if an unfinished run of the same config exists.")] = False,
    workers: Annotated[Optional[str], typer.Option(
        "--workers", help="train.distribute: multi_worker: every worker's host:port, "
        "comma-separated, the same list on every machine (sets TF_CONFIG).")] = None,
    worker_index: Annotated[Optional[int], typer.Option(
        "--worker-index", help="This machine's place in --workers (0: the chief, which writes the run).")] = None,
) -> None:
    """Train the model of a config; writes a run directory with checkpoints and results.

    An unfinished run of the same, unchanged config is resumed automatically, in run.dir or
    at --run-dir (see --new).
    """
    from cnnctl import config as config_lib
    from cnnctl import runs

    loaded = config_lib.load(config, set_)
    if workers is not None or worker_index is not None:
        _set_cluster(loaded, workers, worker_index)
    from cnnctl import train as train_lib  # TensorFlow: only once the config is known good
    if resume is None and not new:
        resume = runs.find_unfinished(loaded) if run_dir is None else (
            run_dir if runs.is_unfinished(run_dir, loaded.config) else None)
        if resume is not None:
            print(f"found an unfinished run of this config: {resume} (pass --new to start afresh)")
    result = train_lib.train(loaded, run_dir, resume=resume)
    test = result["metrics"].get("test") or result["metrics"].get("val") or {}
    acc = f"test accuracy {test['accuracy']:.4f}, " if "accuracy" in test else ""
    where = (f"run: {result['run_dir']}" if result["run_dir"] is not None else
             f"{result['task']} done (the chief wrote the run)")
    print(f"{acc}{result['epochs']} epoch(s) in {result['seconds']:.1f} s, {where}")


def _set_cluster(loaded, workers: str | None, index: int | None) -> None:
    """--workers / --worker-index: the TF_CONFIG of this worker of a multi_worker run."""
    from cnnctl import distribute

    if workers is None or index is None:
        given, missing = ("--workers", "--worker-index") if index is None else ("--worker-index", "--workers")
        raise CnnctlError(f"{given} needs {missing} too: --workers host1:port,host2:port "
                          "--worker-index I (0 on the chief)")
    if loaded.config.train.distribute != "multi_worker":
        raise CnnctlError(f"--workers: {loaded.file} trains with train.distribute: "
                          f"{loaded.config.train.distribute}; set train.distribute: multi_worker "
                          "(or --set train.distribute=multi_worker) to train on several machines")
    if os.environ.get("TF_CONFIG"):
        raise CnnctlError("--workers: TF_CONFIG is set too; give the cluster one way, either "
                          "--workers/--worker-index or TF_CONFIG")
    os.environ["TF_CONFIG"] = distribute.tf_config(workers, index)


@app.command("eval")
@user_errors
def eval_(
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False)],
    split: Annotated[str, typer.Option(help="Which split of the run's data: train, val or test.")] = "test",
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Evaluate on this folder of class subfolders instead.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    tta: Annotated[Optional[str], typer.Option(
        "--tta", help="Test-time augmentation: none or flip (default: the run's "
        "train.test_time_augmentation).")] = None,
) -> None:
    """Accuracy, loss, per-class precision/recall/F1 and confusion matrix of a checkpoint."""
    from cnnctl import evaluate

    report, class_names, written = evaluate.run(path, split=split, data_dir=data, tta=tta)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(evaluate.format_report(report, class_names))
        print("written: " + ", ".join(str(p) for p in written.values()))


@app.command()
@user_errors
def predict(
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False)],
    images: Annotated[list[str], typer.Argument(help="Image files, folders or globs.", show_default=False)],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes shown per image.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="Draw each image beside its class probabilities into this PNG.")] = None,
) -> None:
    """Top-k classes of images, preprocessed exactly as in training."""
    from cnnctl import predict as predict_lib

    results = predict_lib.run(path, images, top_k=top_k, plot=plot)
    if as_json:
        print(json.dumps(results, indent=2))
    elif as_csv:
        print(predict_lib.to_csv(results), end="")
    else:
        print(predict_lib.format_table(results))
    if plot:
        print(f"written: {plot}", file=sys.stderr)


@app.command()
@user_errors
def explain(
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False)],
    images: Annotated[list[str], typer.Argument(help="Image files, folders or globs.", show_default=False)],
    method: Annotated[str, typer.Option("--method", help="gradcam (any conv network) or cam "
                                        "(networks ending in global average pooling and one dense layer).")] = "gradcam",
    layer: Annotated[Optional[str], typer.Option(
        "--layer", help="The layer whose feature maps are weighed (default: the last one).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs.")] = Path("explain"),
) -> None:
    """Class-activation heat maps: each image, its heat map and the overlay, with the class."""
    from cnnctl import explain as explain_lib

    for r in explain_lib.run(path, images, method=method, layer=layer, out=out):
        if "error" in r:
            print(f"skipped {r['path']}: {r['error']}", file=sys.stderr)
        else:
            print(f"{r['path']}: {r['class']} {r['probability']:.1%} -> {r['png']}")


@app.command("export")
@user_errors
def export_(
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="savedmodel, onnx or tflite.")],
    out: Annotated[Path, typer.Option("--out", help="The file (a folder for savedmodel).")],
    quantize: Annotated[Optional[str], typer.Option(
        "--quantize", help="tflite only: float16 or int8 (calibrated on the test images).")] = None,
    images: Annotated[int, typer.Option("--images", min=1, help="Test images of the parity check.")] = 64,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a previous export of the same format at --out (nothing else).")] = False,
) -> None:
    """Export with Keras's exporters (preprocessing included: raw 0-255 images in), then check
    the exported model against the Keras one with its own runtime."""
    from cnnctl import export as export_lib

    written, check = export_lib.run(path, fmt, out, quantize=quantize, images=images, force=force)
    print(f"written: {written}")
    print(f"parity on {check.images} images: largest probability difference "
          f"{check.max_abs_diff:.3g} (allowed {check.tolerance[0]:g}), top-1 agreement "
          f"{check.top1_agreement:.1%} (needed {check.tolerance[1]:.0%})")


@app.command()
@user_errors
def visualize(
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False)],
    image: Annotated[Optional[str], typer.Option(
        "--image", help="Draw the feature maps of each conv layer for this image.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs.")] = Path("visualize"),
) -> None:
    """First-layer filters, feature maps of one image, the model diagram."""
    from cnnctl import visualize as visualize_lib

    written, notes = visualize_lib.run(path, image, out)
    for file in written:
        print(f"written: {file}")
    for note in notes:
        print(note, file=sys.stderr)


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="The HTML file (default RUN_DIR/report.html).")] = None,
) -> None:
    """One self-contained HTML page of a run: metrics, curves, confusion matrix, mistakes, maps."""
    from cnnctl import report as report_lib

    print(f"written: {report_lib.run(run_dir, out)}")


data_app = typer.Typer(help="Look at the data set of a config before training.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
@user_errors
def data_check(
    config: ConfigArg,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Images per class and split, sizes and modes, unreadable files, duplicates across splits."""
    from cnnctl import config as config_lib

    loaded = config_lib.load(config, set_)
    from cnnctl import datacheck

    report = datacheck.check(loaded)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(datacheck.format_report(report))


@app.command()
def schema() -> None:
    """Print the JSON Schema of config files (for editors: yaml-language-server)."""
    from cnnctl import config as config_lib

    print(json.dumps(config_lib.json_schema(), indent=2))


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        from cnnctl import __version__

        print(f"cnnctl {__version__}")
        raise typer.Exit(0)


if __name__ == "__main__":
    app()


# Commands that only build models or read files: they compute nothing a backend would speed up,
# so they run on Keras's NumPy backend, which starts in half the time of TensorFlow (3.8 s
# against 7.5 s for `check configs/resnet20_cifar10.yaml` on 2 cores). That backend imports JAX
# (its convolutions and FFTs are JAX's) and SciPy; JAX is an optional package, so without it
# these commands stay on the default backend, TensorFlow, which cnnctl depends on anyway.
_NO_TRAINING = ("check", "data")
_NUMPY_BACKEND_NEEDS = ("jax", "scipy")


def backend_for(argv: list[str], environ) -> str | None:
    """The Keras backend the executable sets for this command line, or None for Keras's choice
    (KERAS_BACKEND, else TensorFlow)."""
    if len(argv) < 2 or argv[1] not in _NO_TRAINING or "KERAS_BACKEND" in environ:
        return None
    if all(importlib.util.find_spec(name) is not None for name in _NUMPY_BACKEND_NEEDS):
        return "numpy"
    return None


def run() -> None:
    """The `cnnctl` executable."""
    backend = backend_for(sys.argv, os.environ)
    if backend is not None:
        os.environ["KERAS_BACKEND"] = backend
    app(prog_name="cnnctl")
