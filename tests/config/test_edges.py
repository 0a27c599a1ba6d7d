"""Config values at the edges (seeds, inf/nan, absurd sizes, empty layers, deep nesting): each is
a one-line `FILE:LINE: path: message` config error, never a traceback later in Keras or NumPy."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cnnctl.config import load as config_lib
from cnnctl.errors import CnnctlError, ConfigError

# lines 1-6; what a test adds starts on line 7
MODEL = """\
model:
  input_shape: [8, 8, 1]
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, activation: relu}
    - {type: global_avg_pool2d}
    - {type: dense, units: 2, activation: softmax}
"""
DATA = "data: {source: npz, path: 'cnnctl://fashion_mnist_small.npz'}\n"
DEPTH = ("lists and mappings are nested more than 100 levels deep here; a config needs only a few")


def errors(write_yaml, text: str, overrides=None) -> list[str]:
    """The lines of the ConfigError of loading `text`, the file name cut to `FILE`."""
    path = write_yaml(text)
    with pytest.raises(ConfigError) as info:
        config_lib.load(path, overrides)
    return [line.replace(str(path), "FILE") for line in str(info.value).splitlines()]


# --------------------------------------------------------------------------- 1. train.seed
@pytest.mark.parametrize("seed, message", [
    (-1, "must be >= 0 (got -1)"),
    (2**32, "must be <= 4294967295 (got 4294967296)"),
    (10**30, f"must be <= 4294967295 (got {10**30})"),
])
def test_seed_outside_uint32_is_an_error_at_its_line(write_yaml, seed, message):
    assert errors(write_yaml, MODEL + f"train:\n  seed: {seed}\n") == [f"FILE:8: train.seed: {message}"]


# --------------------------------------------------------------------------- 2. inf, nan, huge
FINITE = "must be a finite number, not .inf or .nan"
NUMBERS = [
    # (section text from line 7, the error's line, path, message)
    ("train:\n  epochs: 1000000000000000000000000000000\n", 8, "train.epochs",
     f"must be <= 1000000 (got {10**30})"),
    ("train:\n  batch_size: 1000000000000000000000000000000\n", 8, "train.batch_size",
     f"must be <= 1000000 (got {10**30})"),
    ("train:\n  steps_per_execution: 100000000000\n", 8, "train.steps_per_execution",
     "must be <= 1000 (got 100000000000)"),
    ("optimizer:\n  learning_rate: .inf\n", 8, "optimizer.learning_rate", f"{FINITE} (got inf)"),
    ("optimizer:\n  weight_decay: .inf\n", 8, "optimizer.weight_decay", f"{FINITE} (got inf)"),
    ("optimizer:\n  clipnorm: .inf\n", 8, "optimizer.clipnorm", f"{FINITE} (got inf)"),
    ("optimizer:\n  schedule: {type: cosine, min_learning_rate: .inf}\n", 8,
     "optimizer.schedule.min_learning_rate", f"{FINITE} (got inf)"),
    ("optimizer:\n  schedule: {type: step, decay_epochs: .inf}\n", 8,
     "optimizer.schedule.decay_epochs", "must be <= 1000000.0 (got inf)"),
    ("optimizer:\n  schedule: {warmup_epochs: .inf}\n", 8,
     "optimizer.schedule.warmup_epochs", "must be <= 1000000.0 (got inf)"),
    ("train:\n  early_stopping: {min_delta: .inf}\n", 8, "train.early_stopping.min_delta",
     f"{FINITE} (got inf)"),
    (DATA.replace("}", ", max_train_samples: 100000000000000}"), 7, "data.max_train_samples",
     "must be <= 2147483647 (got 100000000000000)"),
    (DATA.replace("}", ", preprocessing: {rescale: .nan}}"), 7, "data.preprocessing.rescale",
     f"{FINITE} (got nan)"),
    ("augmentation:\n  layers:\n    - {type: random_rotation, factor: .inf}\n", 9,
     "augmentation.layers[0].factor", f"{FINITE} (got inf)"),
]


@pytest.mark.parametrize("text, line, path, message", NUMBERS, ids=[n[2] for n in NUMBERS])
def test_numbers_that_would_crash_later_are_errors(write_yaml, text, line, path, message):
    assert errors(write_yaml, MODEL + text) == [f"FILE:{line}: {path}: {message}"]


@pytest.mark.parametrize("old, new, message", [
    ("filters: 4", "filters: 1000000000000", "filters: must be <= 65536 (got 1000000000000)"),
    ("kernel_size: 3", "kernel_size: [3, 1000000000]",
     "kernel_size: must be <= 65536 (got (3, 1000000000))"),
    ("kernel_size: 3", "kernel_size: 3, strides: 1000000000000000000000",
     f"strides: must be <= 65536 (got ({10**21}, {10**21}))"),
])
def test_absurd_layer_sizes_are_errors(write_yaml, old, new, message):
    assert errors(write_yaml, MODEL.replace(old, new)) == [f"FILE:4: model.layers[0].{message}"]


def test_absurd_input_shape_is_an_error(write_yaml):
    assert errors(write_yaml, MODEL.replace("[8, 8, 1]", "[8, 10000000, 1]")) == [
        "FILE:2: model.input_shape[1]: must be <= 65536 (got 10000000)"]


# --------------------------------------------------------------------------- 3. schedules
@pytest.mark.parametrize("schedule", ["cosine", "one_cycle", "exponential", "step", "constant"])
def test_a_schedule_over_an_enormous_number_of_epochs(write_yaml, schedule):
    text = MODEL + f"optimizer:\n  schedule: {{type: {schedule}}}\ntrain:\n  epochs: 100000000\n"
    assert errors(write_yaml, text) == ["FILE:10: train.epochs: must be <= 1000000 (got 100000000)"]
    # at the bound, with many steps an epoch (past int32), every schedule still gives rates
    from cnnctl.backend import keras
    from cnnctl.train import optim

    loaded = config_lib.load(write_yaml(text.replace("100000000", "1000000")))
    rate = optim.learning_rate(loaded.config.optimizer, steps_per_epoch=60_000, epochs=1_000_000)
    for step in (0, 2**31 + 7, 6 * 10**10 - 1):
        value = float(keras.ops.convert_to_numpy(rate(step))) if callable(rate) else rate
        assert math.isfinite(value) and value >= 0, (schedule, step, value)


# --------------------------------------------------------------------------- 4. no layers
def test_empty_layers_say_what_is_needed(write_yaml):
    assert errors(write_yaml, MODEL.replace("  layers:\n", "  layers: []\n").split("    -")[0]) == [
        "FILE:3: model.layers: needs at least one layer (or a `backbone:`), e.g. "
        "- {type: dense, units: 10, activation: softmax}"]


# --------------------------------------------------------------------------- 5. deep nesting
@pytest.mark.parametrize("text, line", [
    (MODEL + "train:\n  seed: " + "[" * 500 + "]" * 500 + "\n", 8),
    (MODEL + "run:\n" + "".join("  " * i + "k:\n" for i in range(1, 400)), 106),
    (MODEL + "blocks: " + "{a: " * 300 + "1" + "}" * 300 + "\n", 7),
])
def test_deep_nesting_in_the_file_is_an_error_at_its_line(write_yaml, text, line):
    assert errors(write_yaml, text) == [f"FILE:{line}: {DEPTH}"]


def test_deep_nesting_in_set_is_an_error(write_yaml):
    overrides = ["model.layers[0].filters=" + "[" * 500 + "]" * 500]
    assert errors(write_yaml, MODEL, overrides) == [f"--set: model.layers[0].filters: {DEPTH}"]


# --------------------------------------------------------------------------- the command line
@pytest.mark.parametrize("text, overrides, line", [
    (MODEL + "train:\n  seed: -1\n", [], "{path}:8: train.seed: must be >= 0 (got -1)"),
    (MODEL.split("    -")[0].replace("layers:", "layers: []"), [],
     "{path}:3: model.layers: needs at least one layer (or a `backbone:`), e.g. "
     "- {{type: dense, units: 10, activation: softmax}}"),
    (MODEL + "train:\n  epochs: 100000000\noptimizer: {schedule: {type: cosine}}\n", [],
     "{path}:8: train.epochs: must be <= 1000000 (got 100000000)"),
    (MODEL, ["--set", "optimizer.learning_rate=.inf"],
     f"--set: optimizer.learning_rate: {FINITE} (got inf)"),
    (MODEL, ["--set", "train.seed=" + "[" * 400 + "]" * 400], f"--set: train.seed: {DEPTH}"),
    ("a: " + "[" * 400 + "]" * 400 + "\n", [], f"{{path}}:1: {DEPTH}"),
], ids=["seed", "no-layers", "epochs", "set-inf", "set-deep", "file-deep"])
def test_cli_check_exits_2_with_one_line(write_yaml, cnnctl, text, overrides, line):
    path = write_yaml(text)
    result = cnnctl("check", path, *overrides)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [line.format(path=path)]
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- property
NUMERIC_FIELDS = [
    ("train", "epochs"), ("train", "batch_size"), ("train", "seed"), ("train", "steps_per_execution"),
    ("train", "backup_every_steps"),
    ("optimizer", "learning_rate"), ("optimizer", "momentum"), ("optimizer", "weight_decay"),
    ("optimizer", "clipnorm"), ("optimizer", "clipvalue"), ("optimizer", "reference_batch_size"),
    ("optimizer", "ema_momentum"),
    ("optimizer", "schedule", "warmup_epochs"), ("optimizer", "schedule", "decay_rate"),
    ("optimizer", "schedule", "decay_epochs"), ("optimizer", "schedule", "min_learning_rate"),
    ("loss", "label_smoothing"),
    ("data", "validation_split"), ("data", "max_train_samples"), ("data", "max_test_samples"),
    ("data", "shuffle_buffer"),
    ("model", "layers", 0, "filters"), ("model", "layers", 0, "kernel_size"),
    ("model", "layers", 0, "strides"),
]
SCALARS = st.one_of(
    st.integers(), st.integers(min_value=-3, max_value=70_000), st.floats(), st.none(),
    st.booleans(), st.text(max_size=4), st.sampled_from([float("inf"), float("-inf"), float("nan")]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


def _config(path: tuple, value) -> dict:
    data = yaml.safe_load(MODEL + DATA + "optimizer: {schedule: {type: step}}\n")
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[path[-1]] = value
    return data


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(NUMERIC_FIELDS), value=VALUES)
@example(field=("model", "layers", 0, "filters"), value=10**12)  # Keras: out of memory
def test_any_value_of_a_numeric_field_is_a_config_or_a_config_error(field, value):
    from cnnctl.model import build as model_lib

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(_config(field, value)), encoding="utf-8")
        try:
            loaded = config_lib.load(path)
        except ConfigError:
            return
        if field[0] == "model":  # only the layer's values change what is built
            try:
                model_lib.build(loaded)
            except CnnctlError:
                pass


def test_absurd_sizes_inside_a_block_are_errors_where_the_block_is_defined(write_yaml):
    """Block layers are validated when the block is expanded: the same bounds apply there."""
    from cnnctl.model import build as model_lib

    path = write_yaml("""
        model:
          input_shape: [8, 8, 1]
          blocks:
            b:
              layers:
                - {type: conv2d, filters: 1000000000000, kernel_size: 3}
          layers:
            - {block: b}
            - {type: flatten}
            - {type: dense, units: 2}
        """)
    with pytest.raises(ConfigError) as info:
        model_lib.build(config_lib.load(path))
    assert str(info.value).replace(str(path), "FILE") == (
        "FILE:6: model.blocks.b.layers[0].filters: must be <= 65536 (got 1000000000000) "
        "[block 'b' used at model.layers[0]]")
