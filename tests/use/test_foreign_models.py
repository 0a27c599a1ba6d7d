""".keras files from elsewhere (several inputs or outputs, a per-pixel output, a non-image input):
`predict`, `explain` and `eval` either work (one image input, one class-score output) or stop
with one line that names the file and says what cnnctl works with; never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cnnctl.backend import keras
from cnnctl.cli import app
from cnnctl.errors import CnnctlError
from cnnctl.use import trained

layers = keras.layers


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """root/{cat,dog}/N.png: 2 tiny RGB images per class."""
    root = tmp_path_factory.mktemp("foreign-data")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png")
    return root


def save(model, folder: Path, name: str = "m.keras") -> Path:
    path = Path(folder) / name
    model.save(path)
    return path


def commands(model: Path, data: Path, out: Path) -> list[list[str]]:
    image = str(data / "cat" / "0.png")
    return [["predict", str(model), image],
            ["explain", str(model), image, "--out", str(out)],
            ["eval", str(model), "--data", str(data)]]


def refused(model: Path, data: Path, out: Path) -> list[str]:
    """Run every command on `model`; each must exit 2 with one line naming it: the lines."""
    lines = []
    for args in commands(model, data, out):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert "Traceback" not in result.output
        text = result.output.strip()
        assert len(text.splitlines()) == 1 and str(model) in text, text
        lines.append(text)
    return lines


def two_outputs():
    i = keras.Input((8, 8, 3))
    x = layers.Flatten()(i)
    return keras.Model(i, [layers.Dense(10, activation="softmax")(x),
                           layers.Dense(3, activation="softmax")(x)])


def test_two_outputs_are_refused_in_one_line(tmp_path, data):
    model = save(two_outputs(), tmp_path)
    lines = refused(model, data, tmp_path / "x")
    assert all(line.endswith(f"{model}: the model has 2 outputs ([None, 10], [None, 3]); "
                             f"{trained.CAN_DO}") for line in lines)


@pytest.mark.parametrize("build, says", [
    (lambda: keras.Model(i := keras.Input((8, 8, 3)), layers.Conv2D(3, 1)(i)),
     "the model's output [None, 8, 8, 3] is a map per pixel: it looks like a segmentation or "
     "dense-prediction model"),
    (lambda: keras.Model(i := keras.Input((8, 8, 3)),
                         layers.Reshape((4, 48))(layers.Conv2D(3, 1)(i))),
     "the model's output [None, 4, 48] is not a vector of class scores"),
    (lambda: keras.Model(i := keras.Input((8,)), layers.Dense(3, activation="softmax")(i)),
     "the model's input [None, 8] is not an image [batch, height, width, channels]"),
    (lambda: keras.Model([a := keras.Input((8, 8, 3)), b := keras.Input((4,))],
                         layers.Dense(2)(layers.Concatenate()([layers.Flatten()(a), b]))),
     "the model has 2 inputs ([None, 8, 8, 3], [None, 4])"),
    (lambda: keras.Model(i := keras.Input((8, 8, 2)), layers.Dense(2)(layers.Flatten()(i))),
     "the model's input [None, 8, 8, 2] has 2 channels, not 1 (grayscale) or 3 (rgb)"),
])
def test_each_kind_of_foreign_model_is_named(tmp_path, data, build, says):
    model = save(build(), tmp_path)
    with pytest.raises(CnnctlError) as caught:
        trained.open_model(model)
    assert str(caught.value).startswith(f"{model}: {says}")
    assert "\n" not in str(caught.value)
    assert all(says in line for line in refused(model, data, tmp_path / "x"))


def test_a_rank_one_output_is_refused_and_one_score_is_a_binary_classifier(tmp_path):
    i = keras.Input((8, 8, 3))
    binary = save(keras.Model(i, layers.Dense(1, activation="sigmoid")(layers.Flatten()(i))),
                  tmp_path)
    assert trained.open_model(binary).model.output_shape == (None, 1)
    fake = type("Fake", (), {"inputs": [keras.KerasTensor((None, 8, 8, 3))],
                             "outputs": [keras.KerasTensor((None,))]})()
    with pytest.raises(CnnctlError, match=r"^f.keras: the model's output \[None\] is not a "
                                          r"vector of class scores; cnnctl evaluates"):
        trained.check_classifier(fake, "f.keras")


shapes = st.sampled_from([(4,), (4, 3), (6, 6, 1), (6, 6, 3)])  # ranks 2-4 with the batch
heads = st.tuples(st.integers(2, 4), st.integers(1, 4))  # (rank with the batch, classes)
specs = st.one_of(  # a third of them image classifiers, the rest anything
    st.tuples(st.tuples(st.sampled_from([(6, 6, 1), (6, 6, 3)])),
              st.tuples(st.tuples(st.just(2), st.integers(1, 4)))),
    st.tuples(st.lists(shapes, min_size=1, max_size=3), st.lists(heads, min_size=1, max_size=3)),
    st.tuples(st.lists(shapes, min_size=1, max_size=3), st.lists(heads, min_size=1, max_size=3)))


def build(spec):
    """A small functional model: these input shapes, these (rank, size) outputs."""
    inputs, flats = [], []
    for shape in spec[0]:
        x = keras.Input(shape)
        inputs.append(x)
        flats.append(x if len(shape) == 1 else layers.Flatten()(
            layers.Conv2D(2, 3)(x) if len(shape) == 3 else x))
    joined = flats[0] if len(flats) == 1 else layers.Concatenate()(flats)
    outputs = []
    for rank, classes in spec[1]:
        if rank == 2:
            outputs.append(layers.Dense(classes, activation="softmax" if classes > 1 else "sigmoid")(joined))
        else:
            y = layers.Dense(classes * 4, activation="relu")(joined)
            outputs.append(layers.Reshape((4, classes) if rank == 3 else (2, 2, classes))(y))
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0])


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=specs)
def test_any_model_works_or_is_refused_in_one_line(tmp_path, data, spec):
    model = build(spec)
    ins, outs = model.inputs, model.outputs
    valid = (len(ins) == 1 and len(ins[0].shape) == 4 and len(outs) == 1
             and len(outs[0].shape) == 2)
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = save(model, folder)
    for i, args in enumerate(commands(path, data, folder / "explained")):
        result = CliRunner().invoke(app, args)
        assert "Traceback" not in result.output
        if valid:  # eval may still refuse the data (2 classes) for a model of other classes
            assert result.exit_code == 0 or (i == 2 and result.exit_code == 2), (
                args, result.output, result.exception)
        else:
            assert result.exit_code == 2, (args, result.output, result.exception)
            text = result.output.strip()
            assert len(text.splitlines()) == 1 and str(path) in text, text
    seen.add(valid)


seen: set[bool] = set()


def test_the_random_models_were_both_valid_and_foreign():
    assert seen in ({True, False}, set())  # empty when run alone
