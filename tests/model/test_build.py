"""cnnctl.model.build: the Keras model of a config: pretrained backbones under the configured
layers, shape errors at build time, flip test-time augmentation, a failed weights download."""

import numpy as np
import pytest

from cnnctl.model import build as model_lib
from cnnctl.backend import keras



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


def test_backbone_output_is_the_input_of_the_layers_and_their_blocks(build_yaml,
                                                                     mobilenet_v2_params, inbound):
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


# --------------------------------------------------------------------------- errors at build time
def test_window_larger_than_its_input(build_error):
    path, message = build_error("""\
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


def test_window_larger_than_its_input_in_a_block(build_error):
    path, message = build_error("""\
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


def test_merge_of_incompatible_shapes(model_yaml, build_error):
    path, message = build_error(model_yaml([8, 8, 3], [
        "{type: conv2d, name: a, filters: 16, padding: same}",
        "{type: conv2d, name: b, filters: 32, padding: same, inputs: input}",
        "{type: add, name: sum, inputs: [a, b]}"]))
    # the rest of the line is Keras's own explanation
    assert message.startswith(f"{path}:6: model.layers[2]: add 'sum' cannot take input of shape "
                              "(8, 8, 16), (8, 8, 32): ")
    assert "\n" not in message


def test_input_shape_without_channels(build_error):
    path, message = build_error("""\
    model:
      input_shape: [28, 28]
      layers:
        - {type: conv2d, filters: 8}
        - {type: flatten}
    """)
    assert message == (f"{path}:2: model.input_shape: images need a channel axis: [28, 28, 1] "
                       "for grayscale or [28, 28, 3] for RGB (got [28, 28])")


# --------------------------------------------------------------------------- test-time augmentation, weights
def test_flip_tta_averages_an_image_and_its_mirror():
    inputs = keras.Input((4, 5, 1))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(
        keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 5, 1)).astype("float32")
    want = (model.predict_on_batch(x) + model.predict_on_batch(x[:, :, ::-1])) / 2
    np.testing.assert_allclose(model_lib.with_flip_tta(model).predict_on_batch(x), want, rtol=1e-5)


def test_a_failed_weights_download_is_said_in_a_few_words():
    from cnnctl.model import build as model

    error = Exception("Exception: URL fetch failure on https://storage.googleapis.com/tensorflow/"
                      "keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_"
                      "kernels_1.0_96_no_top.h5: None -- [Errno -2] Name or service not known")
    assert model.download_failure(error) == "no network: Name or service not known"
    assert model.download_failure(Exception("HTTP Error 403: Forbidden")) == "HTTP Error 403: Forbidden"
