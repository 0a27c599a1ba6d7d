"""cnnctl.model.graph: `model.layers` expanded into a named layer graph: plain stack or graph,
repeats, blocks and their parameters, names and `inputs`, and the errors of each."""

import pytest

from cnnctl.backend import keras

L = keras.layers


# --------------------------------------------------------------------------- model kind
def test_plain_stack_is_sequential(build_yaml, model_yaml):
    model = build_yaml(model_yaml([8, 8, 3], ["{type: conv2d, filters: 4}", "{type: flatten}"]))
    assert type(model) is keras.Sequential


@pytest.mark.parametrize("text", [
    """\
    model:
      input_shape: [8, 8, 3]
      layers:
        - {type: conv2d, name: a, filters: 4}
        - {type: flatten, inputs: [a]}
    """,
    """\
    model:
      input_shape: [8, 8, 3]
      blocks:
        skip:
          layers:
            - {type: conv2d, name: c, filters: 3, padding: same}
            - {type: add, inputs: [c, input]}
      layers:
        - {block: skip}
    """,
], ids=["inputs-in-model", "inputs-in-block"])
def test_naming_inputs_makes_a_functional_model(build_yaml, text):
    model = build_yaml(text)
    assert isinstance(model, keras.Model) and not isinstance(model, keras.Sequential)


# --------------------------------------------------------------------------- blocks and naming
def test_repeat_names_copies(build_yaml, model_yaml, inbound):
    model = build_yaml(model_yaml([8, 8, 3], [
        "{type: conv2d, filters: 4, padding: same}",
        "{type: conv2d, filters: 4, padding: same, repeat: 2}",
        "{type: conv2d, name: conv, filters: 4, padding: same, repeat: 2}",
        "{type: flatten, name: flat, inputs: [conv]}"]))
    assert [layer.name for layer in model.layers if not isinstance(layer, L.InputLayer)] == [
        "conv2d", "conv2d_1", "conv2d_2", "conv_1", "conv_2", "flat"]
    assert inbound(model, "conv_2") == ["conv_1"]
    assert inbound(model, "flat") == ["conv_2"]  # a repeated layer's name is its last copy


RESIDUAL = """\
model:
  input_shape: [16, 16, 8]
  blocks:
    basic:
      params: {filters: null, kernel: 3}
      layers:
        - {type: conv2d, name: conv1, filters: $filters, kernel_size: $kernel, padding: same}
        - {type: batch_norm, name: bn1}
        - {type: conv2d, name: "conv${kernel}x${kernel}", filters: $filters, padding: same}
        - {type: add, name: add, inputs: ["conv${kernel}x${kernel}", input]}
  layers:
    - {block: basic, filters: 8}
    - {block: basic, filters: 8}
    - {block: basic, name: stage2, filters: 8, kernel: 1}
    - {block: basic, name: stage3, filters: 8, repeat: 2}
    - {type: concatenate, name: cat, inputs: [basic1, stage3]}
"""


def test_block_instances_are_named_and_wired(build_yaml, inbound):
    model = build_yaml(RESIDUAL)
    names = [layer.name for layer in model.layers if not isinstance(layer, L.InputLayer)]
    assert names == [
        "basic1_conv1", "basic1_bn1", "basic1_conv3x3", "basic1_add",
        "basic2_conv1", "basic2_bn1", "basic2_conv3x3", "basic2_add",
        "stage2_conv1", "stage2_bn1", "stage2_conv1x1", "stage2_add",
        "stage3_1_conv1", "stage3_1_bn1", "stage3_1_conv3x3", "stage3_1_add",
        "stage3_2_conv1", "stage3_2_bn1", "stage3_2_conv3x3", "stage3_2_add", "cat"]
    # `input` is the block's input; the next block reads the last layer of the one before
    assert inbound(model, "basic1_conv1") == ["input"]
    assert inbound(model, "basic1_add") == ["basic1_conv3x3", "input"]
    assert inbound(model, "basic2_conv1") == ["basic1_add"]
    assert inbound(model, "basic2_add") == ["basic2_conv3x3", "basic1_add"]
    assert inbound(model, "stage3_2_conv1") == ["stage3_1_add"]
    # an instance name (or a repeated call's name) stands for the block's output
    assert inbound(model, "cat") == ["basic1_add", "stage3_2_add"]
    # parameters and their defaults
    assert model.get_layer("basic1_conv1").kernel_size == (3, 3)
    assert model.get_layer("stage2_conv1").kernel_size == (1, 1)
    assert model.get_layer("stage2_conv1").filters == 8
    assert model.outputs[0].shape == (None, 16, 16, 16)


def test_nested_blocks(build_yaml, inbound):
    model = build_yaml("""\
    model:
      input_shape: [8, 8, 3]
      blocks:
        cbn:
          params: {filters: null, strides: 1}
          layers:
            - {type: conv2d, name: conv, filters: $filters, strides: $strides, padding: same}
            - {type: batch_norm, name: bn}
        res:
          params: {filters: null}
          layers:
            - {block: cbn, name: a, filters: $filters}
            - {block: cbn, filters: $filters}
            - {type: add, name: add, inputs: [cbn1, input]}
      layers:
        - {type: conv2d, name: stem, filters: 4, padding: same}
        - {block: res, filters: 4, repeat: 2}
        - {block: cbn, filters: 4, strides: 2}
    """)
    names = [layer.name for layer in model.layers if not isinstance(layer, L.InputLayer)]
    assert names == ["stem",
                     "res1_a_conv", "res1_a_bn", "res1_cbn1_conv", "res1_cbn1_bn", "res1_add",
                     "res2_a_conv", "res2_a_bn", "res2_cbn1_conv", "res2_cbn1_bn", "res2_add",
                     "cbn1_conv", "cbn1_bn"]
    assert inbound(model, "res1_cbn1_conv") == ["res1_a_bn"]
    assert inbound(model, "res2_add") == ["res2_cbn1_bn", "res1_add"]
    assert model.get_layer("cbn1_conv").strides == (2, 2)
    assert model.outputs[0].shape == (None, 4, 4, 4)


BLOCK = """\
model:
  input_shape: [8, 8, 3]
  blocks:
    basic:
      params: {filters: 8}
      layers:
        - {type: conv2d, filters: $filters, padding: same}
"""


@pytest.mark.parametrize("layers, expected", [
    ("    - {block: basik}\n",
     ":9: model.layers[0].block: unknown block 'basik' (did you mean 'basic'?); "
     "define it under model.blocks (defined: basic)"),
    ("    - {block: basic,\n       filtres: 4}\n",
     ":10: model.layers[0].filtres: block 'basic' has no parameter 'filtres' "
     "(did you mean 'filters'?); its parameters: filters"),
    ("    - {type: conv2d, name: a, filters: 4}\n    - {type: add, inputs: [a, b]}\n",
     ":10: model.layers[1].inputs[1]: no earlier layer is named 'b'; `inputs` may name earlier "
     "layers of the same model or `input`"),
    ("    - {type: conv2d, name: conv, filters: 4}\n    - {type: conv2d, name: cnv, inputs: conv1,"
     " filters: 4}\n",
     ":10: model.layers[1].inputs[0]: no earlier layer is named 'conv1' (did you mean 'conv'?); "
     "`inputs` may name earlier layers of the same model or `input`"),
    ("    - {type: conv2d, name: a, filters: 4}\n    - {type: dense, name: a, units: 4}\n",
     ":10: model.layers[1].name: duplicate layer name 'a' (first used on line 9); "
     "names must be unique"),
], ids=["unknown-block", "unknown-parameter", "missing-input", "missing-input-suggestion",
        "duplicate-name"])
def test_graph_errors(layers, expected, build_error):
    path, message = build_error(BLOCK + "  layers:\n" + layers)
    assert message == path + expected


def test_undeclared_parameter(build_error):
    path, message = build_error("""\
    model:
      input_shape: [8, 8, 3]
      blocks:
        basic:
          params: {filters: 8}
          layers:
            - {type: conv2d, filters: $filters, strides: $stride}
      layers:
        - {block: basic}
    """)
    assert message == (f"{path}:7: model.blocks.basic.layers[0].strides: unknown parameter "
                       "$stride; block 'basic' has parameters: filters [block 'basic' used at "
                       "model.layers[0]]")


def test_duplicate_name_from_a_block(build_error):
    path, message = build_error(BLOCK.replace("padding: same}", "name: c}") + """\
  layers:
    - {block: basic, name: b}
    - {type: conv2d, name: b_c, filters: 4}
""")
    assert message == (f"{path}:10: model.layers[1].name: duplicate layer name 'b_c' "
                       "(first used on line 7); names must be unique")
