"""A study: its folder, its Optuna storage, sampler and pruner, and what it writes about its
trials (trials.csv, best.yaml, plots)."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import importlib.util
import io
import json
import logging
import math
import shutil
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna

from cnnctl import outputs, runs
from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.errors import CnnctlError
from cnnctl.tune import space as space_lib

STUDY_DB = "study.db"
STUDY_FILE = "study.json"  # the study's name, storage and config: what `tune status` opens
TRIALS = "trials"
LOCKS = ".locks"
BEST = "best.yaml"
TRIALS_CSV = "trials.csv"
PLOTS = "plots"
REPORT = runs.REPORT
RUN_ATTR, OVERRIDES_ATTR, HOST_ATTR, ERROR_ATTR, PRUNED_ATTR, EPOCHS_ATTR, SKIPPED_ATTR = (
    "run_dir", "overrides", "host", "error", "pruned_at_epoch", "epochs", "skipped")
OPENINGS_ATTR = "cnnctl_openings"  # how many commands have opened the study
CONFIG_ATTR = "cnnctl_config"  # the searched config (tune.trials and tune.timeout aside)

optuna.logging.set_verbosity(logging.ERROR)  # cnnctl says what happens to each trial
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclasses.dataclass
class Plan:
    """What one `cnnctl tune` command searches, and where."""

    loaded: config_lib.LoadedConfig
    name: str
    folder: Path
    storage_url: str
    direction: str
    trials: int | None
    timeout: float | None

    @property
    def tune(self) -> schema_lib.TuneConfig:
        return self.loaded.config.tune

    def trial_dir(self, number: int) -> Path:
        return self.folder / TRIALS / f"{number:04d}"

    def trial_log(self, number: int) -> Path:
        return self.folder / TRIALS / f"{number:04d}.log"


def plan(loaded: config_lib.LoadedConfig, *, study: str | None = None, storage: str | None = None,
         trials: int | None = None, timeout: float | None = None) -> Plan:
    """The plan of `cnnctl tune CONFIG`: its tune section, with the command's options over it.

    Raises:
        CnnctlError: the config has no tune section, or an option is out of range.
    """
    tune = loaded.config.tune
    if tune is None:
        raise CnnctlError(f"{loaded.file}: no `tune:` section; say what to search, e.g.\n"
                          "tune:\n  metric: val_accuracy\n  trials: 20\n  space:\n"
                          "    optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-1]}")
    name = study or tune.study or Path(loaded.file).stem
    if not all(c.isalnum() or c in "_.-" for c in name) or name.startswith("."):
        raise CnnctlError(f"--study {name!r}: use letters, digits, '_', '.' and '-' (it names a folder)")
    folder = Path(tune.dir) / name
    direction = tune.direction or ("maximize" if runs.monitor_mode(tune.metric) == "max" else "minimize")
    if trials is None and timeout is None:
        trials, timeout = tune.trials, tune.timeout
    if tune.sampler.name == "grid":
        size = math.prod(len(v) for v in space_lib.grid(tune.space).values())
        trials = size if trials is None else min(trials, size)
    url = storage or f"sqlite:///{(folder / STUDY_DB).absolute()}"
    return Plan(loaded, name, folder, url, direction, trials, timeout)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's storage at `url`: SQLite (a file, no server), PostgreSQL or MySQL.

    Raises:
        CnnctlError: its driver is not installed, or the database cannot be reached.
    """
    given = url  # what the messages show
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is not None:
        # the driver pip installs today (cnnctl[postgres]); SQLAlchemy's default is psycopg2
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        # several processes write one file: wait for the lock rather than fail at once
        engine = {"connect_args": {"timeout": 120}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except ImportError as e:
        module = getattr(e, "name", None) or str(e)
        raise CnnctlError(f"--storage {_shown(given)}: the database driver {module} is not "
                          "installed; for PostgreSQL: pip install 'psycopg[binary]', for "
                          "MySQL: pip install pymysql and write mysql+pymysql://...") from None
    except Exception as e:  # SQLAlchemy's errors: a server that is down, a bad password, a bad URL
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CnnctlError(f"--storage {_shown(given)}: cannot open the study's database ({reason}); "
                          "check the URL, that the server runs and that the user may connect") from None


def _shown(url: str) -> str:
    """A storage URL without its password."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':')[0]}:***@{tail}"


def sampler(tune: schema_lib.TuneConfig, loaded: config_lib.LoadedConfig | None = None,
            seed_offset: int = 0):
    """The Optuna sampler of tune.sampler (its seed plus `seed_offset`).

    Raises:
        ConfigError / CnnctlError: options the sampler does not take, or cmaes without its package.
    """
    spec = tune.sampler
    kwargs = dict(spec.options)
    if spec.seed is not None:
        kwargs["seed"] = (spec.seed + seed_offset) % (schema_lib.MAX_SEED + 1)
    make = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "cmaes": optuna.samplers.CmaEsSampler, "qmc": optuna.samplers.QMCSampler}
    try:
        if spec.name == "grid":
            return WholeGrid(space_lib.grid(tune.space), **kwargs)
        return make[spec.name](**kwargs)
    except TypeError as e:
        raise _option_error(loaded, "sampler", spec.name, e) from None


class WholeGrid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, without its call of `study.stop()` once every point is taken
    (which only an `optimize` loop may receive): the trial budget of `cnnctl tune` is the grid's
    size already."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def pruner(tune: schema_lib.TuneConfig, loaded: config_lib.LoadedConfig | None = None):
    """The Optuna pruner of tune.pruner."""
    spec = tune.pruner
    make = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
            "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
            "hyperband": optuna.pruners.HyperbandPruner, "none": optuna.pruners.NopPruner}
    try:
        return make[spec.name](**spec.options)
    except (TypeError, ValueError) as e:
        raise _option_error(loaded, "pruner", spec.name, e) from None


def _option_error(loaded, section: str, name: str, e: Exception) -> CnnctlError:
    message = f"{name} does not take these options ({e}); see Optuna's {name} documentation"
    if loaded is None:
        return CnnctlError(f"tune.{section}.options: {message}")
    return loaded.error_at(f"tune.{section}.options", message)


def searched_config(loaded: config_lib.LoadedConfig) -> dict:
    """The config a study searches, as stored with it: what must not change between the
    commands that work on one study (the trial budget and timeout may)."""
    dump = loaded.config.model_dump(mode="json")
    dump["tune"].pop("trials")
    dump["tune"].pop("timeout")
    return dump


def open_study(study_plan: Plan) -> optuna.Study:
    """Create the study, or load it to continue it, refusing one of another config.

    Raises:
        CnnctlError: the storage cannot be opened, or the study searches another config.
    """
    p = study_plan
    storage = open_storage(p.storage_url)
    made = sampler(p.tune, p.loaded)  # its options are checked before the study is made
    study = optuna.create_study(study_name=p.name, storage=storage, direction=p.direction,
                                sampler=made, pruner=pruner(p.tune, p.loaded), load_if_exists=True)
    openings = study.user_attrs.get(OPENINGS_ATTR, 0)
    study.set_user_attr(OPENINGS_ATTR, openings + 1)
    if p.tune.sampler.seed is not None and openings:
        # a seeded sampler made again would draw its first trials again: each command that
        # continues the study (or works on it beside another) draws from its own stream
        study = optuna.load_study(study_name=p.name, storage=storage, pruner=pruner(p.tune, p.loaded),
                                  sampler=sampler(p.tune, p.loaded, seed_offset=openings))
    searched = searched_config(p.loaded)
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        study.set_user_attr(CONFIG_ATTR, searched)
    elif stored != searched:
        changed = config_lib.differences(stored, searched)
        raise CnnctlError(
            f"study {p.name!r} ({p.folder}) searches another config: {'; '.join(changed[:4])}"
            f"{'; ...' if len(changed) > 4 else ''}; run it with its own config (or --set) to "
            "continue it, or give --study a new name")
    if study.direction.name.lower() != p.direction:
        raise CnnctlError(f"study {p.name!r} {study.direction.name.lower()}s its metric; "
                          f"tune.direction: {p.direction} needs a new --study name")
    return study


def write_study_file(study_plan: Plan) -> None:
    """study.json: what `cnnctl tune status` needs to open the study again."""
    runs.write_json(study_plan.folder / STUDY_FILE, {
        "study": study_plan.name, "storage": study_plan.storage_url,
        "config": str(Path(study_plan.loaded.file).absolute()),
        "overrides": study_plan.loaded.overrides, "metric": study_plan.tune.metric,
        "direction": study_plan.direction})


def read_study_file(folder: Path) -> dict:
    """The study.json of a study folder.

    Raises:
        CnnctlError: FOLDER is not a study folder.
    """
    path = Path(folder) / STUDY_FILE
    if not path.is_file():
        hint = (f"; the study {Path(folder).name!r} may be in studies/: cnnctl tune status "
                f"studies/{Path(folder).name}" if not Path(folder).exists() else "")
        raise CnnctlError(f"{folder}: not a study folder (no {STUDY_FILE}); give the folder "
                          f"`cnnctl tune` wrote, e.g. studies/<study>{hint}")
    try:
        info = json.loads(path.read_text())
        info["study"], info["storage"]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CnnctlError(f"{path}: damaged ({e}); `cnnctl tune CONFIG` writes it again") from None
    return info


def load(folder: Path, storage: str | None = None) -> tuple[optuna.Study, dict]:
    """The study of a study folder, and its study.json."""
    info = read_study_file(folder)
    url = storage or info["storage"]
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        # the folder was moved: its database is beside study.json
        url = f"sqlite:///{(Path(folder) / STUDY_DB).absolute()}"
    try:
        study = optuna.load_study(study_name=info["study"], storage=open_storage(url))
    except KeyError:
        raise CnnctlError(f"{folder}: the storage {_shown(url)} has no study {info['study']!r}") from None
    return study, info


def host() -> str:
    return socket.gethostname()


# ---------------------------------------------------------------------------------- results
def state_of(trial: optuna.trial.FrozenTrial) -> str:
    """A trial's state in words: complete, pruned at epoch N, failed: why, running, ..."""
    attrs = trial.user_attrs
    state = trial.state
    if state == optuna.trial.TrialState.PRUNED:
        return f"pruned at epoch {attrs[PRUNED_ATTR]}" if PRUNED_ATTR in attrs else "pruned"
    if state == optuna.trial.TrialState.FAIL:
        if SKIPPED_ATTR in attrs:
            return f"skipped: {attrs[SKIPPED_ATTR]}"
        return f"failed: {attrs.get(ERROR_ATTR, 'no reason recorded')}"
    return state.name.lower()


def counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials of the study, less those skipped over the budget (never trained)."""
    return [t for t in trials if SKIPPED_ATTR not in t.user_attrs]


def rows(study: optuna.Study, folder: Path) -> list[dict]:
    """One row per trial: number, state, value, params, seconds, epochs, run dir."""
    out = []
    for t in counted(study.get_trials(deepcopy=False)):
        seconds = ((t.datetime_complete or datetime.datetime.now()) - t.datetime_start).total_seconds() \
            if t.datetime_start else None
        out.append({"number": t.number, "state": state_of(t), "value": t.value,
                    "params": dict(t.params), "seconds": seconds,
                    "epochs": t.user_attrs.get(EPOCHS_ATTR),
                    "run_dir": str(Path(folder) / t.user_attrs[RUN_ATTR]) if RUN_ATTR in t.user_attrs else None})
    return out


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.value is not None and not math.isnan(t.value)]
    if not done:
        return None
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(done, key=lambda t: t.value)


def _value(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _param(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_table(study: optuna.Study, folder: Path, metric: str) -> str:
    """The trials table and the best trial, as `cnnctl tune status` prints them."""
    table = rows(study, folder)
    if not table:
        return f"study {study.study_name}: no trials yet"
    params = sorted({k for r in table for k in r["params"]})
    header = ["trial", "state", metric, *params, "epochs", "seconds", "run"]
    lines = [header]
    for r in table:
        lines.append([str(r["number"]), r["state"], _value(r["value"]),
                      *(_param(r["params"][k]) if k in r["params"] else "" for k in params),
                      "" if r["epochs"] is None else str(r["epochs"]),
                      "" if r["seconds"] is None else f"{r['seconds']:.0f}", r["run_dir"] or ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    best = best_trial(study)
    states = {}
    for r in table:
        word = r["state"].split(":")[0].split(" at ")[0]
        states[word] = states.get(word, 0) + 1
    text += "\n" + ", ".join(f"{n} {s}" for s, n in states.items())
    if best is None:
        return text + "\nbest: none yet (no trial is complete)"
    chosen = ", ".join(f"{k}={_param(v)}" for k, v in best.params.items())
    return text + f"\nbest: trial {best.number}, {metric} {best.value:.4f}: {chosen}"


def write_results(study: optuna.Study, folder: Path, *, plots: bool = True) -> list[Path]:
    """trials.csv, best.yaml (the best trial's config, ready for `cnnctl train`) and, with
    `plots`, plots/*.png. Returns the files written."""
    folder = Path(folder)
    table = rows(study, folder)
    params = sorted({k for r in table for k in r["params"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", *params, "epochs", "seconds", "run_dir"])
    for r in table:
        writer.writerow([r["number"], r["state"], "" if r["value"] is None else r["value"],
                         *(r["params"].get(k, "") for k in params),
                         "" if r["epochs"] is None else r["epochs"],
                         "" if r["seconds"] is None else round(r["seconds"], 1), r["run_dir"] or ""])
    written = [outputs.write_text(folder / TRIALS_CSV, buffer.getvalue())]
    best = best_trial(study)
    if best is not None and RUN_ATTR in best.user_attrs:
        source = folder / best.user_attrs[RUN_ATTR] / runs.CONFIG
        if source.is_file():
            head = (f"# the best trial of study {study.study_name}: trial {best.number}, "
                    f"{study.user_attrs.get(CONFIG_ATTR, {}).get('tune', {}).get('metric', 'value')} "
                    f"{best.value:.4f} ({source.parent})\n"
                    f"#   cnnctl train {folder / BEST}\n")
            written.append(outputs.write_text(folder / BEST, head + source.read_text()))
    if plots:
        written += write_plots(study, folder / PLOTS)
    return written


def write_plots(study: optuna.Study, out: Path) -> list[Path]:
    """Optuna's matplotlib plots of the study: optimisation history, parameter importances,
    parallel coordinates and slices (each where the study has enough trials for it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    wanted = [("history", vis.plot_optimization_history, 1)]
    if len(done) >= 2:
        wanted += [("importances", vis.plot_param_importances, 2),
                   ("parallel_coordinate", vis.plot_parallel_coordinate, 2),
                   ("slice", vis.plot_slice, 2)]
    written = []
    for name, draw, _ in wanted:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                drawn = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importances of parameters that never varied
        axes = drawn.flat[0] if hasattr(drawn, "flat") else drawn
        fig = axes.figure
        fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 4.5))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # colour bars do not take part in tight_layout
            fig.tight_layout()
        path = out / f"{name}.png"
        outputs.write_file(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=90))
        plt.close(fig)
        written.append(path)
    return written


def remove_partial_run(run_dir: Path) -> bool:
    """Clear a trial's run that stopped before its first backup, so that the trial starts again
    in the same place: it holds nothing to resume from (cnnctl wrote every file in it). One with
    a checkpoint is kept (False)."""
    if any((run_dir / runs.CHECKPOINTS).glob("*.keras")):
        return False
    shutil.rmtree(run_dir)
    return True


def check_trials_folder(study: optuna.Study, folder: Path) -> None:
    """A new study does not start in a folder whose trials/ holds runs (of a study whose
    database is gone): its trials would land on them.

    Raises:
        CnnctlError: trials/ is not empty and the study has no trials.
    """
    trials = Path(folder) / TRIALS
    if not study.get_trials(deepcopy=False) and trials.is_dir() and any(trials.iterdir()):
        raise CnnctlError(f"{trials}: holds runs, but the study {study.study_name!r} has no trials "
                          "(was its study.db removed?); nothing was changed there: give --study "
                          "another name or move that folder away")
