"""cnnctl.use.trained, one way to open a trained run: predict, explain and visualize read an
image with the same size and colour mode, so a model trained on grey images (repeated into 3
channels) sees the same pixels, and gives the same answer, in each of them, whatever the file's
own mode; `load_model` (safe mode, and a clear line for every broken file) and the class names
beside a model."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnctl.use import explain
from cnnctl.use import predict
from cnnctl.use import trained
from cnnctl.use import visualize
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError

@pytest.fixture(scope="module")
def grey_run(tmp_path_factory, colour_cnn_yaml, train_yaml, colour_npz) -> Path:
    """One epoch on coloured noise read as grey (data.color_mode: grayscale), repeated into the
    model's 3 channels."""
    root = tmp_path_factory.mktemp("grey")
    colour_npz(root / "colours.npz", 96, 12)
    config = colour_cnn_yaml(
        name="grey", data="{source: npz, path: DATA, color_mode: grayscale}", optimizer=None,
        layers=["{type: conv2d, name: conv, filters: 4, kernel_size: 3, activation: relu}",
                "{type: global_avg_pool2d}", "{type: dense, units: 3, activation: softmax}"])
    train_yaml(config.replace("DATA", str(root / "colours.npz")), root / "grey.yaml", root / "run")
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


# --------------------------------------------------------------------------- load_model, class names
def small_model() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])


def test_load_model_from_run_directory_and_file(tmp_path, fashion_mnist_cnn, fashion_mnist_arrays):
    model, (_, (x, _)) = fashion_mnist_cnn, fashion_mnist_arrays
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    model.save(run / "checkpoints" / "best.keras")
    small_model().save(run / "checkpoints" / "last.keras")
    loaded = trained.load_model(run)
    np.testing.assert_allclose(loaded.predict(x[:20], verbose=0), model.predict(x[:20], verbose=0),
                               atol=1e-6)
    assert trained.load_model(run / "checkpoints" / "last.keras").output_shape == (None, 3)
    # Without best.keras a run falls back to last.keras.
    (run / "checkpoints" / "best.keras").unlink()
    assert trained.load_model(run).output_shape == (None, 3)


def test_load_model_errors(tmp_path):
    missing = tmp_path / "nothing"
    with pytest.raises(CnnctlError) as e:
        trained.load_model(missing)
    assert str(e.value) == (f"no model at {missing}: no such file or directory; pass a run "
                            "directory or a .keras file")

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CnnctlError) as e:
        trained.load_model(run)
    assert str(e.value) == (f"no checkpoint in {run}/checkpoints: the run did not finish an "
                            "epoch; train again or pass a .keras file")

    text = tmp_path / "x.keras"
    text.write_text("not a model\n")
    with pytest.raises(CnnctlError) as e:
        trained.load_model(text)
    assert str(e.value) == (f"{text} is not a Keras model file (.keras zip); pass a .keras file "
                            "saved by cnnctl or keras")

    good = tmp_path / "good.keras"
    small_model().save(good)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(CnnctlError) as e:
        trained.load_model(truncated)
    assert str(e.value) == (f"{truncated} is corrupt: the .keras zip is truncated; use another "
                            "checkpoint or train again")

    # Damaged bytes inside an otherwise whole zip fail Keras's read, not our zip check.
    damaged = tmp_path / "damaged.keras"
    raw = bytearray(good.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
    damaged.write_bytes(bytes(raw))
    with pytest.raises(CnnctlError, match=r"damaged\.keras is corrupt \("):
        trained.load_model(damaged)


def test_load_model_empty_file_and_unknown_layer(tmp_path):
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    with pytest.raises(CnnctlError) as e:
        trained.load_model(empty)
    assert str(e.value) == (f"{empty} is empty (corrupt): the save was interrupted; use another "
                            "checkpoint or train again")

    good = tmp_path / "good.keras"
    small_model().save(good)
    unknown = tmp_path / "unknown.keras"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(unknown, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "config.json":
                data = data.replace(b'"class_name": "Dense"', b'"class_name": "FancyDense"')
            target.writestr(info, data)
    with pytest.raises(CnnctlError) as e:
        trained.load_model(unknown)
    assert str(e.value).startswith(f"cannot load {unknown}: ")
    assert "FancyDense" in str(e.value)
    assert str(e.value).endswith("; it may use custom layers cnnctl does not know, or come from "
                                 "another Keras version")

    zipped_text = tmp_path / "notes.keras"
    with zipfile.ZipFile(zipped_text, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(CnnctlError) as e:
        trained.load_model(zipped_text)
    assert str(e.value) == (f"{zipped_text} is not a Keras model file (.keras zip): it has no "
                            "config.json; pass a .keras file saved by cnnctl or keras")


def test_load_model_refuses_lambda_layers(tmp_path):
    path = tmp_path / "lambda.keras"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2),
                              keras.layers.Dense(2)])
    model.save(path)
    with pytest.raises(CnnctlError) as e:
        trained.load_model(path)
    assert str(e.value) == (f"refused to load {path}: it contains Python code (Lambda layer) "
                            "that safe mode will not run; only load models you trust, and "
                            "rebuild this one without Lambda layers or lambdas")


def test_class_names_for(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = run / "checkpoints" / "best.keras"
    assert trained.class_names_for(run) is None
    assert trained.class_names_for(checkpoint) is None
    (run / "class_names.json").write_text(json.dumps(["cat", "dog"]))
    assert trained.class_names_for(run) == ["cat", "dog"]
    assert trained.class_names_for(checkpoint) == ["cat", "dog"]
    exported = tmp_path / "export" / "model.keras"
    exported.parent.mkdir()
    shutil.copy(run / "class_names.json", exported.parent / "class_names.json")
    assert trained.class_names_for(exported) == ["cat", "dog"]
    (run / "class_names.json").write_text('{"cat": 0}')
    with pytest.raises(CnnctlError) as e:
        trained.class_names_for(run)
    assert str(e.value) == (f"{run}/class_names.json is not a JSON list of strings; fix it or "
                            "delete it and pass the class names another way")


@pytest.mark.slow
def test_a_model_of_any_size_takes_its_images_at_the_runs_image_size(tmp_path, cnn_yaml,
                                                                     train_yaml, cnnctl):
    config = cnn_yaml(
        name="any_size", input_shape="[null, null, 1]",
        layers=["{type: conv2d, filters: 8, kernel_size: 3, activation: relu}",
                "{type: global_avg_pool2d}", "{type: dense, units: 10, activation: softmax}"],
        data='{source: npz, path: "cnnctl://fashion_mnist_small.npz", image_size: [28, 28], '
             'max_train_samples: 500, max_test_samples: 100}',
        train="{epochs: 1, batch_size: 64, seed: 0, tensorboard: false}")
    run = train_yaml(config, tmp_path / "any_size.yaml", tmp_path / "run")["run_dir"]
    opened = trained.open_model(run)
    assert opened.model.input_shape == (None, None, None, 1)
    assert opened.input_shape == (28, 28, 1)

    evaluated = cnnctl("eval", run, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["num_samples"] == 100
    image = tmp_path / "shirt.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 31), np.uint8)).save(image)
    predicted = cnnctl("predict", run, image, "--json")
    assert predicted.exit_code == 0, predicted.output
    assert len(json.loads(predicted.stdout)[0]["top"]) == 3

    # without its run there is no size to read images at
    alone = tmp_path / "alone.keras"
    shutil.copy(run / "checkpoints" / "best.keras", alone)
    with pytest.raises(CnnctlError) as e:
        trained.open_model(alone)
    assert str(e.value).startswith(f"{alone}: the model's input [None, None, None, 1] has no "
                                   "fixed height and width")
