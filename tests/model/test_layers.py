"""cnnctl.model.layers: every layer type of the registry, built from YAML, against the same layer
written by hand in Keras (and the Keras class names each type stands for)."""

from __future__ import annotations

import pytest

from cnnctl.backend import keras
from cnnctl.config.layer_specs import LAYER_SPECS
from cnnctl.model.extra_layers import DropPath, LayerScale
from cnnctl.model.layers import LAYERS

L = keras.layers
L2 = keras.regularizers.L2


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
    ("rescaling-per-channel", [4, 4, 3], ["{type: rescaling, scale: [0.5, 1, 2], offset: [0, 1, 2]}"],
     lambda: [L.Rescaling([0.5, 1.0, 2.0], offset=[0.0, 1.0, 2.0])]),
    ("conv2d-groups", [8, 8, 4], ["{type: conv2d, filters: 8, groups: 2}"],
     lambda: [L.Conv2D(8, 3, groups=2)]),
    ("conv2d-initializers-with-arguments", [8, 8, 3],
     ["{type: conv2d, filters: 4, initializer: {name: variance_scaling, scale: 2.0, mode: fan_out, "
      "distribution: truncated_normal}, bias_initializer: {name: constant, value: 0.1}}"],
     lambda: [L.Conv2D(4, 3, kernel_initializer=keras.initializers.VarianceScaling(
         2.0, mode="fan_out", distribution="truncated_normal"),
         bias_initializer=keras.initializers.Constant(0.1))]),
    ("dense-bias-initializer", [6], ["{type: dense, units: 3, bias_initializer: ones}"],
     lambda: [L.Dense(3, bias_initializer="ones")]),
    ("dropout-noise-shape", [4, 4, 3], ["{type: dropout, rate: 0.2, noise_shape: [null, 1, 1, 3]}"],
     lambda: [L.Dropout(0.2, noise_shape=(None, 1, 1, 3))]),
    ("batch_norm-axis", [4, 4, 3], ["{type: batch_norm, axis: 1}"],
     lambda: [L.BatchNormalization(axis=1)]),
    ("group_norm", [4, 4, 8], ["{type: group_norm, groups: 4, epsilon: 1.0e-5}"],
     lambda: [L.GroupNormalization(groups=4, epsilon=1e-5)]),
    ("normalization", [4, 4, 3], ["{type: normalization, mean: [1, 2, 3], variance: [4, 5, 6]}"],
     lambda: [L.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 5.0, 6.0])]),
    ("normalization-unadapted", [4, 4, 3], ["{type: normalization}"],
     lambda: [L.Normalization()]),
    ("prelu", [4, 4, 3], ["{type: prelu, shared_axes: [1, 2]}"],
     lambda: [L.PReLU(shared_axes=[1, 2])]),
    ("cropping2d", [8, 8, 3], ["{type: cropping2d, cropping: [[1, 0], [2, 1]]}"],
     lambda: [L.Cropping2D(((1, 0), (2, 1)))]),
    ("layer_scale", [4, 4, 3], ["{type: layer_scale, init_value: 0.5}"],
     lambda: [LayerScale(0.5)]),
    ("drop_path", [4, 4, 3], ["{type: drop_path, rate: 0.1}"], lambda: [DropPath(0.1)]),
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
    ("subtract", "{type: subtract, name: merged, inputs: [a, b]}", lambda: L.Subtract(), (4, 4)),
    ("average", "{type: average, name: merged, inputs: [a, b]}", lambda: L.Average(), (4, 4)),
    ("maximum", "{type: maximum, name: merged, inputs: [a, b]}", lambda: L.Maximum(), (4, 4)),
    ("minimum", "{type: minimum, name: merged, inputs: [a, b]}", lambda: L.Minimum(), (4, 4)),
]


def test_registry_keys_are_the_schema_layer_tags():
    assert set(LAYERS) == set(LAYER_SPECS)
    assert len(LAYERS) == 33


def test_every_layer_type_is_compared_with_keras():
    covered = {c[0].split("-")[0] for c in LAYER_CASES} | {c[0].split("-")[0] for c in MERGE_CASES}
    assert covered == set(LAYERS)


@pytest.mark.parametrize("input_shape, layers, keras_layers",
                         [c[1:] for c in LAYER_CASES], ids=[c[0] for c in LAYER_CASES])
def test_layer_matches_keras(build_yaml, input_shape, layers, keras_layers, model_yaml):
    built = build_yaml(model_yaml(input_shape, layers))
    hand = keras.Sequential([keras.Input(tuple(input_shape)), *keras_layers()])
    assert_same_model(built, hand)


@pytest.mark.parametrize("merge, keras_merge, filters",
                         [c[1:] for c in MERGE_CASES], ids=[c[0] for c in MERGE_CASES])
def test_merge_layer_matches_keras(build_yaml, merge, keras_merge, filters, model_yaml, inbound):
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


def test_layer_options_reach_keras(build_yaml, model_yaml):
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


# --------------------------------------------------------------------------- Keras class names
MINIMAL_SPECS = {"conv2d": {"filters": 2}, "separable_conv2d": {"filters": 2},
                 "conv2d_transpose": {"filters": 2}, "dense": {"units": 2}, "dropout": {"rate": 0.1},
                 "spatial_dropout2d": {"rate": 0.1}, "activation": {"activation": "relu"},
                 "reshape": {"target_shape": [4]}, "drop_path": {"rate": 0.1},
                 "cropping2d": {"cropping": 1}, "subtract": {"inputs": ["a", "b"]},
                 "average": {"inputs": ["a", "b"]}, "maximum": {"inputs": ["a", "b"]},
                 "minimum": {"inputs": ["a", "b"]}, "rescaling": {"scale": 1.0},
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
