"""cnnctl.config.wording: the schema's errors as the user sees them (`FILE:LINE: path: message`):
unknown keys and types with "did you mean", wrong types, values out of range, many at once."""

import pytest

from cnnctl.config import schema as schema_lib
from cnnctl.config import wording
from cnnctl.config.layer_specs import LAYER_SPECS, Conv2D


def allowed(model) -> str:
    return ", ".join(sorted(model.model_fields))


LAYER_TYPES = f"layer types: {', '.join(LAYER_SPECS)} (or `block:` for a block of model.blocks)"


# --------------------------------------------------------------------------- unknown keys
def test_unknown_top_level_key_suggests_and_drops_the_missing_key(config_errors):
    # `modle` covers the "missing required key 'model'" that pydantic also reports
    assert config_errors("""
        modle:
          input_shape: [28, 28, 1]
        """) == [f"1: modle: unknown key 'modle' (did you mean 'model'?); "
                 f"allowed keys: {allowed(schema_lib.Config)}"]


def test_unknown_key_in_a_section_lr_suggests_learning_rate(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml + "optimizer: {name: adam, lr: 0.01}\n") == [
        f"7: optimizer.lr: unknown key 'lr' (did you mean 'learning_rate'?); "
        f"allowed keys: {allowed(schema_lib.OptimizerConfig)}"]


def test_unknown_key_in_a_layer(config_errors):
    # the suggestion covers "missing required key 'filters'", so that one is not printed
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: conv2d
              filtres: 32
        """) == [f"5: model.layers[0].filtres: unknown key 'filtres' (did you mean 'filters'?); "
                 f"allowed keys: {allowed(Conv2D)}"]


def test_missing_key_kept_when_the_unknown_key_suggests_another(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: conv2d, kernal_size: 3}
        """) == [
        "4: model.layers[0].filters: missing required key 'filters'",
        f"4: model.layers[0].kernal_size: unknown key 'kernal_size' (did you mean 'kernel_size'?); "
        f"allowed keys: {allowed(Conv2D)}",
    ]


def test_unknown_key_without_a_suggestion(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml + "train: {epochs: 1, wibble: 2}\n") == [
        f"7: train.wibble: unknown key 'wibble'; allowed keys: {allowed(schema_lib.TrainConfig)}"]


def test_did_you_mean():
    assert wording.did_you_mean("lr", ["epochs", "learning_rate"]) == " (did you mean 'learning_rate'?)"
    assert wording.did_you_mean("bs", ["batch_size", "seed"]) == " (did you mean 'batch_size'?)"
    assert wording.did_you_mean("epoch", ["epochs", "seed"]) == " (did you mean 'epochs'?)"
    assert wording.did_you_mean("zzz", ["epochs", "seed"]) == ""


# --------------------------------------------------------------------------- layer types
def test_misspelt_layer_type(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: conv2, filters: 3}
        """) == ["4: model.layers[0].type: unknown layer type 'conv2' (did you mean 'conv2d'?)"]


def test_unknown_layer_type_lists_the_types(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: transformer
        """) == [f"4: model.layers[0].type: unknown layer type 'transformer'; {LAYER_TYPES}"]


def test_layer_without_type(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {filters: 3}
        """) == ["4: model.layers[0]: missing `type:` (or `block:`); give a layer type such as conv2d or dense"]


def test_layer_with_misspelt_type_key(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {filters: 3,
               tpye: conv2d}
        """) == ["5: model.layers[0].tpye: unknown key 'tpye' (did you mean 'type'?); a layer needs "
                 "`type:` (a layer type such as conv2d or dense) or `block:`"]


def test_layer_that_is_not_a_mapping(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - flatten
        """) == ["4: model.layers[0]: a layer must be a mapping, e.g. {type: dense, units: 10} (got 'flatten')"]


def test_missing_required_layer_key(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: dense
              activation: relu
        """) == ["4: model.layers[0].units: missing required key 'units'"]


# --------------------------------------------------------------------------- wrong types
@pytest.mark.parametrize("value, got", [("many", "'many'"), ("[32]", "[32]"), ("2.5", "2.5"),
                                                                           ("{n: 3}", "{'n': 3}")])
def test_filters_must_be_a_whole_number(config_errors, value, got):
    assert config_errors(f"""
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: conv2d
              filters: {value}
        """) == [f"5: model.layers[0].filters: must be a whole number (got {got})"]


def test_section_that_is_not_a_mapping_shows_null_as_null(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml + "train:\noptimizer: 3\n") == [
        "7: train: must be a mapping of keys to values (got null)",
        "8: optimizer: must be a mapping of keys to values (got 3)",
    ]


def test_bool_and_union_types(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml + """\
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


def test_quoted_number_and_boolean_are_not_whole_numbers(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml + "train: {epochs: '10', batch_size: true}\n") == [
        "7: train.batch_size: must be a whole number (got true)",
        "7: train.epochs: must be a whole number (got '10')",
    ]


# --------------------------------------------------------------------------- values out of range
def test_out_of_range_values(config_errors):
    assert config_errors("""
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


def test_list_lengths(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1, 1]
          blocks:
            empty: {layers: []}
        """) == [
        "2: model.input_shape: must have at most 3 item(s) (got [28, 28, 1, 1])",
        "4: model.blocks.empty.layers: must have at least 1 item(s) (got [])",
    ]


def test_zero_padding_item_error_is_not_echoed_as_a_length_error(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: zero_padding2d, padding: [[1, 2], [3, -1]]}
        """) == ["4: model.layers[0].padding[1][1]: must be >= 0 (got -1)"]


# --------------------------------------------------------------------------- unknown choices
def test_unknown_activation_and_optimizer(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: dense, units: 3, activation: reluu}
        optimizer: {name: adm}
        """) == [
        "4: model.layers[0].activation: must be one of 'linear', 'relu', 'relu6', 'leaky_relu', "
        "'elu', 'selu', 'gelu', 'swish', 'silu', 'hard_swish', 'hard_silu', 'mish', 'sigmoid', "
        "'hard_sigmoid', 'tanh', 'hard_tanh', 'softsign', 'softmax' or 'softplus' (did you mean 'relu'?) (got 'reluu')",
        "5: optimizer.name: must be one of 'adam', 'adamw', 'sgd' or 'rmsprop' (did you mean 'adam'?) (got 'adm')",
    ]


def test_activation_layer_field_keeps_its_name_in_the_path(config_errors):
    # the layer type `activation` is also a field name: the path must show both
    lines = config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: activation
              activation: tanhh
        """)
    assert len(lines) == 1
    assert lines[0].startswith("5: model.layers[0].activation: must be one of 'linear',")
    assert lines[0].endswith("(did you mean 'tanh'?) (got 'tanhh')")


def test_names_say_what_they_may_contain(config_errors):
    assert config_errors("""
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
        "6: model.layers[0].name: must be a name of letters, digits and underscores "
        "(got 'my-flatten')",
        "7: run.name: must be letters, digits, '_', '.' and '-' only (got 'my run')",
    ]


# --------------------------------------------------------------------------- many at once
def test_all_errors_reported_at_once_sorted_by_line(config_errors):
    lines = config_errors("""
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


# --------------------------------------------------------------------------- names in another spelling
def test_did_you_mean_ignores_case_and_keras_spellings():
    from typing import get_args

    from cnnctl.config.layer_specs import Activation, InitializerName as Initializer

    assert wording.did_you_mean("Relu", get_args(Activation)) == " (did you mean 'relu'?)"
    assert wording.did_you_mean("LeakyReLU", get_args(Activation)) == " (did you mean 'leaky_relu'?)"
    assert wording.did_you_mean("HeNormal", get_args(Initializer)) == " (did you mean 'he_normal'?)"
    assert wording.did_you_mean("SGD", ["adam", "adamw", "sgd", "rmsprop"]) == " (did you mean 'sgd'?)"
    assert wording.did_you_mean("resnet50", ["ResNet101", "ResNet50"]) == " (did you mean 'ResNet50'?)"
    assert wording.did_you_mean("LR", ["epochs", "learning_rate"]) == " (did you mean 'learning_rate'?)"


def test_names_in_another_case_suggest_the_lowercase_name(config_errors):
    assert config_errors("""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: dense, units: 3, activation: Relu}
        optimizer: {name: Adam}
        loss: CategoricalCrossentropy
        """) == [
        "4: model.layers[0].activation: must be one of 'linear', 'relu', 'relu6', 'leaky_relu', "
        "'elu', 'selu', 'gelu', 'swish', 'silu', 'hard_swish', 'hard_silu', 'mish', 'sigmoid', "
        "'hard_sigmoid', 'tanh', 'hard_tanh', 'softsign', 'softmax' or 'softplus' (did you mean 'relu'?) (got 'Relu')",
        "5: optimizer.name: must be one of 'adam', 'adamw', 'sgd' or 'rmsprop' (did you mean 'adam'?) (got 'Adam')",
        "6: loss.name: must be one of 'categorical_crossentropy', 'sparse_categorical_crossentropy' or "
        "'binary_crossentropy' (did you mean 'categorical_crossentropy'?) (got 'CategoricalCrossentropy')",
    ]


@pytest.mark.parametrize("keras_name, tag", [
    ("MaxPooling2D", "max_pool2d"), ("MaxPool2D", "max_pool2d"), ("Conv2D", "conv2d"),
    ("Dense", "dense"), ("BatchNormalization", "batch_norm"),
    ("GlobalAveragePooling2D", "global_avg_pool2d"), ("Dropout", "dropout"), ("Flatten", "flatten"),
    ("AveragePooling2D", "avg_pool2d"), ("Conv2DTranspose", "conv2d_transpose")])
def test_keras_class_name_as_layer_type_suggests_the_yaml_name(config_errors, keras_name, tag):
    assert config_errors(f"""
        model:
          input_shape: [28, 28, 1]
          layers:
            - {{type: {keras_name}}}
        """) == [f"4: model.layers[0].type: unknown layer type '{keras_name}' (did you mean '{tag}'?)"]


# --------------------------------------------------------------------------- `(3, 3)` for [3, 3]
def test_parentheses_for_a_list_say_to_write_brackets(config_errors):
    assert config_errors("""
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


def test_optimizer_short_form_with_a_typo(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml + "optimizer: adamm\n") == [
        "7: optimizer.name: must be one of 'adam', 'adamw', 'sgd' or 'rmsprop' (did you mean 'adam'?) "
        "(got 'adamm')"]


def test_text_in_parentheses_is_not_taken_for_a_list(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml + "run: {name: (draft)}\n") == [
        "7: run.name: must be letters, digits, '_', '.' and '-' only (got '(draft)')"]
