"""Block templates that compute: expressions on parameters and input sizes, optional layers,
per-copy values, several inputs, names, and how their errors are reported (once, at the
template line, with the uses)."""

import numpy as np
import pytest

from cnnctl.backend import keras
from cnnctl.model.extra_layers import DropPath, LayerScale

L = keras.layers

INVERTED_RESIDUAL = """\
model:
  input_shape: [16, 16, 8]
  blocks:
    mbconv:
      params: {expansion: 6, filters: null, stride: 1}
      layers:
        - {type: conv2d, name: expand, filters: "${in_channels * expansion}", kernel_size: 1,
           when: "${expansion != 1}"}
        - {type: depthwise_conv2d, name: dw, strides: "${stride if copy == 0 else 1}", padding: same}
        - {type: global_avg_pool2d, name: squeeze, keepdims: true}
        - {type: conv2d, name: reduce, filters: "${max(1, in_channels // 4)}", kernel_size: 1}
        - {type: conv2d, name: excite, filters: "${in_channels * expansion}", kernel_size: 1,
           activation: sigmoid}
        - {type: multiply, name: scaled, inputs: [dw, excite]}
        - {type: conv2d, name: project, filters: $filters, kernel_size: 1}
        - {type: drop_path, name: drop, rate: "${0.3 * block_index / block_count}",
           when: "${copy > 0 or (stride == 1 and in_channels == filters)}"}
        - {type: add, name: add, inputs: [drop, input],
           when: "${copy > 0 or (stride == 1 and in_channels == filters)}"}
  layers:
    - {block: mbconv, name: first, expansion: 1, filters: 8}
    - {block: mbconv, name: stage, filters: 16, stride: 2, repeat: 3}
    - {type: global_avg_pool2d}
    - {type: dense, units: 10, activation: softmax}
"""


def test_expressions_compute_widths_from_the_input(build_yaml):
    model = build_yaml(INVERTED_RESIDUAL)
    # expansion 1 leaves `expand` out: its name stands for the block's input
    assert "first_expand" not in [layer.name for layer in model.layers]
    assert model.get_layer("first_dw").input.shape[-1] == 8
    assert model.get_layer("first_reduce").filters == 2          # 8 // 4
    assert model.get_layer("stage_1_expand").filters == 48       # 8 * 6
    assert model.get_layer("stage_2_expand").filters == 96       # 16 * 6: its own input
    assert model.get_layer("stage_2_reduce").filters == 4        # 16 // 4
    # the stride of 2 is the first copy's only
    assert [model.get_layer(f"stage_{i}_dw").strides for i in (1, 2, 3)] == [(2, 2), (1, 1), (1, 1)]
    # the residual is there where the shapes allow it: not in stage_1 (stride 2, 8 -> 16)
    names = [layer.name for layer in model.layers]
    assert "first_add" in names and "stage_1_add" not in names
    assert "stage_2_add" in names and "stage_3_add" in names


def test_block_index_and_count_give_each_copy_its_rate(build_yaml):
    model = build_yaml(INVERTED_RESIDUAL)
    # 4 copies of mbconv in the model: rates 0.3 * i / 4 for the copies that have the layer
    rates = {layer.name: layer.rate for layer in model.layers if isinstance(layer, DropPath)}
    assert rates == pytest.approx({"first_drop": 0.0, "stage_2_drop": 0.15, "stage_3_drop": 0.225})


def test_left_out_layers_pass_their_input_on(build_yaml, inbound):
    model = build_yaml("""\
    model:
      input_shape: [8, 8, 4]
      blocks:
        basic:
          params: {filters: null, stride: 1}
          layers:
            - {type: conv2d, name: conv, filters: $filters, strides: $stride, padding: same}
            - {type: conv2d, name: shortcut, filters: $filters, kernel_size: 1, strides: $stride,
               inputs: input, when: "${stride != 1 or in_channels != filters}"}
            - {type: add, inputs: [conv, shortcut]}
      layers:
        - {block: basic, name: same, filters: 4}
        - {block: basic, name: down, filters: 8, stride: 2}
        - {type: conv2d, filters: 3, repeat: 0}
        - {type: flatten}
    """)
    names = [layer.name for layer in model.layers]
    assert "same_shortcut" not in names and "down_shortcut" in names
    assert inbound(model, "same_add") == ["same_conv", "input"]
    assert not any(isinstance(layer, L.Conv2D) and layer.filters == 3 for layer in model.layers)
    assert model.output_shape == (None, 4 * 4 * 8)


def test_a_block_with_two_inputs_and_a_second_output(build_yaml, inbound):
    model = build_yaml("""\
    model:
      input_shape: [16, 16, 3]
      blocks:
        up:
          params: {filters: null}
          inputs: [x, skip]
          layers:
            - {type: conv2d_transpose, name: 2x, filters: $filters, kernel_size: 2, strides: 2,
               inputs: x}
            - {type: concatenate, name: joined, inputs: [2x, skip]}
            - {type: conv2d, name: 3x3, filters: $filters, padding: same}
      layers:
        - {type: conv2d, name: c1, filters: 8, padding: same}
        - {type: max_pool2d}
        - {type: conv2d, name: c2, filters: 16, padding: same}
        - {block: up, name: u1, filters: 8, inputs: [c2, c1]}
        - {type: global_avg_pool2d, name: pooled}
        - {type: global_avg_pool2d, name: pooled_joined, inputs: u1_joined}
        - {type: concatenate, inputs: [pooled, pooled_joined]}
    """)
    assert model.get_layer("u1_joined").output.shape == (None, 16, 16, 16)
    assert inbound(model, "u1_joined") == ["u1_2x", "c1"]
    assert model.output_shape == (None, 8 + 16)


def test_names_starting_with_a_digit_inside_blocks_only(build_yaml, build_error, config_errors):
    model = build_yaml("""\
    model:
      input_shape: [8, 8, 3]
      blocks:
        b:
          layers:
            - {type: conv2d, name: 1x1, filters: 4, kernel_size: 1}
      layers:
        - {block: b}
    """)
    assert model.layers[-1].name == "b1_1x1"
    assert config_errors("""
        model:
          input_shape: [8, 8, 3]
          layers:
            - {type: conv2d, name: 1x1, filters: 4, kernel_size: 1}
        """) == ["4: model.layers[0].name: '1x1' starts with a digit; names in model.layers start "
                 "with a letter or _ (inside a block a digit is fine: the block's name comes first)"]


def test_null_sides_take_any_image_size(build_yaml):
    model = build_yaml("""\
    model:
      input_shape: [null, null, 3]
      layers:
        - {type: conv2d, filters: 4, padding: same}
        - {type: global_avg_pool2d}
        - {type: dense, units: 2, activation: softmax}
    """)
    for size in (9, 17):
        assert model.predict(np.zeros((1, size, size + 3, 3)), verbose=0).shape == (1, 2)


# --------------------------------------------------------------------------- new layers
def test_layer_scale_and_drop_path_reload_from_a_keras_file(build_yaml, tmp_path):
    model = build_yaml("""\
    model:
      input_shape: [4, 4, 3]
      layers:
        - {type: conv2d, name: c, filters: 3, padding: same}
        - {type: layer_scale, name: scale, init_value: 0.5}
        - {type: drop_path, name: drop, rate: 0.5}
        - {type: add, inputs: [drop, input]}
    """)
    assert [w.shape for w in model.get_layer("scale").weights] == [(3,)]
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert isinstance(again.get_layer("scale"), LayerScale)


def test_drop_path_drops_whole_samples_in_training_only():
    layer = DropPath(0.5, seed=1)
    x = np.ones((4000, 3, 3, 2), "float32")
    trained = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = trained.reshape(4000, -1)
    assert set(np.unique(per_sample)) == {0.0, 2.0}       # kept samples scaled by 1 / (1 - rate)
    assert (per_sample.min(axis=1) == per_sample.max(axis=1)).all()  # all of a sample or none
    assert 0.45 < (per_sample[:, 0] == 0).mean() < 0.55
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("layers, message", [
    (["{type: layer_norm, axis: 7}"],
     ":4: model.layers[0].axis: layer_norm 'layer_norm': axis 7 is not an axis of its input of "
     "shape (8, 8, 3) (with the batch axis: 4 axes, so -4..3); use -1 for the channels"),
    (["{type: conv2d, name: a, filters: 2}", "{type: conv2d, name: b, filters: 2, inputs: input}",
      "{type: concatenate, inputs: [a, b], axis: 9}"],
     ":6: model.layers[2].axis: concatenate 'concatenate': axis 9 is not an axis of its input of "
     "shape (6, 6, 2) (with the batch axis: 4 axes, so -4..3); use -1 for the channels"),
    (["{type: conv2d, name: a, filters: 2}", "{type: conv2d, name: b, filters: 2, inputs: input}",
      "{type: concatenate, inputs: [a, b], axis: -4}"],
     ":6: model.layers[2].axis: concatenate 'concatenate': axis -4 is the batch axis of its input "
     "of shape (6, 6, 2); use -1 for the channels, or another image axis"),
    (["{type: reshape, target_shape: [5, 7]}"],
     ":4: model.layers[0]: reshape 'reshape' cannot take input of shape (8, 8, 3): The total size "
     "of the tensor must be unchanged. Received: input_shape=(8, 8, 3), target_shape=(5, 7)"),
    (["{type: conv2d, filters: 6, groups: 4}"],
     ":4: model.layers[0].groups: filters (6) must be a multiple of groups (4)"),
    (["{type: conv2d, filters: 4, groups: 2}"],
     ":4: model.layers[0]: conv2d 'conv2d' cannot take input of shape (8, 8, 3): The number of "
     "input channels must be evenly divisible by the number of groups. Received groups=2, but the "
     "input has 3 channels (full input shape is (None, 8, 8, 3))."),
])
def test_keras_build_errors_are_located_with_their_reason(build_error, model_yaml, layers, message):
    path, error = build_error(model_yaml([8, 8, 3], layers))
    assert error == path + message


@pytest.mark.parametrize("layer, message", [
    ("{type: reshape, target_shape: [-1, -1]}",
     "4: model.layers[0].target_shape: only one entry may be -1 (got [-1, -1])"),
    ("{type: conv2d, filters: 2, strides: 2, dilation_rate: 2}",
     "4: model.layers[0].dilation_rate: a convolution cannot have both strides > 1 and "
     "dilation_rate > 1 (got strides [2, 2], dilation_rate [2, 2]); set one of them to 1"),
    ("{type: concatenate, inputs: [a, b], axis: 0}",
     "4: model.layers[0].axis: axis 0 is the batch axis; concatenate along the channels (-1) or "
     "another image axis"),
    ("{type: subtract, inputs: [a, b, c]}",
     "4: model.layers[0].inputs: subtract takes exactly two inputs (got 3)"),
    ("{type: normalization, mean: [1, 2]}",
     "4: model.layers[0].variance: normalization with mean needs variance too"),
    ("{type: conv2d, filters: 2, initializer: {name: constant, scale: 2.0}}",
     "4: model.layers[0].initializer: initializer constant takes value, not scale"),
])
def test_layer_values_keras_would_refuse_are_config_errors(config_errors, layer, message):
    assert config_errors(f"""
        model:
          input_shape: [8, 8, 3]
          layers:
            - {layer}
        """) == [message]


TEMPLATE_ERRORS = """\
model:
  input_shape: [8, 8, 3]
  blocks:
    unused:
      layers:
        - {type: convv2d, filters: 3}
    inner:
      params: {f: 4}
      layers:
        - {type: dense, unitz: 3}
        - {type: dropout, rate: 1.5}
        - {type: conv2d, filters: "${f * widht}"}
    outer:
      layers:
        - {block: inner}
  layers:
    - {block: inner}
    - {block: outer}
    - {block: inner, f: 2}
"""


def test_template_errors_are_reported_once_with_their_uses(build_error):
    path, error = build_error(TEMPLATE_ERRORS)
    assert error.splitlines() == [
        f"{path}:6: model.blocks.unused.layers[0].type: unknown layer type 'convv2d' (did you mean "
        "'conv2d'?) [block 'unused', not used]",
        f"{path}:10: model.blocks.inner.layers[0].unitz: unknown key 'unitz' (did you mean "
        "'units'?); allowed keys: activation, bias_initializer, initializer, inputs, l2, name, "
        "repeat, type, units, use_bias, when [block 'inner' used at model.layers[0], "
        "model.layers[1] via model.blocks.outer.layers[0], model.layers[2]]",
        f"{path}:11: model.blocks.inner.layers[1].rate: must be < 1.0 (got 1.5) [block 'inner' used "
        "at model.layers[0], model.layers[1] via model.blocks.outer.layers[0], model.layers[2]]",
        f"{path}:12: model.blocks.inner.layers[2].filters: ${{f * widht}}: unknown parameter "
        "$widht (did you mean 'in_width'?); block 'inner' has parameters: f [block 'inner' used at model.layers[0], "
        "model.layers[1] via model.blocks.outer.layers[0], model.layers[2]]",
    ]


def test_errors_that_depend_on_a_use_name_the_uses_that_have_them(build_error):
    path, error = build_error("""\
    model:
      input_shape: [8, 8, 3]
      blocks:
        b:
          params: {rate: 0.1, width: 2}
          layers:
            - {type: dropout, rate: $rate}
            - {type: conv2d, filters: "${width // 2}", padding: same}
      layers:
        - {block: b, rate: 2.0}
        - {block: b, rate: 3.0}
        - {block: b, width: 1}
        - {block: b, width: 1}
    """)
    assert error.splitlines() == [
        f"{path}:7: model.blocks.b.layers[0].rate: must be < 1.0 (got 2.0) [block 'b' used at "
        "model.layers[0]]",
        f"{path}:7: model.blocks.b.layers[0].rate: must be < 1.0 (got 3.0) [block 'b' used at "
        "model.layers[1]]",
        f"{path}:8: model.blocks.b.layers[1].filters: must be > 0 (got 0) [block 'b' used at "
        "model.layers[2], model.layers[3]]",
    ]


def test_expression_errors_name_the_expression(build_error):
    path, error = build_error("""\
    model:
      input_shape: [8, 8, 3]
      blocks:
        b:
          params: {groups: 0}
          layers:
            - {type: conv2d, filters: "${in_channels // groups}"}
      layers:
        - {block: b}
    """)
    assert error == (f"{path}:7: model.blocks.b.layers[0].filters: ${{in_channels // groups}}: "
                     "integer division or modulo by zero [block 'b' used at model.layers[0]]")


def test_layers_that_do_not_lead_to_the_output_are_errors(build_error):
    path, error = build_error("""\
    model:
      input_shape: [8, 8, 3]
      blocks:
        b:
          layers:
            - {type: conv2d, name: side, filters: 2}
            - {type: conv2d, name: main, filters: 2, inputs: input}
      layers:
        - {type: conv2d, name: a, filters: 2}
        - {type: conv2d, name: b, filters: 2, inputs: input}
        - {block: b}
        - {type: flatten}
    """)
    assert error.splitlines() == [
        f"{path}:6: model.blocks.b.layers[0]: conv2d 'b1_side' does not lead to the model's output "
        "('flatten', the last layer): no later layer reads it; remove it, or name it in a later "
        "layer's `inputs` [block used at model.layers[2]]",
        f"{path}:9: model.layers[0]: conv2d 'a' does not lead to the model's output ('flatten', the "
        "last layer): no later layer reads it; remove it, or name it in a later layer's `inputs`",
    ]


def test_a_block_with_two_inputs_needs_both(build_error):
    path, error = build_error("""\
    model:
      input_shape: [8, 8, 3]
      blocks:
        up:
          inputs: [x, skip]
          layers:
            - {type: add, inputs: [x, skip]}
      layers:
        - {type: conv2d, name: a, filters: 3, padding: same}
        - {block: up}
        - {block: up, inputs: [a]}
    """)
    assert error.splitlines() == [
        f"{path}:10: model.layers[1]: block 'up' takes 2 inputs (x, skip): name them in "
        "`inputs: [...]`",
        f"{path}:11: model.layers[2].inputs: block 'up' takes 2 inputs (x, skip) but `inputs` "
        "names 1",
    ]


def test_parameters_may_not_take_the_built_in_names(config_errors):
    assert config_errors("""
        model:
          input_shape: [8, 8, 3]
          blocks:
            b:
              params: {in_channels: 3}
              layers: [{type: flatten}]
          layers: [{block: b}]
        """) == ["5: model.blocks.b.params: in_channels is a name every block has (in_channels, "
                 "in_height, in_width, copy, copies, block_index, block_count); call the parameter "
                 "something else"]


def test_parameters_outside_a_template_say_where_they_work(config_errors):
    assert config_errors("""
        model:
          input_shape: [8, 8, 3]
          layers:
            - {type: conv2d, filters: "${2 * 4}"}
        """) == ["4: model.layers[0].filters: '${2 * 4}' is a block parameter or expression: "
                 "`$name` and `${...}` work inside the layers of model.blocks templates only"]


@pytest.mark.parametrize("text, message", [
    ("model:\n  input_shape: [4]\n  layers:\n    - {type: dense, units: 2, when: false}\n",
     ":3: model.layers: the model has no layers: every layer is left out (`when: false`, "
     "`repeat: 0`) or none is given; add one, e.g. - {type: dense, units: 10, activation: softmax}"),
    ("model:\n  input_shape: [3]\n  layers:\n"
     "    - {type: activation, activation: relu, inputs: [input, input]}\n",
     ":4: model.layers[0].inputs: activation reads one input but `inputs` names 2; merge them "
     "first (with add, average, concatenate, maximum, minimum, multiply, subtract)"),
], ids=["every-layer-left-out", "two-inputs-to-one-input-layer"])
def test_graphs_keras_cannot_build_are_located(build_error, text, message):
    path, error = build_error(text)
    assert error == path + message


def test_augmentation_values_keras_refuses_are_located(cnnctl, write_yaml):
    path = write_yaml("model:\n  input_shape: [8, 8, 1]\n  layers: [{type: flatten}]\n"
                      "augmentation:\n  layers:\n    - {type: random_brightness, factor: 1.5}\n")
    result = cnnctl("check", path)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"{path}:6: augmentation.layers[0]: random_brightness: The `factor` argument should be a "
        "number (or a list of two numbers) in the range [-1, 1]. Received: factor=1.5")


def test_augmentation_needs_images(cnnctl, write_yaml):
    path = write_yaml("model:\n  input_shape: [4]\n  layers:\n  - {type: dense, units: 3, "
                      "activation: softmax}\naugmentation:\n  layers:\n"
                      "  - {type: random_crop, height: 8, width: 8}\n")
    result = cnnctl("check", path)
    assert (result.exit_code, result.stderr.strip()) == (2, (
        f"{path}:6: augmentation.layers: augmentation works on images, and model.input_shape [4] "
        "is not [height, width, channels]"))
