"""cnnctl.use.predict: top-k labels for files, folders and globs with a real (tiny) Keras model."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cnnctl.model import inputs
from cnnctl.data import images
from cnnctl.use import predict as predict_lib
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError

COLOURS = ["red", "green", "blue"]


def colour_model(units: int = 3, activation: str | None = "softmax") -> keras.Model:
    """Mean colour of the image -> class: a red picture is most likely "red"."""
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(units, activation=activation)])
    kernel = np.eye(3, dtype=np.float32) if units == 3 else np.array([[1], [-1], [0]], np.float32)
    kernel /= 25
    model.layers[-1].set_weights([kernel, np.zeros(units, np.float32)])
    return model


@pytest.fixture
def pictures(tmp_path):
    """tmp/red/a.png, tmp/green/b.jpg, tmp/nested/deeper/blue/c.png (any size), a broken file."""
    made = {}
    for name, colour, size in (("red/a.png", (230, 20, 20), (30, 17)), ("green/b.jpg", (10, 240, 30), (8, 8)),
                               ("nested/deeper/blue/c.png", (0, 0, 250), (64, 64))):
        path = tmp_path / name
        path.parent.mkdir(parents=True)
        Image.new("RGB", size, colour).save(path)
        made[name] = str(path)
    (tmp_path / "green" / "broken.jpg").write_text("not a jpeg")
    (tmp_path / "green" / "notes.txt").write_text("not an image: not listed")
    return tmp_path, made


def test_predict_files_folders_and_globs(pictures):
    root, made = pictures
    inputs = [made["red/a.png"], str(root / "nested"), str(root / "green" / "*.jpg"),
              str(root / "missing.png"), str(root / "*.tiff")]
    results = predict_lib.predict(colour_model(), COLOURS, inputs, top_k=2, batch_size=2)
    assert [r["path"] for r in results] == [
        made["red/a.png"], made["nested/deeper/blue/c.png"], str(root / "green" / "b.jpg"),
        str(root / "green" / "broken.jpg"), str(root / "missing.png"), str(root / "*.tiff")]
    assert [r["top"][0]["label"] for r in results[:3]] == ["red", "blue", "green"]
    for r in results[:3]:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 2 and probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1 + 1e-6
        assert all(isinstance(p, float) for p in probs)
    assert results[3]["error"].startswith("not an image") and "top" not in results[3]
    assert results[4] == {"path": str(root / "missing.png"), "error": "no such file or folder"}
    assert results[5] == {"path": str(root / "*.tiff"), "error": "no image files match this pattern"}


def test_predict_probabilities_are_the_models(pictures):
    root, made = pictures
    model = colour_model()
    results = predict_lib.predict(model, COLOURS, [str(root)], top_k=5)
    files = [r["path"] for r in results if "top" in r]
    batch, _ = images.load_images(files, (8, 8, 3))
    expected = model.predict_on_batch(batch)
    for r, p in zip([r for r in results if "top" in r], expected):
        assert len(r["top"]) == 3  # top_k is capped at the number of classes
        got = {t["label"]: t["prob"] for t in r["top"]}
        assert got == pytest.approx(dict(zip(COLOURS, p.tolist())), abs=1e-6)
    assert sorted(files) == sorted(made.values())  # the folder, recursively; broken.jpg errors


def test_sigmoid_and_logit_outputs(pictures):
    _, made = pictures
    sigmoid = predict_lib.predict(colour_model(1, "sigmoid"), ["cyan", "red"], [made["red/a.png"]])
    top = sigmoid[0]["top"]
    assert [t["label"] for t in top] == ["red", "cyan"]
    assert top[0]["prob"] + top[1]["prob"] == pytest.approx(1.0)
    logits = predict_lib.predict(colour_model(3, None), None, [made["nested/deeper/blue/c.png"]])
    probs = [t["prob"] for t in logits[0]["top"]]
    assert logits[0]["top"][0]["label"] == "2" and sum(probs) == pytest.approx(1.0)


def test_class_names_must_fit_the_model(pictures):
    _, made = pictures
    with pytest.raises(CnnctlError, match="the model predicts 3 classes but there are 2 class names"):
        predict_lib.predict(colour_model(), ["a", "b"], [made["red/a.png"]])


def test_true_label():
    assert predict_lib.true_label("data/test/cat/1.jpg", ["cat", "dog"]) == "cat"
    assert predict_lib.true_label("photos/1.jpg", ["cat", "dog"]) is None


def test_table_and_csv(pictures):
    root, made = pictures
    results = predict_lib.predict(colour_model(), COLOURS,
                                  [made["red/a.png"], str(root / "green" / "broken.jpg")])
    table = predict_lib.format_table(results).splitlines()
    assert table[0].split() == ["path", "top1", "prob", "top2", "prob", "top3", "prob"]
    assert table[1].startswith(made["red/a.png"]) and table[1].split()[1] == "red"
    assert float(table[1].split()[2]) == pytest.approx(results[0]["top"][0]["prob"], abs=1e-3)
    assert table[2].split(None, 1)[1].startswith("error: not an image")

    rows = list(csv.reader(io.StringIO(predict_lib.to_csv(results))))
    assert rows[0] == ["path", "top1_label", "top1_prob", "top2_label", "top2_prob", "top3_label",
                       "top3_prob", "error"]
    assert rows[1][:2] == [made["red/a.png"], "red"] and rows[1][-1] == ""
    assert float(rows[1][2]) == pytest.approx(results[0]["top"][0]["prob"], abs=1e-6)
    assert rows[2][1:7] == [""] * 6 and rows[2][7].startswith("not an image")


def test_predict_grey_model_on_colour_files(pictures, tmp_path):
    root, made = pictures
    grey = keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(2, activation="softmax")])
    shutil.copy(made["green/b.jpg"], tmp_path / "copy.jpg")
    results = predict_lib.predict(grey, ["x", "y"], [str(tmp_path / "copy.jpg")], top_k=1)
    assert len(results[0]["top"]) == 1 and results[0]["top"][0]["label"] in ("x", "y")


def test_run_loads_a_saved_model_and_plots(pictures, tmp_path):
    """`cnnctl predict MODEL.keras ...`: class names from the file beside it; a model with
    cnnctl's pad-and-crop augmentation loads in safe mode; the plot is written."""
    root, made = pictures
    core = colour_model()
    model = keras.Sequential([keras.Input((8, 8, 3)), inputs.RandomPadCrop(12, 12), *core.layers])
    model.save(tmp_path / "model.keras")
    (tmp_path / "class_names.json").write_text(json.dumps(COLOURS))
    results = predict_lib.run(tmp_path / "model.keras", [str(root / "red"), made["green/b.jpg"]],
                              top_k=1, plot=tmp_path / "sheet.png")
    assert [(r["path"], r["top"][0]["label"]) for r in results] == [
        (made["red/a.png"], "red"), (made["green/b.jpg"], "green")]
    assert (tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(CnnctlError, match="none of the images could be read; nothing to plot"):
        predict_lib.run(tmp_path / "model.keras", [str(root / "green" / "broken.jpg")],
                        plot=tmp_path / "none.png")


def test_predict_fails_when_no_input_could_be_classified(pictures, tmp_path):
    from typer.testing import CliRunner

    from cnnctl.cli import app

    root, made = pictures
    colour_model().save(tmp_path / "model.keras")
    broken, missing = root / "green" / "broken.jpg", root / "missing.png"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "model.keras"), str(broken), str(missing)])
    assert result.exit_code == 2
    width = max(len(str(broken)), len(str(missing)))
    assert result.stdout.splitlines()[1:] == [
        f"{str(broken):<{width}}  error: not an image (unknown or damaged file format)",
        f"{str(missing):<{width}}  error: no such file or folder"]
    assert result.stderr == ("none of the 2 input(s) could be classified (see the errors above); "
                             "give image files, folders of images or globs\n")
    one = CliRunner().invoke(app, ["predict", str(tmp_path / "model.keras"), made["red/a.png"], str(missing)])
    assert one.exit_code == 0, one.output  # one readable image is a result
