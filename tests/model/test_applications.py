"""configs/ that rebuild keras.applications architectures: each builds the same model as Keras
(weights=None, include_top, 1000 classes, 224x224x3): the same parameter count, the same weight
shapes layer by layer, and, with Keras's weights copied in, the same outputs. A deliberately
changed padding makes the comparison fail, so the comparison can fail."""

from pathlib import Path

import numpy as np
import pytest

from cnnctl.backend import keras
from cnnctl.config import load as config_lib
from cnnctl.errors import ConfigError
from cnnctl.model import build as model_lib

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHAPE = (224, 224, 3)
ATOL = 1e-5


def _weighted_layers(model, top: bool = True) -> list[tuple]:
    """(layer, top-level) for the layers that hold weights, in order, with nested models
    (ConvNeXt's stem and downsampling Sequentials) opened up."""
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            out += _weighted_layers(layer, top=False)
        elif layer.weights:
            out.append((layer, top))
    return out


def _randomize_statistics(model) -> None:
    """Give batch norms (and Normalization) non-trivial statistics and scales, so that the
    comparison sees them: freshly built they are the identity."""
    rng = np.random.default_rng(1)
    for layer, _ in _weighted_layers(model):
        if type(layer).__name__ in ("BatchNormalization", "Normalization"):
            layer.set_weights([
                rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.name
                or "gamma" in w.name else
                w.numpy() if w.name == "count" else
                rng.normal(0.0, 0.1, w.shape).astype("float32")
                for w in layer.weights])


def build_config(path: Path):
    return model_lib.build(config_lib.load(path))


def compare(reference, model, batch: int = 2) -> float:
    """Copy `reference`'s weights into `model` layer by layer, and return the largest difference
    of their outputs on random 0..255 images: absolute for probabilities, relative to the largest
    output where that is over 1 (RegNet's logits, from tf-keras: float32 rounding of its own
    convolutions then differs by about 1e-6 of the values).

    On the way it asserts the weight shapes of each pair of layers, and that the output of each
    pair is the same (to 1e-4 of its size): the final probabilities of a randomly initialized
    network are too close to uniform to show, say, a padding moved by one pixel."""
    assert model.count_params() == reference.count_params()
    theirs, ours = _weighted_layers(reference), _weighted_layers(model)
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    for (a, _), (b, _) in zip(theirs, ours):
        assert [tuple(w.shape) for w in b.weights] == [tuple(w.shape) for w in a.weights], \
            (a.name, b.name)
        b.set_weights(a.get_weights())
    # the outputs of the pairs whose reference layer is not inside a nested model
    pairs = [(a, b) for (a, top), (b, _) in zip(theirs, ours) if top]
    reference_class = type(reference)  # keras's (or tf_keras's) Functional
    probes = [
        reference_class(reference.inputs[0], [a.output for a, _ in pairs] + reference.outputs),
        keras.Model(model.inputs[0], [b.output for _, b in pairs] + model.outputs)]
    x = np.random.default_rng(0).uniform(0, 255, (batch, *SHAPE)).astype("float32")
    expected, got = ([np.asarray(t) for t in probe(x, training=False)] for probe in probes)
    for (a, b), e, g in zip(pairs, expected, got):
        assert g.shape == e.shape, (a.name, b.name, g.shape, e.shape)
        scale = max(1.0, float(np.max(np.abs(e))))
        assert np.max(np.abs(g - e)) <= 1e-4 * scale, (a.name, b.name, np.max(np.abs(g - e)))
    assert got[-1].shape == expected[-1].shape
    scale = max(1.0, float(np.max(np.abs(expected[-1]))))
    return float(np.max(np.abs(got[-1] - expected[-1]))) / scale


def _keras_model(factory):
    model = factory(weights=None, input_shape=SHAPE)
    _randomize_statistics(model)
    return model


@pytest.fixture(scope="module")
def efficientnet_b0():
    return _keras_model(keras.applications.EfficientNetB0)


@pytest.fixture(scope="module")
def mobilenet_v3_small():
    return _keras_model(keras.applications.MobileNetV3Small)


@pytest.fixture(scope="module")
def convnext_tiny():
    return _keras_model(keras.applications.ConvNeXtTiny)


@pytest.fixture(scope="module")
def mobilenet():
    return _keras_model(keras.applications.MobileNet)


@pytest.fixture(scope="module")
def resnet50():
    return _keras_model(keras.applications.ResNet50)


@pytest.fixture(scope="module")
def vgg16():
    return _keras_model(keras.applications.VGG16)


@pytest.fixture(scope="module")
def regnetx002():
    # RegNet is in tf-keras (Keras 2) only; Keras 3 has no keras.applications.RegNet*
    tf_keras = pytest.importorskip("tf_keras")
    return _keras_model(tf_keras.applications.RegNetX002)


@pytest.mark.parametrize("config, reference, params", [
    ("efficientnet_b0", "efficientnet_b0", 5_330_571),
    ("mobilenet_v3_small", "mobilenet_v3_small", 2_554_968),
    ("mobilenet", "mobilenet", 4_253_864),
    pytest.param("convnext_tiny", "convnext_tiny", 28_589_128, marks=pytest.mark.slow),
    pytest.param("resnet50", "resnet50", 25_636_712, marks=pytest.mark.slow),
    pytest.param("vgg16", "vgg16", 138_357_544, marks=pytest.mark.slow),
    pytest.param("regnetx_002", "regnetx002", 2_705_640, marks=pytest.mark.optional),
])
def test_config_equals_keras_applications(config, reference, params, request):
    reference = request.getfixturevalue(reference)
    model = build_config(CONFIGS / f"{config}.yaml")
    assert model.count_params() == reference.count_params() == params
    assert compare(reference, model) <= ATOL


@pytest.mark.parametrize("config, reference, old, new", [
    # the stem's stride-2 conv padded top-left instead of bottom-right: same shapes, other values
    ("efficientnet_b0", "efficientnet_b0", "padding: [[0, 1], [0, 1]]",
     "padding: [[1, 0], [1, 0]]"),
    # every stride-1 depthwise conv of MobileNetV3 unpadded: the residual adds no longer fit
    ("mobilenet_v3_small", "mobilenet_v3_small", "${'valid' if stride == 2 else 'same'}",
     "valid"),
])
def test_a_changed_padding_is_caught(config, reference, old, new, request, tmp_path):
    reference = request.getfixturevalue(reference)
    text = (CONFIGS / f"{config}.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1
    path = tmp_path / f"{config}.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    try:
        model = build_config(path)
    except ConfigError as e:  # the shapes no longer fit together
        assert "incompatible shapes" in str(e)
        return
    with pytest.raises(AssertionError):
        assert compare(reference, model) <= ATOL
