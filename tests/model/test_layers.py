"""Models built from YAML against the same models written by hand in Keras."""

from __future__ import annotations

import pytest

from cnnctl.config import load as config_lib
from cnnctl.model import build as model_lib
from cnnctl.model import summary
from cnnctl.backend import keras
from cnnctl.errors import ConfigError
from cnnctl.config.layer_specs import LAYER_SPECS
from cnnctl.model.layers import LAYERS

L = keras.layers
L2 = keras.regularizers.L2


def model_yaml(input_shape: list[int], layers: list[str]) -> str:
    return (f"model:\n  input_shape: {input_shape}\n  layers:\n"
            + "".join(f"    - {layer}\n" for layer in layers))


def described(model: keras.Model) -> list[tuple]:
    """Per layer (input layers left out): class, output shape, params, config without the name."""
    out = []
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            continue
        config = {k: v for k, v in layer.get_config().items() if k != "name"}
        out.append((type(layer), tuple(layer.output.shape), layer.count_params(), config))
    return out


def assert_same_model(built: keras.Model, hand: keras.Model) -> None:
    assert built.count_params() == hand.count_params()
    assert tuple(built.outputs[0].shape) == tuple(hand.outputs[0].shape)
    got, want = described(built), described(hand)
    assert [g[:3] for g in got] == [w[:3] for w in want]  # class, shape, params, layer by layer
    for (cls, _, _, config), (_, _, _, expected) in zip(got, want):
        assert config == expected, cls.__name__


def inbound(model: keras.Model, name: str) -> list[str]:
    """Names of the layers whose outputs layer `name` of a functional model reads."""
    found: list[str] = []

    def walk(value):
        if isinstance(value, dict):
            if "keras_history" in value:
                found.append(value["keras_history"][0])
            else:
                for v in value.values():
                    walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(next(layer for layer in model.get_config()["layers"] if layer["name"] == name)["inbound_nodes"])
    return found


# --------------------------------------------------------------------------- every layer type
# (id, input shape, YAML layers, the same layers in Keras)
LAYER_CASES = [
    ("conv2d", [8, 8, 3], ["{type: conv2d, filters: 4}"], lambda: [L.Conv2D(4, 3)]),
    ("conv2d-strides-same", [9, 9, 3],
     ["{type: conv2d, filters: 4, kernel_size: [3, 5], strides: 2, padding: same, activation: relu}"],
     lambda: [L.Conv2D(4, (3, 5), strides=2, padding="same", activation="relu")]),
    ("conv2d-dilation", [9, 9, 3], ["{type: conv2d, filters: 4, dilation_rate: 2}"],
     lambda: [L.Conv2D(4, 3, dilation_rate=2)]),
    ("conv2d-l2-initializer-nobias", [8, 8, 3],
     ["{type: conv2d, filters: 4, kernel_size: 1, use_bias: false, initializer: he_normal, l2: 0.01}"],
     lambda: [L.Conv2D(4, 1, use_bias=False, kernel_initializer="he_normal",
                       kernel_regularizer=L2(0.01))]),
    ("depthwise_conv2d", [8, 8, 4],
     ["{type: depthwise_conv2d, depth_multiplier: 2, strides: 2, padding: same, use_bias: false, "
      "l2: 0.001}"],
     lambda: [L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, use_bias=False,
                                depthwise_regularizer=L2(0.001))]),
    ("separable_conv2d", [8, 8, 4],
     ["{type: separable_conv2d, filters: 8, depth_multiplier: 2, activation: relu}"],
     lambda: [L.SeparableConv2D(8, 3, depth_multiplier=2, activation="relu")]),
    ("conv2d_transpose-same", [4, 4, 8],
     ["{type: conv2d_transpose, filters: 3, strides: 2, padding: same}"],
     lambda: [L.Conv2DTranspose(3, 3, strides=2, padding="same")]),
    ("conv2d_transpose-valid", [4, 4, 8], ["{type: conv2d_transpose, filters: 2, kernel_size: 3}"],
     lambda: [L.Conv2DTranspose(2, 3)]),
    ("max_pool2d", [8, 8, 3], ["{type: max_pool2d}"], lambda: [L.MaxPooling2D(2)]),
    ("max_pool2d-overlap-same", [9, 9, 3],
     ["{type: max_pool2d, pool_size: 3, strides: 2, padding: same}"],
     lambda: [L.MaxPooling2D(3, strides=2, padding="same")]),
    ("avg_pool2d", [8, 8, 3], ["{type: avg_pool2d, pool_size: 2, strides: 1}"],
     lambda: [L.AveragePooling2D(2, strides=1)]),
    ("global_avg_pool2d", [8, 8, 3], ["{type: global_avg_pool2d}"],
     lambda: [L.GlobalAveragePooling2D()]),
    ("global_avg_pool2d-keepdims", [8, 8, 3], ["{type: global_avg_pool2d, keepdims: true}"],
     lambda: [L.GlobalAveragePooling2D(keepdims=True)]),
    ("global_max_pool2d", [8, 8, 3], ["{type: global_max_pool2d}"], lambda: [L.GlobalMaxPooling2D()]),
    ("dense", [4, 4, 2], ["{type: flatten}", "{type: dense, units: 5, activation: softmax}"],
     lambda: [L.Flatten(), L.Dense(5, activation="softmax")]),
    ("dense-l2-initializer-nobias", [6],
     ["{type: dense, units: 3, use_bias: false, initializer: zeros, l2: 0.1}"],
     lambda: [L.Dense(3, use_bias=False, kernel_initializer="zeros", kernel_regularizer=L2(0.1))]),
    ("dropout", [8, 8, 3], ["{type: dropout, rate: 0.5}"], lambda: [L.Dropout(0.5)]),
    ("spatial_dropout2d", [8, 8, 3], ["{type: spatial_dropout2d, rate: 0.2}"],
     lambda: [L.SpatialDropout2D(0.2)]),
    ("batch_norm", [8, 8, 3], ["{type: batch_norm, momentum: 0.9, epsilon: 1.0e-5, center: false}"],
     lambda: [L.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False)]),
    ("layer_norm", [8, 8, 3], ["{type: layer_norm, epsilon: 1.0e-6}"],
     lambda: [L.LayerNormalization(epsilon=1e-6)]),
    ("activation-relu6", [8, 8, 3], ["{type: activation, activation: relu6}"],
     lambda: [L.Activation("relu6")]),
    ("activation-leaky_relu", [8, 8, 3],
     ["{type: activation, activation: leaky_relu, negative_slope: 0.1}"],
     lambda: [L.LeakyReLU(negative_slope=0.1)]),
    ("activation-leaky_relu-default", [8, 8, 3], ["{type: activation, activation: leaky_relu}"],
     lambda: [L.LeakyReLU(negative_slope=0.3)]),
    ("flatten", [4, 4, 2], ["{type: flatten}"], lambda: [L.Flatten()]),
    ("reshape", [4, 4, 2], ["{type: reshape, target_shape: [-1, 2]}"], lambda: [L.Reshape((-1, 2))]),
    ("upsampling2d", [4, 4, 3], ["{type: upsampling2d}"], lambda: [L.UpSampling2D(2)]),
    ("upsampling2d-bilinear", [4, 4, 3],
     ["{type: upsampling2d, size: [2, 3], interpolation: bilinear}"],
     lambda: [L.UpSampling2D((2, 3), interpolation="bilinear")]),
    ("zero_padding2d-default", [4, 4, 3], ["{type: zero_padding2d}"], lambda: [L.ZeroPadding2D()]),
    ("zero_padding2d-int", [4, 4, 3], ["{type: zero_padding2d, padding: 2}"],
     lambda: [L.ZeroPadding2D(2)]),
    ("zero_padding2d-rows-cols", [4, 4, 3], ["{type: zero_padding2d, padding: [1, 2]}"],
     lambda: [L.ZeroPadding2D((1, 2))]),
    ("zero_padding2d-each-side", [4, 4, 3],
     ["{type: zero_padding2d, padding: [[0, 1], [2, 3]]}"],
     lambda: [L.ZeroPadding2D(((0, 1), (2, 3)))]),
    ("rescaling", [4, 4, 3], ["{type: rescaling, scale: 0.5, offset: -1}"],
     lambda: [L.Rescaling(0.5, offset=-1.0)]),
    ("resizing", [8, 12, 3],
     ["{type: resizing, height: 16, width: 12, interpolation: nearest, crop_to_aspect_ratio: true}"],
     lambda: [L.Resizing(16, 12, interpolation="nearest", crop_to_aspect_ratio=True)]),
]

# merges read two branches of the input: (id, YAML merge layer, Keras merge layer, branch filters)
MERGE_CASES = [
    ("add", "{type: add, name: merged, inputs: [a, b]}", lambda: L.Add(), (4, 4)),
    ("multiply", "{type: multiply, name: merged, inputs: [a, b]}", lambda: L.Multiply(), (4, 4)),
    ("concatenate", "{type: concatenate, name: merged, inputs: [a, b]}", lambda: L.Concatenate(),
     (4, 6)),
    ("concatenate-axis", "{type: concatenate, name: merged, inputs: [a, b], axis: 1}",
     lambda: L.Concatenate(axis=1), (4, 4)),
]


def test_registry_keys_are_the_schema_layer_tags():
    assert set(LAYERS) == set(LAYER_SPECS)
    assert len(LAYERS) == 23


def test_every_layer_type_is_compared_with_keras():
    covered = {c[0].split("-")[0] for c in LAYER_CASES} | {c[0].split("-")[0] for c in MERGE_CASES}
    assert covered == set(LAYERS)


@pytest.mark.parametrize("input_shape, layers, keras_layers",
                         [c[1:] for c in LAYER_CASES], ids=[c[0] for c in LAYER_CASES])
def test_layer_matches_keras(build_yaml, input_shape, layers, keras_layers):
    built = build_yaml(model_yaml(input_shape, layers))
    hand = keras.Sequential([keras.Input(tuple(input_shape)), *keras_layers()])
    assert_same_model(built, hand)


@pytest.mark.parametrize("merge, keras_merge, filters",
                         [c[1:] for c in MERGE_CASES], ids=[c[0] for c in MERGE_CASES])
def test_merge_layer_matches_keras(build_yaml, merge, keras_merge, filters):
    built = build_yaml(model_yaml([8, 8, 3], [
        f"{{type: conv2d, name: a, filters: {filters[0]}, padding: same}}",
        f"{{type: conv2d, name: b, filters: {filters[1]}, padding: same, inputs: input}}",
        merge]))
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(filters[0], 3, padding="same")(x)
    b = L.Conv2D(filters[1], 3, padding="same")(x)
    hand = keras.Model(x, keras_merge()([a, b]))
    assert_same_model(built, hand)
    assert inbound(built, "b") == ["input"]
    assert inbound(built, "merged") == ["a", "b"]


def test_layer_options_reach_keras(build_yaml):
    model = build_yaml(model_yaml([9, 9, 3], [
        "{type: conv2d, name: c, filters: 4, strides: 2, padding: same, dilation_rate: 1, "
        "activation: relu, use_bias: false, initializer: he_normal, l2: 0.01}",
        "{type: activation, name: leaky, activation: leaky_relu, negative_slope: 0.2}",
        "{type: upsampling2d, name: up, interpolation: bilinear}",
        "{type: conv2d, name: plain, filters: 2}"]))
    conv = model.get_layer("c")
    assert (conv.strides, conv.padding, conv.use_bias) == ((2, 2), "same", False)
    assert conv.activation is keras.activations.relu
    assert isinstance(conv.kernel_initializer, keras.initializers.HeNormal)
    assert isinstance(conv.kernel_regularizer, L2)
    assert conv.kernel_regularizer.l2 == pytest.approx(0.01)
    assert model.get_layer("leaky").negative_slope == pytest.approx(0.2)
    assert model.get_layer("up").interpolation == "bilinear"
    plain = model.get_layer("plain")
    assert plain.kernel_regularizer is None and plain.padding == "valid" and plain.use_bias
    assert len(model.losses) == 1  # the one L2 penalty


# --------------------------------------------------------------------------- model kind
def test_plain_stack_is_sequential(build_yaml):
    model = build_yaml(model_yaml([8, 8, 3], ["{type: conv2d, filters: 4}", "{type: flatten}"]))
    assert type(model) is keras.Sequential


@pytest.mark.parametrize("text", [
    model_yaml([8, 8, 3], ["{type: conv2d, name: a, filters: 4}",
                           "{type: flatten, inputs: [a]}"]),
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
def test_repeat_names_copies(build_yaml):
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


def test_block_instances_are_named_and_wired(build_yaml):
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


def test_nested_blocks(build_yaml):
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


# --------------------------------------------------------------------------- backbones
BACKBONE = """\
model:
  input_shape: [96, 96, 3]
  backbone: {name: MobileNetV2, weights: null, trainable: false, pooling: avg}
  layers:
    - {type: dropout, rate: 0.2}
    - {type: dense, units: 10, activation: softmax}
"""


@pytest.fixture(scope="module")
def mobilenet_v2_params():
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3),
                                          pooling="avg")
    return base.count_params()


def test_backbone_with_head(build_yaml, mobilenet_v2_params):
    model = build_yaml(BACKBONE)
    head = 1280 * 10 + 10
    assert model.count_params() == mobilenet_v2_params + head
    assert model.outputs[0].shape == (None, 10)
    # trainable: false freezes the whole backbone: only the head trains
    assert sum(w.numpy().size for w in model.trainable_weights) == head


def test_backbone_output_is_the_input_of_the_layers_and_their_blocks(build_yaml, mobilenet_v2_params):
    model = build_yaml("""\
    model:
      input_shape: [96, 96, 3]
      backbone: {name: MobileNetV2}
      blocks:
        res:
          layers:
            - {type: conv2d, name: a, filters: 8, padding: same}
            - {type: conv2d, name: proj, inputs: input, filters: 8, kernel_size: 1}
            - {type: add, name: add, inputs: [a, proj]}
      layers:
        - {block: res}
        - {type: global_avg_pool2d}
    """)
    backbone = model.layers[1]
    assert isinstance(backbone, keras.Model)
    assert inbound(model, "res1_a") == [backbone.name]
    assert inbound(model, "res1_proj") == [backbone.name]
    assert model.get_layer("res1_proj").output.shape == (None, 3, 3, 8)
    assert model.count_params() == mobilenet_v2_params + (9 * 1280 * 8 + 8) + (1280 * 8 + 8)
    trainable = sum(w.numpy().size for w in model.trainable_weights)
    assert model.count_params() > trainable > (9 * 1280 * 8 + 8) + (1280 * 8 + 8)


# --------------------------------------------------------------------------- FLOPs
def test_flops_of_the_mnist_cnn(write_yaml):
    info = summary.describe(config_lib.load(write_yaml(model_yaml([28, 28, 1], [
        "{type: conv2d, filters: 32, activation: relu}", "{type: max_pool2d}",
        "{type: conv2d, filters: 64, activation: relu}", "{type: max_pool2d}",
        "{type: conv2d, filters: 64, activation: relu}", "{type: flatten}",
        "{type: dense, units: 64, activation: relu}",
        "{type: dense, units: 10, activation: softmax}"]))))
    # 2 x multiply-accumulates: 26*26*9*32 + 11*11*9*32*64 + 3*3*9*64*64 + 576*64 + 64*10
    assert info["flops"] == 5_588_480
    assert info["params"] == 93_322
    assert [layer["flops"] for layer in info["layers"]] == [
        2 * 26 * 26 * 9 * 32, 0, 2 * 11 * 11 * 9 * 32 * 64, 0, 2 * 3 * 3 * 9 * 64 * 64, 0,
        2 * 576 * 64, 2 * 64 * 10]


@pytest.mark.parametrize("input_shape, layer, flops", [
    # 8x8 outputs x (3*3 window x 4 channels x multiplier 2)
    ([8, 8, 4], "{type: depthwise_conv2d, depth_multiplier: 2, padding: same}", 2 * 64 * (9 * 4 * 2)),
    # strided: 4x4 outputs
    ([8, 8, 4], "{type: depthwise_conv2d, strides: 2, padding: same}", 2 * 16 * (9 * 4)),
    # depthwise 3x3 on 4 channels, then pointwise 4 -> 16, at 8x8 outputs
    ([8, 8, 4], "{type: separable_conv2d, filters: 16, padding: same}", 2 * 64 * (9 * 4 + 4 * 16)),
    # each of the 4x4 input positions spreads a 3x3x(8 -> 3) kernel over the 8x8 output
    ([4, 4, 8], "{type: conv2d_transpose, filters: 3, strides: 2, padding: same}", 2 * 16 * (9 * 8 * 3)),
], ids=["depthwise", "depthwise-strided", "separable", "transposed"])
def test_flops_by_hand(write_yaml, input_shape, layer, flops):
    info = summary.describe(config_lib.load(write_yaml(model_yaml(input_shape, [layer]))))
    assert info["flops"] == flops


# --------------------------------------------------------------------------- errors at build time
def build_error(write_yaml, text: str) -> tuple[str, str]:
    path = write_yaml(text)
    with pytest.raises(ConfigError) as e:
        model_lib.build(config_lib.load(path))
    return str(path), str(e.value)


def test_window_larger_than_its_input(write_yaml):
    path, message = build_error(write_yaml, """\
    model:
      input_shape: [4, 4, 3]
      layers:
        - {type: max_pool2d}
        - {type: conv2d, name: head, filters: 8}
    """)
    assert message == (
        f"{path}:5: model.layers[1]: conv2d 'head' does not fit its input of shape (2, 2, 3): "
        "output height (W - K + 2P) / S + 1 = (2 - 3 + 2*0) / 1 + 1 = 0 < 1 (K = 3, padding valid); "
        "use padding: same, a smaller window, or fewer downsampling layers before it")


def test_window_larger_than_its_input_in_a_block(write_yaml):
    path, message = build_error(write_yaml, """\
    model:
      input_shape: [8, 8, 3]
      blocks:
        down:
          layers:
            - {type: conv2d, name: conv, filters: 4, dilation_rate: 2}
      layers:
        - {type: max_pool2d, pool_size: 4}
        - {block: down}
    """)
    assert message == (
        f"{path}:6: model.blocks.down.layers[0]: conv2d 'down1_conv' does not fit its input of "
        "shape (2, 2, 3): output height (W - K + 2P) / S + 1 = (2 - 5 + 2*0) / 1 + 1 = -2 < 1 "
        "(K = 2*(3-1)+1, padding valid); use padding: same, a smaller window, or fewer "
        "downsampling layers before it [block used at model.layers[1]]")


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
def test_graph_errors(write_yaml, layers, expected):
    path, message = build_error(write_yaml, BLOCK + "  layers:\n" + layers)
    assert message == path + expected


def test_undeclared_parameter(write_yaml):
    path, message = build_error(write_yaml, """\
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
                       "$stride; block 'basic' has parameters: filters")


def test_duplicate_name_from_a_block(write_yaml):
    path, message = build_error(write_yaml, BLOCK.replace("padding: same}", "name: c}") + """\
  layers:
    - {block: basic, name: b}
    - {type: conv2d, name: b_c, filters: 4}
""")
    assert message == (f"{path}:10: model.layers[1].name: duplicate layer name 'b_c' "
                       "(first used on line 7); names must be unique")


def test_merge_of_incompatible_shapes(write_yaml):
    path, message = build_error(write_yaml, model_yaml([8, 8, 3], [
        "{type: conv2d, name: a, filters: 16, padding: same}",
        "{type: conv2d, name: b, filters: 32, padding: same, inputs: input}",
        "{type: add, name: sum, inputs: [a, b]}"]))
    # the rest of the line is Keras's own explanation
    assert message.startswith(f"{path}:6: model.layers[2]: add 'sum' cannot take input of shape "
                              "(8, 8, 16), (8, 8, 32): ")
    assert "\n" not in message


def test_input_shape_without_channels(write_yaml):
    path, message = build_error(write_yaml, """\
    model:
      input_shape: [28, 28]
      layers:
        - {type: conv2d, filters: 8}
        - {type: flatten}
    """)
    assert message == (f"{path}:2: model.input_shape: images need a channel axis: [28, 28, 1] "
                       "for grayscale or [28, 28, 3] for RGB (got [28, 28])")


# --------------------------------------------------------------------------- Keras class names
MINIMAL_SPECS = {"conv2d": {"filters": 2}, "separable_conv2d": {"filters": 2},
                 "conv2d_transpose": {"filters": 2}, "dense": {"units": 2}, "dropout": {"rate": 0.1},
                 "spatial_dropout2d": {"rate": 0.1}, "activation": {"activation": "relu"},
                 "reshape": {"target_shape": [4]}, "rescaling": {"scale": 1.0},
                 "resizing": {"height": 4, "width": 4}, "add": {"inputs": ["a", "b"]},
                 "multiply": {"inputs": ["a", "b"]}, "concatenate": {"inputs": ["a", "b"]}}


def test_keras_layer_names_are_the_classes_each_type_builds():
    from cnnctl.config.layer_specs import KERAS_LAYER_NAMES

    built = {tag: type(LAYERS[tag](LAYER_SPECS[tag].model_validate(
        {"type": tag, **MINIMAL_SPECS.get(tag, {})}), None)) for tag in LAYERS}
    built_leaky = type(LAYERS["activation"](LAYER_SPECS["activation"].model_validate(
        {"type": "activation", "activation": "leaky_relu"}), None))
    for tag, cls in built.items():
        assert KERAS_LAYER_NAMES[cls.__name__] == tag
    assert KERAS_LAYER_NAMES[built_leaky.__name__] == "activation"
    for name, tag in KERAS_LAYER_NAMES.items():
        keras_cls = getattr(L, name, None)
        if keras_cls is None:  # one of our spec classes' own names: BatchNorm, LayerNorm
            assert LAYER_SPECS[tag].__name__ == name
        else:  # a Keras class, or Keras's alias of one (MaxPool2D is MaxPooling2D)
            assert keras_cls in (built[tag], built_leaky), name


# --------------------------------------------------------------------------- output and classes
def check_error(write_yaml, text: str) -> tuple[str, str]:
    path = write_yaml(text)
    with pytest.raises(ConfigError) as e:
        summary.describe(config_lib.load(path))
    return str(path), str(e.value)


FASHION = ("T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot")


def test_check_compares_the_output_with_the_packaged_npz(write_yaml):
    path, message = check_error(write_yaml, """\
    model:
      input_shape: [28, 28, 1]
      layers:
        - {type: flatten}
        - {type: dense, units: 5}
        - {type: activation, activation: softmax}
        - {type: dropout, rate: 0.1}
    data: {source: npz, path: "cnnctl://fashion_mnist_small.npz"}
    """)
    assert message == (f"{path}:5: model.layers[1].units: the model outputs 5 values but the data "
                       f"has 10 classes ({FASHION}); give the last layer units: 10")


def test_check_compares_the_output_with_the_labels_of_an_npz(write_yaml, tmp_path):
    from conftest import write_colour_npz

    write_colour_npz(tmp_path / "colours.npz", train=6, test=3)
    path, message = check_error(write_yaml, f"""\
    model:
      input_shape: [16, 16, 3]
      layers:
        - {{type: conv2d, filters: 4}}
        - {{type: global_avg_pool2d}}
    data: {{source: npz, path: {tmp_path / 'colours.npz'}}}
    """)
    assert message == (f"{path}:4: model.layers[0].filters: the model outputs 4 values but the "
                       "data has 3 classes (0, 1, 2); give the last layer filters: 3")


def test_check_compares_the_output_and_loss_with_class_folders(write_yaml, tmp_path):
    for name in ("cat", "dog", ".hidden"):
        (tmp_path / "train" / name).mkdir(parents=True)  # no image is read
    text = f"""\
    model:
      input_shape: [8, 8, 3]
      layers:
        - {{type: flatten}}
        - {{type: dense, units: UNITS, activation: sigmoid}}
    data: {{source: folder, train_dir: {tmp_path / 'train'}}}
    loss: LOSS
    """
    fits = [("1", "binary_crossentropy"), ("2", "binary_crossentropy"), ("2", "categorical_crossentropy")]
    for units, loss in fits:
        summary.describe(config_lib.load(write_yaml(text.replace("UNITS", units).replace("LOSS", loss))))
    path, message = check_error(write_yaml, text.replace("UNITS", "1").replace("LOSS", "categorical_crossentropy"))
    assert message == (f"{path}:5: model.layers[1].units: the model outputs 1 value but the data has "
                       "2 classes (cat, dog); give the last layer units: 2, or units: 1 with "
                       "activation: sigmoid and loss: binary_crossentropy")


def test_check_refuses_binary_crossentropy_for_ten_classes(write_yaml):
    path, message = check_error(write_yaml, """\
    model:
      input_shape: [28, 28, 1]
      layers:
        - {type: flatten}
        - {type: dense, units: 1, activation: sigmoid}
    data: {source: keras, name: cifar100}
    loss: binary_crossentropy
    """)
    lines = message.splitlines()  # the class names: from Keras's cache where it has CIFAR-100
    assert lines[0].startswith(f"{path}:5: model.layers[1].units: the model outputs 1 value but "
                               "the data has 100 classes (")
    assert lines[0].endswith(", ...); give the last layer units: 100")
    assert lines[1].startswith(f"{path}:7: loss: binary_crossentropy needs 2 classes but the data has 100 (")
    assert lines[1].endswith("); use categorical_crossentropy or sparse_categorical_crossentropy")
    assert len(lines) == 2


@pytest.mark.parametrize("data", [
    "{source: npz, path: missing.npz}",
    "{source: folder, train_dir: no/such/folder}",
    "{source: tfds, name: imagenet2012}",
])
def test_check_says_nothing_where_the_classes_are_not_known_cheaply(write_yaml, data):
    info = summary.describe(config_lib.load(write_yaml(
        model_yaml([8, 8, 1], ["{type: flatten}", "{type: dense, units: 7}"]) + f"data: {data}\n")))
    assert info["output_shape"] == [7]
