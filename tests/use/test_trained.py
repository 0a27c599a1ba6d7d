"""One way to open a trained run: predict, explain and visualize read an image with the same
size and colour mode, so a model trained on grey images (repeated into 3 channels) sees the same
pixels, and gives the same answer, in each of them, whatever the file's own mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnctl.config import load as config_lib
from cnnctl.use import explain
from cnnctl.use import predict
from cnnctl.use import trained
from cnnctl.use import visualize
from cnnctl.train import fit as train_lib

from conftest import write_colour_npz

CONFIG = """
model:
  name: grey
  input_shape: [16, 16, 3]
  layers:
    - {type: conv2d, name: conv, filters: 4, kernel_size: 3, activation: relu}
    - {type: global_avg_pool2d}
    - {type: dense, units: 3, activation: softmax}
data: {source: npz, path: DATA, color_mode: grayscale}
loss: sparse_categorical_crossentropy
train: {epochs: 1, batch_size: 32, seed: 0, tensorboard: false}
"""


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grey")
    write_colour_npz(root / "colours.npz", 96, 12)
    config = root / "grey.yaml"
    config.write_text(CONFIG.replace("DATA", str(root / "colours.npz")))
    train_lib.train(config_lib.load(config), root / "run", verbose=0)
    return root / "run"


@pytest.mark.slow
def test_predict_explain_and_visualize_see_the_same_grey_pixels(grey_run, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    colour = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    rgb, palette = tmp_path / "rgb.png", tmp_path / "palette.png"
    Image.fromarray(colour).save(rgb)
    Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE).save(palette)

    opened = trained.open_model(grey_run)
    assert opened.color_mode == "grayscale" and opened.run_dir == grey_run
    assert opened.labels() == ["0", "1", "2"]
    pixels, status = opened.load_images([str(rgb), str(palette)])
    assert [why for _, why in status] == [None, None]
    for image in pixels:  # grey, repeated into the model's 3 channels
        assert image.shape == (16, 16, 3)
        np.testing.assert_array_equal(image[..., 0], image[..., 1])
        np.testing.assert_array_equal(image[..., 0], image[..., 2])
    # the colour file read as colour would differ: the grey reading is what matters here
    assert not np.array_equal(pixels[0], colour.astype(np.float32))

    seen = {}
    real_gradcam, real_maps = explain.gradcam, visualize.feature_maps

    def gradcam(model, images, layer=None, class_index=None):
        seen["explain"] = np.array(images)
        return real_gradcam(model, images, layer, class_index)

    def feature_maps(model, image):
        seen["visualize"] = np.array(image)
        return real_maps(model, image)

    monkeypatch.setattr(explain, "gradcam", gradcam)
    monkeypatch.setattr(visualize, "feature_maps", feature_maps)
    predicted = predict.run(grey_run, [str(rgb), str(palette)], top_k=3)
    explained = explain.run(grey_run, [str(rgb), str(palette)], out=tmp_path / "explain")
    visualize.run(grey_run, str(rgb), out=tmp_path / "visualize")

    np.testing.assert_array_equal(seen["explain"], pixels)
    np.testing.assert_array_equal(seen["visualize"], pixels[0])
    # one image, one answer: predict's top class and probability are explain's
    for p, e in zip(predicted, explained):
        assert p["top"][0]["label"] == e["class"]
        assert p["top"][0]["prob"] == pytest.approx(e["probability"], abs=1e-6)
    want = opened.model.predict(pixels, verbose=0)
    assert [p["top"][0]["prob"] for p in predicted] == pytest.approx(want.max(-1), abs=1e-6)


def test_open_model_of_a_keras_file_in_a_run_finds_the_run(grey_run):
    opened = trained.open_model(grey_run / "checkpoints" / "best.keras")
    assert opened.run_dir == grey_run and opened.color_mode == "grayscale"
    assert trained.run_dir_of(grey_run.parent) is None
