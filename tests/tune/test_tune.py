"""`cnnctl tune`: the search space and its located errors, a study's files, pruning, and a
study killed with SIGKILL and continued by the same command."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from cnnctl.config import load as config_lib
from cnnctl.tune import space as space_lib
from cnnctl.tune import study as study_lib

SPACE_LINE = 19  # the first entry of tune.space in tune_yaml


def with_space(tune_yaml: str, entries: list[str], **tune) -> str:
    """tune_yaml with its space replaced by `entries` (one `path: {...}` line each) and the
    tune keys in `tune` set: those it has in place, new ones first in the section (each moves
    the space a line down)."""
    head = tune_yaml[:tune_yaml.index("  space:\n")]
    for key, value in tune.items():
        if f"  {key}: " in head:
            start = head.index(f"  {key}: ")
            head = head[:start] + f"  {key}: {value}" + head[head.index("\n", start):]
        else:
            head = head.replace("tune:\n", f"tune:\n  {key}: {value}\n", 1)
    return head + "  space:\n" + "".join(f"    {e}\n" for e in entries)


def test_every_kind_of_distribution_draws_values_the_config_takes(write_yaml, tune_yaml):
    text = tune_yaml.replace("model:\n", "model:\n  blocks:\n"
                             "    plain: {layers: [{type: conv2d, filters: 4, kernel_size: 3}]}\n"
                             "    wide: {layers: [{type: conv2d, filters: 12, kernel_size: 3}]}\n", 1)
    text = text.replace("    - {type: flatten}", "    - {block: plain}\n    - {type: flatten}")
    text = with_space(text, [
        "optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-1]}",
        "model.layers[4].rate: {uniform: [0.1, 0.5], step: 0.1}",
        "model.layers[0].filters: {int_uniform: [4, 16], step: 4}",
        "model.layers[5].units: {log_int_uniform: [10, 40]}",
        "model.layers[0].kernel_size: {choice: [[3, 3], [5, 5]]}",
        "model.layers[2].block: {choice: [plain, wide]}",
        "train.batch_size: {choice: [32, 64]}"])
    text = text.replace("{type: dense, units: 10, activation: softmax}",
                        "{type: dense, units: 20, activation: relu}\n    - {type: dense, units: 10, activation: softmax}")
    loaded = config_lib.load(write_yaml(text))
    space_lib.check(loaded)  # every bound and choice is one the schema takes
    space = loaded.config.tune.space
    kinds = {p: type(space_lib.distribution(d)).__name__ for p, d in space.items()}
    assert kinds == {"optimizer.learning_rate": "FloatDistribution", "model.layers[4].rate": "FloatDistribution",
                     "model.layers[0].filters": "IntDistribution", "model.layers[5].units": "IntDistribution",
                     "model.layers[0].kernel_size": "CategoricalDistribution",
                     "model.layers[2].block": "CategoricalDistribution",
                     "train.batch_size": "CategoricalDistribution"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {p: set() for p in space}
    for _ in range(12):
        trial = study.ask({p: space_lib.distribution(d) for p, d in space.items()})
        config = config_lib.load(loaded.file, space_lib.overrides(space, trial.params)).config
        model = config.model
        drawn = {"optimizer.learning_rate": config.optimizer.learning_rate,
                 "model.layers[4].rate": model.layers[4].rate, "model.layers[0].filters": model.layers[0].filters,
                 "model.layers[5].units": model.layers[5].units,
                 "model.layers[0].kernel_size": tuple(model.layers[0].kernel_size),
                 "model.layers[2].block": model.layers[2].block, "train.batch_size": config.train.batch_size}
        assert 1e-4 <= drawn["optimizer.learning_rate"] <= 1e-1
        assert round(drawn["model.layers[4].rate"], 6) in (0.1, 0.2, 0.3, 0.4, 0.5)
        assert drawn["model.layers[0].filters"] in (4, 8, 12, 16)
        assert 10 <= drawn["model.layers[5].units"] <= 40
        for path, value in drawn.items():
            seen[path].add(round(value, 6) if isinstance(value, float) else value)
        study.tell(trial, 0.0)
    assert seen["model.layers[0].kernel_size"] == {(3, 3), (5, 5)}
    assert seen["model.layers[2].block"] == {"plain", "wide"}
    assert seen["train.batch_size"] == {32, 64}
    assert len(seen["optimizer.learning_rate"]) == 12


def test_bad_paths_and_out_of_range_bounds_are_located(write_yaml, tune_yaml, cnnctl):
    text = with_space(tune_yaml, [
        "optimizer.learnin_rate: {log_uniform: [1.0e-4, 1.0e-2]}",
        "model.layers[3].rate: {uniform: [0.1, 1.5]}",
        "model.layers[0].filters: {uniform: [4, 16]}",
        "model.layers[9].rate: {choice: [0.1]}",
        "train.batch_size: {choice: [32, -1]}",
        "optimizer.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}"])
    config = write_yaml(text)
    result = cnnctl("tune", config)
    assert result.exit_code == 2
    f, n = config, SPACE_LINE
    assert result.stderr.splitlines() == [
        f"{f}:{n}: tune.space.optimizer.learnin_rate: unknown key 'learnin_rate' (did you mean "
        "'learning_rate'?); allowed keys: clipnorm, clipvalue, ema_momentum, learning_rate, momentum, "
        "name, nesterov, reference_batch_size, schedule, weight_decay (trying its low value, 0.0001)",
        f"{f}:{n + 1}: tune.space.model.layers[3].rate: must be < 1.0 (got 1.5) (trying its high value, 1.5)",
        f"{f}:{n + 2}: tune.space.model.layers[0].filters: must be a whole number (got 4.0); draw whole "
        "numbers with int_uniform: [low, high] (trying its low value, 4.0)",
        f"{f}:{n + 3}: tune.space.model.layers[9].rate: model.layers[9] is not in the config "
        "(model.layers has 5 item(s)) (trying its choice, 0.1)",
        f"{f}:{n + 4}: tune.space.train.batch_size: must be > 0 (got -1) (trying its choice 2, -1)"]
    assert not (config.parent / "studies").exists()  # nothing is made before the space is good


def test_schema_errors_of_the_tune_section(config_errors, tune_yaml):
    text = with_space(tune_yaml, ["optimizer.learning_rate: {log_uniform: [0, 1.0e-2]}",
                                  "train.epochs: {int_uniform: [3, 2]}",
                                  "train.seed: {uniform: [1, 2], choice: [3]}"])
    assert config_errors(with_space(tune_yaml, ["train.seed: {choice: [1, 2]}"], metric="test_accuracy")) == [
        "15: tune.metric: test_accuracy: choosing hyperparameters on the test split makes its figures "
        "optimistic; tune on a val_* metric (set data.validation_split if the data has no validation split)"]
    assert config_errors(with_space(tune_yaml, ["train.seed: {choice: [1, 2]}"], trials="null")) == [
        "15: tune.trials: give trials, timeout or both: with neither the search never ends"]
    assert config_errors(text) == [
        f"{SPACE_LINE}: tune.space.optimizer.learning_rate.log_uniform[0]: must be > 0.0 (got 0)",
        f"{SPACE_LINE + 1}: tune.space.train.epochs.int_uniform: low (3) must be below high (2)",
        f"{SPACE_LINE + 2}: tune.space.train.seed: give exactly one of uniform, log_uniform, int_uniform, "
        "log_int_uniform, choice (got uniform, choice), e.g. {log_uniform: [1.0e-4, 1.0e-1]}"]


def test_a_config_without_tune_section_is_refused(write_yaml, tune_yaml, cnnctl):
    config = write_yaml(tune_yaml[:tune_yaml.index("tune:")])
    result = cnnctl("tune", config)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"{config}: no `tune:` section; say what to search, e.g."


@pytest.mark.slow
def test_a_study_writes_its_runs_table_best_config_and_plots(small_study, cnnctl):
    rows = list(csv.DictReader((small_study / study_lib.TRIALS_CSV).open()))
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {r["state"] for r in rows} == {"complete"}
    for row in rows:
        run = Path(row["run_dir"]) if Path(row["run_dir"]).is_absolute() else small_study.parent.parent / row["run_dir"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["tune"]["trial"] == int(row["number"])
        assert metrics["tune"]["value"] == pytest.approx(float(row["value"]))
        assert metrics["tune"]["value"] == pytest.approx(metrics["val"]["accuracy"])  # best.keras's
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["optimizer"]["learning_rate"] == pytest.approx(float(row["optimizer.learning_rate"]))
        assert config["model"]["layers"][3]["rate"] == pytest.approx(float(row["model.layers[3].rate"]))
        assert config["train"]["batch_size"] == int(row["train.batch_size"])
        assert config["tune"] is None  # an ordinary training config
    best = max(rows, key=lambda r: float(r["value"]))
    best_yaml = (small_study / study_lib.BEST).read_text()
    assert best_yaml.splitlines()[0].startswith(f"# the best trial of study tuned: trial {best['number']}, "
                                                f"val_accuracy {float(best['value']):.4f}")
    for name in ("history", "importances", "parallel_coordinate", "slice"):
        assert (small_study / study_lib.PLOTS / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status = cnnctl("tune", "status", small_study)
    assert status.exit_code == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split() == ["trial", "state", "val_accuracy", "model.layers[3].rate",
                                "optimizer.learning_rate", "train.batch_size", "epochs", "seconds", "run"]
    assert lines[-2] == "3 complete"
    assert lines[-1].startswith(f"best: trial {best['number']}, val_accuracy {float(best['value']):.4f}: ")


@pytest.mark.slow
def test_best_yaml_trains_to_the_best_trials_value(small_study, tmp_path, train_yaml):
    rows = list(csv.DictReader((small_study / study_lib.TRIALS_CSV).open()))
    best = max(rows, key=lambda r: float(r["value"]))
    result = train_yaml((small_study / study_lib.BEST).read_text(), tmp_path / "best.yaml", tmp_path / "run")
    # the same seed and config on the same machine: the same figures, within float noise
    assert result["metrics"]["val"]["accuracy"] == pytest.approx(float(best["value"]), abs=1.5 / 120)


@pytest.mark.slow
def test_the_pruner_stops_a_clearly_bad_trial_before_its_last_epoch(tmp_path, tune_yaml, tune_process):
    text = with_space(tune_yaml, ["optimizer.learning_rate: {log_uniform: [1.0e-8, 1.0e-2]}"],
                      trials=2, pruner="{name: median, options: {n_startup_trials: 1, n_warmup_steps: 0}}")
    text = text.replace("epochs: 2", "epochs: 4")
    (tmp_path / "tuned.yaml").write_text(text)
    folder = tmp_path / "studies" / "tuned"
    folder.mkdir(parents=True)
    # the trials' values given in advance (Optuna's enqueue_trial), in this order: a good
    # learning rate, then one that learns nothing
    study = optuna.create_study(study_name="tuned", direction="maximize",
                                storage=f"sqlite:///{folder / study_lib.STUDY_DB}")
    study.enqueue_trial({"optimizer.learning_rate": 3e-3})
    study.enqueue_trial({"optimizer.learning_rate": 1e-8})
    done = tune_process("tuned.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trial 1 pruned at epoch 1: val_accuracy" in done.stdout
    trials = study_lib.load(folder)[0].get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert trials[1].user_attrs["pruned_at_epoch"] == 1
    assert trials[1].user_attrs["epochs"] == 1 < 4
    metrics = json.loads((folder / "trials" / "0001" / "metrics.json").read_text())
    assert metrics["tune"]["pruned_at_epoch"] == 1 and metrics["epochs"] == 1  # the run says so
    assert metrics["tune"]["value"] < trials[0].intermediate_values[0]


@pytest.mark.slow
def test_sigkill_mid_trial_then_the_same_command_finishes_every_trial_once(tmp_path, tune_yaml,
                                                                           tune_process, train_yaml):
    text = tune_yaml.replace("epochs: 2, batch_size: 64, seed: 3,",
                             "epochs: 30, batch_size: 64, seed: 3, backup_every_steps: 2, deterministic: true,")
    text = text.replace("trials: 3", "trials: 2")
    (tmp_path / "tuned.yaml").write_text(text)
    folder = tmp_path / "studies" / "tuned"
    command = [sys.executable, "-m", "cnnctl", "tune", "tuned.yaml"]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any((folder / "trials" / "0000" / "backup").glob("state-*.json")):  # mid-trial
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    again = tune_process("tuned.yaml", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "trial 0 continues from its backup" in again.stdout
    trials = study_lib.load(folder)[0].get_trials()
    assert [(t.number, t.state.name) for t in trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    run = folder / "trials" / "0000"
    history = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in history] == list(range(1, 31))  # every epoch once
    log = (folder / "trials" / "0000.log").read_text()
    assert log.count("# trial 0:") == 2  # started, then continued (not started afresh)
    # the resumed trial equals the same run trained without the interruption
    straight = train_yaml((run / "config.yaml").read_text(), tmp_path / "straight.yaml", tmp_path / "straight")
    # (the row of the epoch the kill cut averages the steps after the resume only)
    losses = [float(r["loss"]) for r in history]
    assert losses[1:] == pytest.approx(straight["metrics"]["history"]["loss"][1:], rel=1e-5)
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["val"] == straight["metrics"]["val"] and resumed["test"] == straight["metrics"]["test"]
    assert trials[0].value == straight["metrics"]["val"]["accuracy"]


@pytest.mark.slow
def test_sigterm_stops_the_study_with_its_trial_backed_up(tmp_path, tune_yaml):
    text = tune_yaml.replace("epochs: 2,", "epochs: 200, backup_every_steps: 2,").replace("trials: 3", "trials: 1")
    (tmp_path / "tuned.yaml").write_text(text)
    folder = tmp_path / "studies" / "tuned"
    tune = subprocess.Popen([sys.executable, "-m", "cnnctl", "tune", "tuned.yaml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any((folder / "trials" / "0000" / "backup").glob("state-*.json")):
        assert tune.poll() is None and time.monotonic() < deadline, tune.communicate()
        time.sleep(0.05)
    tune.send_signal(signal.SIGTERM)  # to `cnnctl tune` alone: it passes the signal on
    out, err = tune.communicate(timeout=120)
    assert tune.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "interrupted by SIGTERM; the study is kept in studies/tuned: run the same command again to "
        "continue it (running trials resume from their backups)")
    assert out.count("trial 0 ") == 2 and "trial 0 interrupted" in out  # started, interrupted: no more
    assert (folder / "trials" / "0000.log").read_text().count("# trial 0:") == 1
    assert "interrupted by SIGTERM at epoch" in (folder / "trials" / "0000.log").read_text()
    [trial] = study_lib.load(folder)[0].get_trials()
    assert trial.state.name == "RUNNING"  # for the next command to continue
    assert runs_state(folder / "trials" / "0000") == "unfinished"


@pytest.mark.slow
def test_a_trial_that_fails_is_recorded_and_the_study_goes_on(tmp_path, tune_yaml, tune_process):
    # a 40x40 pooling window does not fit the 26x26 maps: that trial's model cannot be built
    text = with_space(tune_yaml, ["model.layers[1].pool_size: {choice: [40, 2]}"],
                      sampler="{name: grid, seed: 0}", trials=5)  # the grid has 2: 2 trials
    (tmp_path / "tuned.yaml").write_text(text.replace("epochs: 2", "epochs: 1"))
    done = tune_process("tuned.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = {t.params["model.layers[1].pool_size"]: t for t in
              study_lib.load(tmp_path / "studies" / "tuned")[0].get_trials()}
    assert trials[2].state.name == "COMPLETE"
    failed = trials[40]
    assert failed.state.name == "FAIL"
    assert "model.layers[1]" in failed.user_attrs["error"] and "Traceback" not in done.stdout
    assert f"trial {failed.number} failed: " in done.stdout
    assert "1 complete, 1 failed" in done.stdout


@pytest.mark.slow
def test_a_metric_the_runs_do_not_compute_stops_the_study_at_its_line(tmp_path, tune_yaml, tune_process):
    text = with_space(tune_yaml, ["optimizer.learning_rate: {log_uniform: [1.0e-3, 1.0e-2]}"],
                      metric="val_auc")
    (tmp_path / "tuned.yaml").write_text(text.replace("epochs: 2", "epochs: 1"))
    done = tune_process("tuned.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "tuned.yaml:15: tune.metric: val_auc is not computed by this run (its epochs have accuracy, "
        "epoch_seconds, loss, val_accuracy, val_loss); choose one of them")
    assert [t.state.name for t in study_lib.load(tmp_path / "studies" / "tuned")[0].get_trials()] == ["FAIL"]


def runs_state(run_dir: Path) -> str:
    from cnnctl import runs

    return runs.describe(run_dir)["state"]


def test_a_study_of_another_config_is_refused(tmp_path, tune_yaml, monkeypatch):
    monkeypatch.chdir(tmp_path)  # tune.dir, studies/, is relative
    config = tmp_path / "tuned.yaml"
    config.write_text(tune_yaml)
    plan = study_lib.plan(config_lib.load(config))
    plan.folder.mkdir(parents=True)
    study_lib.open_study(plan)
    changed = study_lib.plan(config_lib.load(config, ["train.epochs=3", "tune.trials=9"]))
    with pytest.raises(study_lib.CnnctlError) as caught:
        study_lib.open_study(changed)
    assert str(caught.value) == (
        f"study 'tuned' ({plan.folder}) searches another config: train.epochs: 2 -> 3; run it with "
        "its own config (or --set) to continue it, or give --study a new name")
    assert study_lib.open_study(study_lib.plan(config_lib.load(config, ["tune.trials=9"])))  # the budget may grow


def test_yaml_text_keeps_floats_floats():
    assert space_lib.yaml_text(1e-05) == "1.0e-05"
    assert yaml.safe_load(space_lib.yaml_text(1e-05)) == 1e-05
    assert space_lib.yaml_text([3, 3]) == "[3, 3]"
    assert space_lib.yaml_text("plain") == "plain"
    assert math.isclose(yaml.safe_load(space_lib.yaml_text(0.30000000000000004)), 0.30000000000000004)
    assert os.sep not in space_lib.yaml_text({"a": 1})


def test_a_new_study_does_not_start_over_the_runs_of_another(tmp_path, tune_yaml, cnnctl, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tuned.yaml").write_text(tune_yaml)
    old_run = tmp_path / "studies" / "tuned" / "trials" / "0000"
    old_run.mkdir(parents=True)
    (old_run / "notes.txt").write_text("mine")
    result = cnnctl("tune", "tuned.yaml")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "studies/tuned/trials: holds runs, but the study 'tuned' has no trials (was its study.db "
        "removed?); nothing was changed there: give --study another name or move that folder away")
    assert [p.name for p in (tmp_path / "studies" / "tuned" / "trials").iterdir()] == ["0000"]
    assert (old_run / "notes.txt").read_text() == "mine"
