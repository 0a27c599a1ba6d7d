"""cnnctl.config.load: a YAML file becomes a validated Config: file-level problems, anchors, and
`--set` overrides (applied, validated, and reported against `--set`)."""

import pytest

from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.errors import CnnctlError, ConfigError


def allowed(model) -> str:
    return ", ".join(sorted(model.model_fields))


def test_small_config_loads_with_defaults(write_yaml, small_model_yaml):
    loaded = config_lib.load(write_yaml(small_model_yaml))
    cfg = loaded.config
    assert cfg.model.input_shape == [28, 28, 1]
    assert [layer.type for layer in cfg.model.layers] == ["conv2d", "flatten", "dense"]
    assert cfg.model.layers[0].kernel_size == (3, 3)
    assert cfg.optimizer.name == "adam" and cfg.train.epochs > 0
    assert loaded.file.endswith("config.yaml")


# --------------------------------------------------------------------------- file-level problems
def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CnnctlError) as info:
        config_lib.load(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: config file not found; check the path"


def test_empty_file(config_errors):
    assert config_errors("# nothing yet\n") == ["1: the file is empty; a config needs at least a `model:` section"]


@pytest.mark.parametrize("text", ["- model\n- train\n", "42\n", "null\n"])
def test_top_level_not_a_mapping(config_errors, text):
    assert config_errors(text) == ["1: the top level must be a mapping with sections `model:`, `data:`, `train:`, ..."]


# --------------------------------------------------------------------------- anchors
def test_anchors_and_merge_keys(write_yaml, config_errors):
    text = """
        model:
          input_shape: [28, 28, 1]
          layers:
            - &conv {type: conv2d, filters: 8, kernel_size: 3, activation: relu}
            - *conv
            - {<<: *conv, filters: 16}
            - {type: flatten}
        """
    layers = config_lib.load(write_yaml(text)).config.model.layers
    assert [(layer.type, getattr(layer, "filters", None)) for layer in layers] == [
        ("conv2d", 8), ("conv2d", 8), ("conv2d", 16), ("flatten", None)]
    # an error in a value given beside a merge points at that value's line
    assert config_errors(text.replace("filters: 16", "filters: 0")) == [
        "6: model.layers[2].filters: must be > 0 (got 0)"]


# --------------------------------------------------------------------------- --set
def test_set_overrides_apply(write_yaml, small_model_yaml):
    cfg = config_lib.load(write_yaml(small_model_yaml + "data:\n"), [
        "train.epochs=3", "optimizer.learning_rate=1e-3", "model.layers[0].filters=16",
        "model.input_shape=[32, 32, 3]", "data.name=cifar10", "run.name=exp.1"]).config
    assert cfg.train.epochs == 3
    assert cfg.optimizer.learning_rate == 0.001
    assert cfg.model.layers[0].filters == 16
    assert cfg.model.input_shape == [32, 32, 3]
    assert cfg.data.name == "cifar10"  # `data:` is empty in the file
    assert cfg.run.name == "exp.1"


def test_set_fixes_an_error_in_the_file(write_yaml, small_model_yaml):
    cfg = config_lib.load(write_yaml(small_model_yaml + "train: {epochs: 0}\n"), ["train.epochs=2"]).config
    assert cfg.train.epochs == 2


def test_set_bad_value_is_reported_against_set(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml + "train: {epochs: 5}\n", ["train.epochs=0", "model.layers[0].filters=x"]) == [
        "--set: model.layers[0].filters: must be a whole number (got 'x')",
        "--set: train.epochs: must be > 0 (got 0)",
    ]


def test_set_unknown_key(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml, ["train.epoch=3"]) == [
        f"--set: train.epoch: unknown key 'epoch' (did you mean 'epochs'?); "
        f"allowed keys: {allowed(schema_lib.TrainConfig)}"]


def test_set_new_section_missing_key_is_reported_against_set(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml, ["model.backbone.trainable=false"]) == [
        "--set: model.backbone.name: missing: give `name` (a keras.applications model) or `run` "
        "(a previous cnnctl run directory)"]


@pytest.mark.parametrize("item, message", [
    ("foo", "--set 'foo': expected path.to.key=value, e.g. --set train.epochs=1 or "
            "--set model.layers[0].filters=16"),
    ("=3", "--set '=3': expected path.to.key=value, e.g. --set train.epochs=1 or "
           "--set model.layers[0].filters=16"),
    ("model.layers[x]=1", "--set 'model.layers[x]=1': expected path.to.key=value, e.g. "
                          "--set train.epochs=1 or --set model.layers[0].filters=16"),
    ("model.layers[7].units=3", "--set 'model.layers[7].units=3': model.layers[7] is not in "
                                "the config (model.layers has 3 item(s))"),
    ("model.blocks[0]=3", "--set 'model.blocks[0]=3': model.blocks[0] is not in the config"),
    ("model.input_shape.h=3", "--set 'model.input_shape.h=3': model.input_shape is not a mapping"),
    ("train.epochs=!!python/object/apply:os.system ['true']",
     "--set \"train.epochs=!!python/object/apply:os.system ['true']\": YAML tag "
     "'!!python/object/apply:os.system' is not allowed: configs are plain YAML (no python "
     "objects or custom tags); remove the tag"),
])
def test_set_malformed(write_yaml, item, message, small_model_yaml):
    with pytest.raises(CnnctlError) as info:
        config_lib.load(write_yaml(small_model_yaml), [item])
    assert not isinstance(info.value, ConfigError)
    assert str(info.value) == message


def test_set_value_that_is_not_yaml_is_text(write_yaml, small_model_yaml):
    cfg = config_lib.load(write_yaml(small_model_yaml), ["train.checkpoint_monitor=val_accuracy [top]"]).config
    assert cfg.train.checkpoint_monitor == "val_accuracy [top]"


def test_parentheses_in_set_say_to_write_brackets(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml, ["model.layers[0].kernel_size=(5,5)"]) == [
        "--set: model.layers[0].kernel_size: (5, 5) is not a YAML list; write [5, 5]"]
