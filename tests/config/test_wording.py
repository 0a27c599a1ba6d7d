"""config: the schema's errors as the user sees them (`FILE:LINE: path: message`) and `--set`."""

import pytest

from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.config import wording
from cnnctl.errors import CnnctlError, ConfigError
from cnnctl.config.layer_specs import LAYER_SPECS, Conv2D

SMALL = """
model:
  input_shape: [28, 28, 1]
  layers:
    - {type: conv2d, filters: 8, kernel_size: 3, activation: relu}
    - {type: flatten}
    - {type: dense, units: 10, activation: softmax}
"""


def allowed(model) -> str:
    return ", ".join(sorted(model.model_fields))


LAYER_TYPES = f"layer types: {', '.join(LAYER_SPECS)} (or `block:` for a block of model.blocks)"


@pytest.fixture
def errors(write_yaml):
    """The lines of the ConfigError that loading a config text (and overrides) raises, without
    the file name: `LINE: path: message`. Line 1 is the first line after the opening quotes."""

    def errors(text: str, overrides=None) -> list[str]:
        path = write_yaml(text)
        with pytest.raises(ConfigError) as info:
            config_lib.load(path, overrides)
        prefix = f"{path}:"
        return [line.removeprefix(prefix) if line.startswith(prefix) else line
                for line in str(info.value).splitlines()]

    return errors


def test_small_config_loads_with_defaults(write_yaml):
    loaded = config_lib.load(write_yaml(SMALL))
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


def test_empty_file(errors):
    assert errors("# nothing yet\n") == ["1: the file is empty; a config needs at least a `model:` section"]


@pytest.mark.parametrize("text", ["- model\n- train\n", "42\n", "null\n"])
def test_top_level_not_a_mapping(errors, text):
    assert errors(text) == ["1: the top level must be a mapping with sections `model:`, `data:`, `train:`, ..."]


# --------------------------------------------------------------------------- unknown keys
def test_unknown_top_level_key_suggests_and_drops_the_missing_key(errors):
    # `modle` covers the "missing required key 'model'" that pydantic also reports
    assert errors("""
        modle:
          input_shape: [28, 28, 1]
        """) == [f"1: modle: unknown key 'modle' (did you mean 'model'?); "
                 f"allowed keys: {allowed(schema_lib.Config)}"]


def test_unknown_key_in_a_section_lr_suggests_learning_rate(errors):
    assert errors(SMALL + "optimizer: {name: adam, lr: 0.01}\n") == [
        f"7: optimizer.lr: unknown key 'lr' (did you mean 'learning_rate'?); "
        f"allowed keys: {allowed(schema_lib.OptimizerConfig)}"]


def test_unknown_key_in_a_layer(errors):
    # the suggestion covers "missing required key 'filters'", so that one is not printed
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: conv2d
              filtres: 32
        """) == [f"5: model.layers[0].filtres: unknown key 'filtres' (did you mean 'filters'?); "
                 f"allowed keys: {allowed(Conv2D)}"]


def test_missing_key_kept_when_the_unknown_key_suggests_another(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: conv2d, kernal_size: 3}
        """) == [
        "4: model.layers[0].filters: missing required key 'filters'",
        f"4: model.layers[0].kernal_size: unknown key 'kernal_size' (did you mean 'kernel_size'?); "
        f"allowed keys: {allowed(Conv2D)}",
    ]


def test_unknown_key_without_a_suggestion(errors):
    assert errors(SMALL + "train: {epochs: 1, wibble: 2}\n") == [
        f"7: train.wibble: unknown key 'wibble'; allowed keys: {allowed(schema_lib.TrainConfig)}"]


def test_did_you_mean():
    assert wording.did_you_mean("lr", ["epochs", "learning_rate"]) == " (did you mean 'learning_rate'?)"
    assert wording.did_you_mean("bs", ["batch_size", "seed"]) == " (did you mean 'batch_size'?)"
    assert wording.did_you_mean("epoch", ["epochs", "seed"]) == " (did you mean 'epochs'?)"
    assert wording.did_you_mean("zzz", ["epochs", "seed"]) == ""


# --------------------------------------------------------------------------- layer types
def test_misspelt_layer_type(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: conv2, filters: 3}
        """) == ["4: model.layers[0].type: unknown layer type 'conv2' (did you mean 'conv2d'?)"]


def test_unknown_layer_type_lists_the_types(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: transformer
        """) == [f"4: model.layers[0].type: unknown layer type 'transformer'; {LAYER_TYPES}"]


def test_layer_without_type(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {filters: 3}
        """) == ["4: model.layers[0]: missing `type:` (or `block:`); give a layer type such as conv2d or dense"]


def test_layer_with_misspelt_type_key(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {filters: 3,
               tpye: conv2d}
        """) == ["5: model.layers[0].tpye: unknown key 'tpye' (did you mean 'type'?); a layer needs "
                 "`type:` (a layer type such as conv2d or dense) or `block:`"]


def test_layer_that_is_not_a_mapping(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - flatten
        """) == ["4: model.layers[0]: a layer must be a mapping, e.g. {type: dense, units: 10} (got 'flatten')"]


def test_missing_required_layer_key(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: dense
              activation: relu
        """) == ["4: model.layers[0].units: missing required key 'units'"]


# --------------------------------------------------------------------------- wrong types
@pytest.mark.parametrize("value, got", [("many", "'many'"), ("[32]", "[32]"), ("2.5", "2.5"),
                                        ("{n: 3}", "{'n': 3}")])
def test_filters_must_be_a_whole_number(errors, value, got):
    assert errors(f"""
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: conv2d
              filters: {value}
        """) == [f"5: model.layers[0].filters: must be a whole number (got {got})"]


def test_section_that_is_not_a_mapping_shows_null_as_null(errors):
    assert errors(SMALL + "train:\noptimizer: 3\n") == [
        "7: train: must be a mapping of keys to values (got null)",
        "8: optimizer: must be a mapping of keys to values (got 3)",
    ]


def test_bool_and_union_types(errors):
    assert errors(SMALL + """\
train:
  tensorboard: maybe
  jit_compile: sometimes
augmentation:
  layers:
    - {type: random_rotation, factor: lots}
""") == [
        "8: train.tensorboard: must be true or false (got 'maybe')",
        "9: train.jit_compile: must be true or false, or 'auto' (got 'sometimes')",
        "12: augmentation.layers[0].factor: must be a number or a list (got 'lots')",
    ]


def test_quoted_number_and_boolean_are_not_whole_numbers(errors):
    assert errors(SMALL + "train: {epochs: '10', batch_size: true}\n") == [
        "7: train.batch_size: must be a whole number (got true)",
        "7: train.epochs: must be a whole number (got '10')",
    ]


# --------------------------------------------------------------------------- values out of range
def test_out_of_range_values(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: conv2d, filters: 0}
            - {type: conv2d, filters: 8, kernel_size: [3, 0]}
            - {type: conv2d, filters: 8, kernel_size: [3, 3, 3]}
            - {type: conv2d, filters: 8, kernel_size: 0}
            - {type: dropout, rate: 1.5}
        optimizer:
          learning_rate: -0.1
        """) == [
        "4: model.layers[0].filters: must be > 0 (got 0)",
        "5: model.layers[1].kernel_size[1]: must be > 0 (got 0)",
        "6: model.layers[2].kernel_size: must be a whole number or a list of two whole numbers [height, width] "
        "(got [3, 3, 3])",
        # `kernel_size: 0` means [0, 0]; the error is at what the file says, once
        "7: model.layers[3].kernel_size: must be > 0 (got 0)",
        "8: model.layers[4].rate: must be < 1.0 (got 1.5)",
        "10: optimizer.learning_rate: must be > 0.0 (got -0.1)",
    ]


def test_list_lengths(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1, 1]
          blocks:
            empty: {layers: []}
        """) == [
        "2: model.input_shape: must have at most 3 item(s) (got [28, 28, 1, 1])",
        "4: model.blocks.empty.layers: must have at least 1 item(s) (got [])",
    ]


def test_zero_padding_item_error_is_not_echoed_as_a_length_error(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: zero_padding2d, padding: [[1, 2], [3, -1]]}
        """) == ["4: model.layers[0].padding[1][1]: must be >= 0 (got -1)"]


# --------------------------------------------------------------------------- unknown choices
def test_unknown_activation_and_optimizer(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: dense, units: 3, activation: reluu}
        optimizer: {name: adm}
        """) == [
        "4: model.layers[0].activation: must be one of 'linear', 'relu', 'relu6', 'leaky_relu', "
        "'elu', 'selu', 'gelu', 'swish', 'silu', 'hard_swish', 'sigmoid', 'hard_sigmoid', 'tanh', "
        "'softmax' or 'softplus' (did you mean 'relu'?) (got 'reluu')",
        "5: optimizer.name: must be one of 'adam', 'adamw', 'sgd' or 'rmsprop' (did you mean 'adam'?) (got 'adm')",
    ]


def test_activation_layer_field_keeps_its_name_in_the_path(errors):
    # the layer type `activation` is also a field name: the path must show both
    lines = errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: activation
              activation: tanhh
        """)
    assert len(lines) == 1
    assert lines[0].startswith("5: model.layers[0].activation: must be one of 'linear',")
    assert lines[0].endswith("(did you mean 'tanh'?) (got 'tanhh')")


def test_names_say_what_they_may_contain(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          blocks:
            1x: {layers: [{type: flatten}]}
          layers:
            - {type: flatten, name: my-flatten}
        run: {name: my run}
        """) == [
        "4: model.blocks.1x: the key must be a name of letters, digits and underscores, not "
        "starting with a digit (got '1x')",
        "6: model.layers[0].name: must be a name of letters, digits and underscores, not "
        "starting with a digit (got 'my-flatten')",
        "7: run.name: must be letters, digits, '_', '.' and '-' only (got 'my run')",
    ]


# --------------------------------------------------------------------------- many at once
def test_all_errors_reported_at_once_sorted_by_line(errors):
    lines = errors("""
        train: {epochs: 0}
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: conv2d, filters: -1}
            - {type: dropot, rate: 0.5}
        optimizer:
          name: sgd
          momentum: 1.5
        data: {source: keras, name: mnist, shuffle_buffr: 10}
        """)
    assert [line.split(":")[0] for line in lines] == ["1", "5", "6", "9", "10"]
    assert lines == [
        "1: train.epochs: must be > 0 (got 0)",
        "5: model.layers[0].filters: must be > 0 (got -1)",
        "6: model.layers[1].type: unknown layer type 'dropot' (did you mean 'dropout'?)",
        "9: optimizer.momentum: must be < 1.0 (got 1.5)",
        f"10: data.shuffle_buffr: unknown key 'shuffle_buffr' (did you mean 'shuffle_buffer'?); "
        f"allowed keys: {allowed(schema_lib.DataConfig)}",
    ]


# --------------------------------------------------------------------------- anchors
def test_anchors_and_merge_keys(write_yaml, errors):
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
    assert errors(text.replace("filters: 16", "filters: 0")) == [
        "6: model.layers[2].filters: must be > 0 (got 0)"]


# --------------------------------------------------------------------------- --set
def test_set_overrides_apply(write_yaml):
    cfg = config_lib.load(write_yaml(SMALL + "data:\n"), [
        "train.epochs=3", "optimizer.learning_rate=1e-3", "model.layers[0].filters=16",
        "model.input_shape=[32, 32, 3]", "data.name=cifar10", "run.name=exp.1"]).config
    assert cfg.train.epochs == 3
    assert cfg.optimizer.learning_rate == 0.001
    assert cfg.model.layers[0].filters == 16
    assert cfg.model.input_shape == [32, 32, 3]
    assert cfg.data.name == "cifar10"  # `data:` is empty in the file
    assert cfg.run.name == "exp.1"


def test_set_fixes_an_error_in_the_file(write_yaml):
    cfg = config_lib.load(write_yaml(SMALL + "train: {epochs: 0}\n"), ["train.epochs=2"]).config
    assert cfg.train.epochs == 2


def test_set_bad_value_is_reported_against_set(errors):
    assert errors(SMALL + "train: {epochs: 5}\n", ["train.epochs=0", "model.layers[0].filters=x"]) == [
        "--set: model.layers[0].filters: must be a whole number (got 'x')",
        "--set: train.epochs: must be > 0 (got 0)",
    ]


def test_set_unknown_key(errors):
    assert errors(SMALL, ["train.epoch=3"]) == [
        f"--set: train.epoch: unknown key 'epoch' (did you mean 'epochs'?); "
        f"allowed keys: {allowed(schema_lib.TrainConfig)}"]


def test_set_new_section_missing_key_is_reported_against_set(errors):
    assert errors(SMALL, ["model.backbone.trainable=false"]) == [
        "--set: model.backbone.name: missing required key 'name'"]


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
def test_set_malformed(write_yaml, item, message):
    with pytest.raises(CnnctlError) as info:
        config_lib.load(write_yaml(SMALL), [item])
    assert not isinstance(info.value, ConfigError)
    assert str(info.value) == message


def test_set_value_that_is_not_yaml_is_text(write_yaml):
    cfg = config_lib.load(write_yaml(SMALL), ["train.checkpoint_monitor=val_accuracy [top]"]).config
    assert cfg.train.checkpoint_monitor == "val_accuracy [top]"


# --------------------------------------------------------------------------- names in another spelling
def test_did_you_mean_ignores_case_and_keras_spellings():
    from typing import get_args

    from cnnctl.config.layer_specs import Activation, Initializer

    assert wording.did_you_mean("Relu", get_args(Activation)) == " (did you mean 'relu'?)"
    assert wording.did_you_mean("LeakyReLU", get_args(Activation)) == " (did you mean 'leaky_relu'?)"
    assert wording.did_you_mean("HeNormal", get_args(Initializer)) == " (did you mean 'he_normal'?)"
    assert wording.did_you_mean("SGD", ["adam", "adamw", "sgd", "rmsprop"]) == " (did you mean 'sgd'?)"
    assert wording.did_you_mean("resnet50", ["ResNet101", "ResNet50"]) == " (did you mean 'ResNet50'?)"
    assert wording.did_you_mean("LR", ["epochs", "learning_rate"]) == " (did you mean 'learning_rate'?)"


def test_names_in_another_case_suggest_the_lowercase_name(errors):
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: dense, units: 3, activation: Relu}
        optimizer: {name: Adam}
        loss: CategoricalCrossentropy
        """) == [
        "4: model.layers[0].activation: must be one of 'linear', 'relu', 'relu6', 'leaky_relu', "
        "'elu', 'selu', 'gelu', 'swish', 'silu', 'hard_swish', 'sigmoid', 'hard_sigmoid', 'tanh', "
        "'softmax' or 'softplus' (did you mean 'relu'?) (got 'Relu')",
        "5: optimizer.name: must be one of 'adam', 'adamw', 'sgd' or 'rmsprop' (did you mean 'adam'?) (got 'Adam')",
        "6: loss.name: must be one of 'categorical_crossentropy', 'sparse_categorical_crossentropy' or "
        "'binary_crossentropy' (did you mean 'categorical_crossentropy'?) (got 'CategoricalCrossentropy')",
    ]


@pytest.mark.parametrize("keras_name, tag", [
    ("MaxPooling2D", "max_pool2d"), ("MaxPool2D", "max_pool2d"), ("Conv2D", "conv2d"),
    ("Dense", "dense"), ("BatchNormalization", "batch_norm"),
    ("GlobalAveragePooling2D", "global_avg_pool2d"), ("Dropout", "dropout"), ("Flatten", "flatten"),
    ("AveragePooling2D", "avg_pool2d"), ("Conv2DTranspose", "conv2d_transpose")])
def test_keras_class_name_as_layer_type_suggests_the_yaml_name(errors, keras_name, tag):
    assert errors(f"""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {{type: {keras_name}}}
        """) == [f"4: model.layers[0].type: unknown layer type '{keras_name}' (did you mean '{tag}'?)"]


# --------------------------------------------------------------------------- `(3, 3)` for [3, 3]
def test_parentheses_for_a_list_say_to_write_brackets(errors):
    assert errors("""
        model:
          input_shape: (28, 28, 1)
          layers:
            - type: conv2d
              filters: 8
              kernel_size: (3, 3)
        augmentation:
          layers:
            - type: random_zoom
              factor: (0.1, 0.2)
        """) == [
        "2: model.input_shape: (28, 28, 1) is not a YAML list; write [28, 28, 1]",
        "6: model.layers[0].kernel_size: (3, 3) is not a YAML list; write [3, 3]",
        "10: augmentation.layers[0].factor: (0.1, 0.2) is not a YAML list; write [0.1, 0.2]",
    ]


def test_parentheses_in_set_say_to_write_brackets(errors):
    assert errors(SMALL, ["model.layers[0].kernel_size=(5,5)"]) == [
        "--set: model.layers[0].kernel_size: (5, 5) is not a YAML list; write [5, 5]"]


# --------------------------------------------------------------------------- `optimizer: NAME`
def test_optimizer_short_form(write_yaml):
    cfg = config_lib.load(write_yaml(SMALL + "optimizer: sgd\n")).config
    assert cfg.optimizer == schema_lib.OptimizerConfig(name="sgd")
    assert cfg.optimizer.learning_rate == 0.001
    cfg = config_lib.load(write_yaml(SMALL), ["optimizer=rmsprop"]).config
    assert cfg.optimizer.name == "rmsprop"


def test_optimizer_short_form_with_a_typo(errors):
    assert errors(SMALL + "optimizer: adamm\n") == [
        "7: optimizer.name: must be one of 'adam', 'adamw', 'sgd' or 'rmsprop' (did you mean 'adam'?) "
        "(got 'adamm')"]


def test_text_in_parentheses_is_not_taken_for_a_list(errors):
    assert errors(SMALL + "run: {name: (draft)}\n") == [
        "7: run.name: must be letters, digits, '_', '.' and '-' only (got '(draft)')"]
