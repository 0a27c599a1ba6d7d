"""cnnctl.model.inputs: the preprocessing and augmentation layers in front of the network,
in training and inference, saved and loaded."""

from __future__ import annotations


import numpy as np
import pytest

from cnnctl.model import inputs
from cnnctl.backend import keras
from cnnctl.config.schema import AugmentationConfig, Preprocessing
from cnnctl.errors import CnnctlError


# --------------------------------------------------------------------------- layers
def test_preprocessing_layer_arithmetic(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    layer = inputs.preprocessing_layer(Preprocessing.model_validate(
        {"rescale": 1 / 255, "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]}}), 3)
    expected = (x / 255 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)

    model = keras.Sequential([keras.Input((4, 4, 3)), layer])
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "m.keras")(x).numpy(), expected,
                               rtol=1e-5, atol=1e-5)

    only_mean = inputs.preprocessing_layer(Preprocessing.model_validate(
        {"rescale": None, "normalize": {"mean": [100], "std": [50]}}), 3)
    np.testing.assert_allclose(only_mean(x).numpy(), (x - 100) / 50, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inputs.preprocessing_layer(Preprocessing(), 1)(x).numpy(), x / 255,
                               rtol=1e-6)
    assert inputs.preprocessing_layer(Preprocessing(rescale=None), 3) is None
    with pytest.raises(CnnctlError, match=r"data.preprocessing.normalize.std: needs 1 or 3 values"):
        inputs.preprocessing_layer(Preprocessing.model_validate(
            {"normalize": {"mean": [0.5], "std": [0.2, 0.3]}}), 3)


ALL_AUGMENTATIONS = [
    {"type": "random_flip", "mode": "horizontal"},
    {"type": "random_rotation", "factor": 0.2},
    {"type": "random_zoom", "factor": 0.3},
    {"type": "random_translation", "height_factor": 0.2, "width_factor": 0.2},
    {"type": "random_contrast", "factor": 0.5},
    {"type": "random_brightness", "factor": 0.5},
    {"type": "random_crop", "height": 24, "width": 24},
]


def test_augmentation_layers_act_in_training_only():
    x = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype(np.float32)
    layers = inputs.augmentation_layers(AugmentationConfig.model_validate({"layers": ALL_AUGMENTATIONS}),
                                          seed=3)
    assert [type(layer).__name__ for layer in layers] == [
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
        "RandomBrightness", "RandomPadCrop"]
    for layer in layers:
        assert np.array_equal(layer(x, training=False).numpy(), x), type(layer).__name__
        out = layer(x, training=True).numpy()
        assert out.shape == x.shape and not np.array_equal(out, x), type(layer).__name__
    brightness = layers[5](np.full((4, 2, 2, 3), 128.0, np.float32), training=True).numpy()
    assert brightness.max() > 129 or brightness.min() < 127  # shifts on the 0..255 scale
    assert 0 <= brightness.min() and brightness.max() <= 255


def test_random_crop_is_pad_and_crop():
    x = np.arange(8 * 8, dtype=np.float32).reshape(1, 8, 8, 1) + 1
    crop = inputs.augmentation_layers(AugmentationConfig.model_validate(
        {"layers": [{"type": "random_crop", "height": 12, "width": 12, "fill_mode": "constant"}]}))[0]
    padded = np.pad(x[0, :, :, 0], 2)
    seen = set()
    for _ in range(20):
        out = crop(np.repeat(x, 4, axis=0), training=True).numpy()[..., 0]
        for image in out:  # every output is some 8x8 window of the zero-padded image
            windows = [(dy, dx) for dy in range(5) for dx in range(5)
                       if np.array_equal(padded[dy:dy + 8, dx:dx + 8], image)]
            assert len(windows) == 1
            seen.add(windows[0])
    assert len(seen) > 5  # offsets vary per image and per call
    with pytest.raises(CnnctlError, match="random_crop: height 6 is smaller than the image height 8"):
        keras.Sequential([keras.Input((8, 8, 1)), inputs.RandomPadCrop(6, 10)])
