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
    rich_markup_mode=None,  # plain click help: no `<bool>` type column, lines wrapped at words
)

ConfigArg = Annotated[Path, typer.Argument(help="A cnnctl YAML config file.", show_default=False, metavar="CONFIG")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar='KEY=VALUE', help="Override a config value: path.to.key=value (repeatable).", show_default=False)]


class SetCommand(typer.core.TyperCommand):
    """A command with `--set`: `--set train.epochs 1` (a space for the `=`) is answered with how
    to write it instead of "unexpected extra argument"; other extra arguments are refused as
    before."""

    allow_extra_args = True  # seen here, with the command line they came from

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        given = list(args)
        rest = super().parse_args(ctx, args)
        if ctx.args:
            hint = _set_without_equals(given)
            if hint:
                print(hint, file=sys.stderr)
                raise typer.Exit(2)
            ctx.fail(f"Got unexpected extra argument(s) ({' '.join(ctx.args)})")
        return rest


def _set_without_equals(args: list[str]) -> str | None:
    """`--set KEY VALUE: write --set KEY=VALUE` for the first `--set KEY VALUE` in `args`."""
    for i, arg in enumerate(args):
        if arg == "--set":
            key, value = args[i + 1: i + 2], args[i + 2: i + 3]
        elif arg.startswith("--set="):
            key, value = [arg.removeprefix("--set=")], args[i + 1: i + 2]
        else:
            continue
        if key and value and "=" not in key[0] and not value[0].startswith("-"):
            return f"--set {key[0]} {value[0]}: write --set {key[0]}={value[0]}"
    return None


def _path_given(option: str):
    """The parser of a path option that refuses an empty value: Path("") is the current
    directory, so `--run-dir ""` (an unset shell variable) would write into it."""

    def parse(text) -> Path:
        if not str(text).strip():
            print(f"{option} is empty; give a path (an empty one would mean the current "
                  "directory)", file=sys.stderr)
            raise typer.Exit(2)
        return Path(text)

    return parse


def _refuse_together(**given: bool) -> None:
    """Exit 2 with one line where two contradictory options are both given (keyword: the
    options' names, `--json`, as `json=`)."""
    used = [f"--{name.replace('_', '-')}" for name, value in given.items() if value]
    if len(used) > 1:
        print(f"{' and '.join(used)} cannot be used together; choose one", file=sys.stderr)
        raise typer.Exit(2)


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


@app.command(cls=SetCommand)
@user_errors
def check(
    config: ConfigArg,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Validate a config and build its model without data: per-layer shapes, params, FLOPs."""
    from cnnctl.config import load as config_lib

    loaded = config_lib.load(config, set_)  # config errors come before the seconds Keras takes to import
    from cnnctl.model import summary

    info = summary.describe(loaded)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(summary.format_table(info))


@app.command(cls=SetCommand)
@user_errors
def train(
    config: ConfigArg,
    set_: SetOption = None,
    run_dir: Annotated[Optional[Path], typer.Option(
        "--run-dir", metavar='DIR', parser=_path_given("--run-dir"), help="Write the run here instead of runs/<config name>/<timestamp>/.")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        "--resume", metavar='RUN', parser=_path_given("--resume"), help="Continue this interrupted run from its newest backup.")] = None,
    new: Annotated[bool, typer.Option(
        "--new", help="Start a new run even if an unfinished run of the same config exists.")] = False,
    allow_data_change: Annotated[bool, typer.Option(
        "--allow-data-change", help="Resume even though the data changed since the backup: "
        "the backup's epoch starts over with the new data.")] = False,
    workers: Annotated[Optional[str], typer.Option(
        "--workers", metavar='HOST:PORT,...', help="train.distribute: multi_worker: every worker's host:port, "
        "comma-separated, the same list on every machine (sets TF_CONFIG).")] = None,
    worker_index: Annotated[Optional[int], typer.Option(
        "--worker-index", metavar='I', help="This machine's place in --workers (0: the chief, which writes the run).")] = None,
) -> None:
    """Train the model of a config; writes a run directory with checkpoints and results.

    An unfinished run of the same, unchanged config is resumed automatically, in run.dir or
    at --run-dir (see --new).
    """
    _refuse_together(resume=resume is not None, new=new)
    if resume is not None and run_dir is not None and Path(resume) != Path(run_dir):
        print(f"--resume {resume} and --run-dir {run_dir} cannot be used together: a resumed run "
              "stays in its folder; choose one", file=sys.stderr)
        raise typer.Exit(2)
    from cnnctl.config import load as config_lib
    from cnnctl import runs

    loaded = config_lib.load(config, set_)
    if workers is not None or worker_index is not None:
        _set_cluster(loaded, workers, worker_index)
    for held in {Path(p) for p in (run_dir, resume) if p is not None}:  # before seconds of imports
        _refuse_if_locked(held)
    from cnnctl.train import fit as train_lib  # TensorFlow: only once the config is known good
    restart = False
    if resume is None and not new:
        again = None if run_dir is None else runs.rerun(run_dir, loaded.config)
        resume = runs.find_unfinished(loaded) if run_dir is None else (
            run_dir if again == "resume" else None)
        restart = again == "restart"
        if resume is not None and run_dir is None:
            _refuse_if_locked(resume)
        if resume is not None:
            print(f"found an unfinished run of this config: {resume} (pass --new to start afresh)")
    result = train_lib.train(loaded, run_dir, resume=resume, restart=restart,
                             allow_data_change=allow_data_change)
    metrics = result["metrics"]
    split = "test" if "test" in metrics else "val"
    figures = metrics.get(split) or {}
    checkpoint = Path(metrics.get("best_checkpoint", "")).name
    acc = (f"{split} accuracy {figures['accuracy']:.4f} ({runs.CHECKPOINTS}/{checkpoint}), "
           if "accuracy" in figures else "")
    where = (f"run: {result['run_dir']}" if result["run_dir"] is not None else
             f"{result['task']} done (the chief wrote the run)")
    print(f"{acc}{result['epochs']} epoch(s) in {result['seconds']:.1f} s, {where}")
    if result["run_dir"] is not None:
        import shlex

        run = shlex.quote(str(result["run_dir"]))
        print(f"next: cnnctl eval {run}  |  cnnctl report {run}  |  cnnctl predict {run} IMAGE")


def _refuse_if_locked(run_dir: Path) -> None:
    """Refuse to train a run another live process trains (its lock read once)."""
    from cnnctl import runs
    from cnnctl.train import lock

    holder = lock.holder(run_dir)
    if holder is not None:
        raise lock.RunLocked(lock.refusal(run_dir, Path(run_dir) / runs.LOCK, holder))


def _set_cluster(loaded, workers: str | None, index: int | None) -> None:
    """--workers / --worker-index: the TF_CONFIG of this worker of a multi_worker run."""
    from cnnctl.train import distribute

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
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False, metavar="RUN")],
    split: Annotated[str, typer.Option(help="Which split of the run's data: train, val or test.", metavar="SPLIT")] = "test",
    data: Annotated[Optional[Path], typer.Option(
        "--data", metavar='DIR', parser=_path_given("--data"), help="Evaluate on this folder of class subfolders instead.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    tta: Annotated[Optional[str], typer.Option(
        "--tta", metavar='none|flip', help="Test-time augmentation: none or flip (default: the run's "
        "train.test_time_augmentation).")] = None,
) -> None:
    """Accuracy, loss, per-class precision/recall/F1 and confusion matrix of a checkpoint."""
    path = _run_of(path)
    from cnnctl.use import evaluate

    report, class_names, written = evaluate.run(path, split=split, data_dir=data, tta=tta)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(evaluate.format_report(report, class_names))
        print("written: " + ", ".join(str(p) for p in written.values()))


@app.command()
@user_errors
def predict(
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False, metavar="RUN")],
    images: Annotated[list[str], typer.Argument(help="Image files, folders or globs.", show_default=False, metavar="IMAGE...")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, metavar="K", help="Classes shown per image.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", metavar='FILE', parser=_path_given("--plot"), help="Draw each image beside its class probabilities into this PNG.")] = None,
) -> None:
    """Top-k classes of images, preprocessed exactly as in training."""
    _refuse_together(json=as_json, csv=as_csv)
    path = _run_of(path)
    from cnnctl.use import predict as predict_lib

    results = predict_lib.run(path, images, top_k=top_k, plot=plot)
    if as_json:
        print(json.dumps(results, indent=2))
    elif as_csv:
        print(predict_lib.to_csv(results), end="")
    else:
        print(predict_lib.format_table(results))
    if plot:
        print(f"written: {plot}", file=sys.stderr)
    if not any("top" in r for r in results):
        raise CnnctlError(f"none of the {len(results)} input(s) could be classified (see the "
                          "errors above); give image files, folders of images or globs")


@app.command()
@user_errors
def explain(
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False, metavar="RUN")],
    images: Annotated[list[str], typer.Argument(help="Image files, folders or globs.", show_default=False, metavar="IMAGE...")],
    method: Annotated[str, typer.Option("--method", metavar='METHOD', help="gradcam (any conv network) or cam "
                                        "(networks ending in global average pooling and one dense layer).")] = "gradcam",
    layer: Annotated[Optional[str], typer.Option(
        "--layer", metavar='NAME', help="The layer whose feature maps are weighed (default: the last one).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs.", metavar="DIR",
                                      parser=_path_given("--out"))] = Path("explain"),
) -> None:
    """Class-activation heat maps: each image, its heat map and the overlay, with the class."""
    path = _run_of(path)
    from cnnctl.use import explain as explain_lib

    for r in explain_lib.run(path, images, method=method, layer=layer, out=out):
        if "error" in r:
            print(f"skipped {r['path']}: {r['error']}", file=sys.stderr)
        else:
            print(f"{r['path']}: {r['class']} {r['probability']:.1%} -> {r['png']}")


@app.command("export")
@user_errors
def export_(
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False, metavar="RUN")],
    fmt: Annotated[str, typer.Option("--format", help="savedmodel, onnx or tflite.", metavar="FORMAT")],
    out: Annotated[Path, typer.Option("--out", help="The file (a folder for savedmodel).", metavar="PATH",
                                      parser=_path_given("--out"))],
    quantize: Annotated[Optional[str], typer.Option(
        "--quantize", metavar='float16|int8', help="tflite only: float16 or int8 (calibrated on the test images).")] = None,
    images: Annotated[int, typer.Option("--images", min=1, metavar="N", help="Test images of the parity check.")] = 64,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a previous export of the same format at --out (nothing else).")] = False,
) -> None:
    """Export with Keras's exporters (preprocessing included: raw 0-255 images in), then check
    the exported model against the Keras one with its own runtime."""
    path = _run_of(path)
    from cnnctl.use import export as export_lib

    written, check = export_lib.run(path, fmt, out, quantize=quantize, images=images, force=force)
    print(f"written: {written}")
    print(f"parity on {check.images} images: largest probability difference "
          f"{check.max_abs_diff:.3g} (allowed {check.tolerance[0]:g}), top-1 agreement "
          f"{check.top1_agreement:.1%} (needed {check.tolerance[1]:.0%})")


@app.command()
@user_errors
def visualize(
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False, metavar="RUN")],
    image: Annotated[Optional[str], typer.Option(
        "--image", metavar='IMAGE', help="Draw the feature maps of each conv layer for this image.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs.", metavar="DIR",
                                      parser=_path_given("--out"))] = Path("visualize"),
) -> None:
    """First-layer filters, feature maps of one image, the model diagram."""
    path = _run_of(path)
    from cnnctl.use import visualize as visualize_lib

    written, notes = visualize_lib.run(path, image, out)
    for file in written:
        print(f"written: {file}")
    for note in notes:
        print(note, file=sys.stderr)


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory, or a study folder "
                                            "(studies/<study>).", show_default=False, metavar="RUN")],
    out: Annotated[Optional[Path], typer.Option(
        "--out", metavar="FILE", parser=_path_given("--out"), help="The HTML file (default RUN/report.html).")] = None,
    limit: Annotated[Optional[int], typer.Option(
        "--limit", metavar="N", min=1, help="Use only the first N test images for the per-class "
        "table, confusion matrix and mistakes (default: the whole test split).")] = None,
) -> None:
    """One self-contained HTML page of a run (metrics, curves, confusion matrix, mistakes, maps)
    or of a study folder (best trial, search space, trials, plots)."""
    if (run_dir / "study.json").is_file():
        from cnnctl.tune import report as study_report

        print(f"written: {study_report.run(run_dir, out)}")
        return
    run_dir = _run_of(run_dir)
    from cnnctl.use import report as report_lib

    print(f"written: {report_lib.run(run_dir, out, limit=limit)}")


@app.command()
@user_errors
def serve(
    path: Annotated[Path, typer.Argument(help="A run directory or a .keras file.", show_default=False, metavar="RUN")],
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, metavar="PORT", help="Port to listen on (0: a free one).")] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, max=4096, metavar="N", help="Images gathered from concurrent requests into one model call (1: no batching).")] = 64,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0, max=10_000, metavar="MS", help="At most how long a batch waits for more images after its first (it closes sooner once none has come for half of it).")] = 5.0,
    top_k: Annotated[int, typer.Option("--top-k", min=1, metavar="K", help="Classes per image unless a request asks (?top_k=).")] = 5,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, metavar="MB", help="Largest request body accepted.")] = 20.0,
    max_images: Annotated[int, typer.Option("--max-images", min=1, max=100_000, metavar="N", help="Most images in one request.")] = 64,
    read_timeout_s: Annotated[float, typer.Option("--read-timeout-s", min=0.1, metavar="S", help="Time a client has to send a request's body.")] = 30.0,
) -> None:
    """Serve a trained run: an HTTP API (POST /predict, /explain; GET /metadata, /healthz,
    /docs) and a web page at / to try it on your own images."""
    path = _run_of(path)
    from cnnctl.serve import app as app_lib
    from cnnctl.serve import inference, server, uploads

    classifier = inference.open_classifier(path, max_batch)
    sock = server.bind(host, port)
    limits = uploads.Limits(int(max_upload_mb * 2**20), max_images, read_timeout_s)
    settings = app_lib.Settings(max_batch, max_wait_ms / 1000, top_k, limits)
    url = server.url_of(sock)
    names = classifier.names
    print(f"serving {path} ({len(names)} classes, {classifier.metadata()['parameters']:,} "
          f"parameters) at {url}/", flush=True)
    print(f"  page {url}/  |  POST {url}/predict  |  docs {url}/docs  |  Ctrl-C or SIGTERM "
          "stops", flush=True)
    stopped_by = server.serve(app_lib.create_app(classifier, settings), sock)
    print("stopped" + (f" by signal {stopped_by}" if stopped_by else "")
          + ": every request in flight was answered", file=sys.stderr)


def _run_of(path: Path) -> Path:
    """The run a command opens for PATH: a config's runs folder (runs/quickstart) stands for its
    newest finished run, which is named on stderr."""
    from cnnctl import runs

    chosen, picked = runs.resolve(path)
    if picked:
        print(f"using the newest finished run: {chosen}", file=sys.stderr)
    return chosen


@app.command("runs")
@user_errors
def runs_(
    folder: Annotated[Path, typer.Argument(
        help="A folder of runs, searched recursively (a run is a folder with a config.yaml).",
        metavar="DIR")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """The runs under DIR: date, model, epochs done/planned, test accuracy, state, size on disk."""
    from cnnctl import runs

    described = [runs.describe(run) for run in runs.find_runs(folder)]
    if as_json:
        print(json.dumps(described, indent=2))
    elif not described:
        print(f"no runs under {folder}")
    else:
        print(runs.format_table(described))


data_app = typer.Typer(help="Look at the data set of a config before training.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


@data_app.command("check", cls=SetCommand)
@user_errors
def data_check(
    config: ConfigArg,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Images per class and split, sizes and modes, unreadable files, duplicates across splits."""
    from cnnctl.config import load as config_lib

    loaded = config_lib.load(config, set_)
    from cnnctl.data import check as datacheck
    from cnnctl import messages

    report = datacheck.check(loaded, progress=messages.FileCheckProgress(sys.stderr))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(datacheck.format_report(report))


class TuneGroup(typer.core.TyperGroup):
    """`cnnctl tune CONFIG ...` runs a study; `cnnctl tune status STUDY` shows one: a first
    argument that is not a subcommand's name is the CONFIG of `run`."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)

    def format_usage(self, ctx, formatter):
        formatter.write_usage("cnnctl tune", "CONFIG [OPTIONS]  |  cnnctl tune status STUDY")


tune_app = typer.Typer(cls=TuneGroup, no_args_is_help=True, rich_markup_mode=None,
                       help="Hyperparameter search over a config's tune.space, with Optuna.")
app.add_typer(tune_app, name="tune")


@tune_app.command("run", cls=SetCommand)
@user_errors
def tune_run(
    config: ConfigArg,
    set_: SetOption = None,
    trials: Annotated[Optional[int], typer.Option(
        "--trials", min=1, metavar="N", help="Trials in the study, those done before included (default: tune.trials).")] = None,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", min=1, metavar="S", help="Start no new trial after S seconds (default: tune.timeout).")] = None,
    study: Annotated[Optional[str], typer.Option(
        "--study", metavar="NAME", help="The study's name (default: tune.study, else the config's file name).")] = None,
    storage: Annotated[Optional[str], typer.Option(
        "--storage", metavar="URL", help="Optuna storage shared by several machines, e.g. "
        "postgresql://user:pass@host/db (default: SQLite in the study folder).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, metavar="K", help="Trials trained side by side on this machine.")] = 1,
) -> None:
    """Search tune.space: each trial a run under the study folder, trained in its own process,
    pruned at epoch ends; killed and run again, the study continues where it stopped."""
    from cnnctl.config import load as config_lib

    loaded = config_lib.load(config, set_)
    from cnnctl.tune import space as space_lib
    from cnnctl.tune import study as study_lib
    from cnnctl.tune import workers

    plan = study_lib.plan(loaded, study=study, storage=storage, trials=trials, timeout=timeout)
    space_lib.check(loaded)
    budget = f"{plan.trials} trials" if plan.trials else "no trial limit"
    if plan.timeout:
        budget += f", new trials for {plan.timeout:g} s"
    print(f"study {plan.name} in {plan.folder}: {plan.tune.metric} ({plan.direction}), {budget}, "
          f"{jobs} at a time, sampler {plan.tune.sampler.name}, pruner {plan.tune.pruner.name}")
    found, ended = workers.search(plan, jobs=jobs)
    print(study_lib.format_table(found, plan.folder, plan.tune.metric))
    print(f"written: {plan.folder / study_lib.TRIALS_CSV}, {plan.folder / study_lib.BEST}, "
          f"{plan.folder / study_lib.PLOTS}/")
    print(f"next: cnnctl train {plan.folder / study_lib.BEST}  |  cnnctl report {plan.folder}")


@tune_app.command("status")
@user_errors
def tune_status(
    folder: Annotated[Path, typer.Argument(help="A study folder (studies/<study>).", show_default=False, metavar="STUDY")],
    storage: Annotated[Optional[str], typer.Option(
        "--storage", metavar="URL", help="The study's storage, where it is not the one in study.json.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trials as JSON.")] = False,
) -> None:
    """The trials of a study (state, value, parameters, epochs, duration, run) and the best;
    writes trials.csv, best.yaml and the plots again."""
    from cnnctl.tune import study as study_lib

    found, info = study_lib.load(folder, storage)
    if as_json:
        print(json.dumps(study_lib.rows(found, folder), indent=2))
    else:
        print(study_lib.format_table(found, folder, info.get("metric", "value")))
    study_lib.write_results(found, folder)


@app.command()
def schema() -> None:
    """Print the JSON Schema of config files (for editors: yaml-language-server)."""
    from cnnctl.config import schema as schema_lib

    print(json.dumps(schema_lib.json_schema(), indent=2))


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    from cnnctl import messages

    messages.to_terminal()  # the messages of the modules below, on this invocation's streams
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
    try:
        app(prog_name="cnnctl")
    except SystemExit as e:
        if isinstance(e.code, int) and e.code >= 128 and sys.argv[1:2] == ["train"]:
            # Interrupted by a signal, after the backup and the message: the interpreter's
            # teardown of TensorFlow would keep the user waiting (5 s after a full CIFAR-10
            # epoch was cut short, measured) for nothing; every file is written and closed.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(e.code)
        raise
