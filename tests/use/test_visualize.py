"""cnnctl.use.visualize: the first layer's filters, the feature maps of one image and the model
diagram of a trained run; what to install where the diagram cannot be drawn."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.use import trained
from cnnctl.cli import app


@pytest.fixture(scope="module")
def run(fashion_mnist_run) -> Path:
    """conftest's finished run `reported`: one conv of 8 filters on 28x28 grey images."""
    return fashion_mnist_run


@pytest.mark.optional
@pytest.mark.slow
def test_visualize_filters_feature_maps_and_diagram(run, tmp_path):
    from cnnctl.use import visualize

    model = trained.load_model(run)
    image = np.load(Path(__file__).resolve().parents[2] / "cnnctl" / "data" /
                    "fashion_mnist_small.npz")["x_test"][0]
    Image.fromarray(image).save(tmp_path / "shirt.png")
    maps = visualize.feature_maps(model, image[..., None].astype(np.float32))
    conv = model.layers[-1].layers[0]
    want = np.asarray(conv(image[None, ..., None].astype(np.float32) / 255))[0]
    assert list(maps) == [conv.name] and maps[conv.name].shape == (26, 26, 8)
    np.testing.assert_allclose(maps[conv.name], want, rtol=1e-5, atol=1e-6)

    result = CliRunner().invoke(app, ["visualize", str(run), "--image", str(tmp_path / "shirt.png"),
                                      "--out", str(tmp_path / "vis")])
    assert result.exit_code == 0, result.output
    names = {p.name for p in (tmp_path / "vis").iterdir()}
    assert {"filters.png", f"featuremaps_{conv.name}.png"} <= names
    if shutil.which("dot") and importlib.util.find_spec("pydot"):
        assert "model.png" in names
    else:
        assert "no model diagram" in result.output
    for name in names:
        Image.open(tmp_path / "vis" / name).load()
    bad = CliRunner().invoke(app, ["visualize", str(run), "--image", str(tmp_path / "nope.png"),
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--image" in bad.output and "file not found" in bad.output
    assert not (tmp_path / "bad").exists()  # bad input writes nothing


def test_the_diagram_without_pydot_or_graphviz_names_what_to_install(monkeypatch):
    from cnnctl.use import visualize

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pydot" else real(name, *a))
    assert visualize.diagram_missing() == (
        'it needs the [diagram] extra: pip install -e ".[diagram]" in the cnnctl checkout, and '
        "Graphviz (apt-get install graphviz)")
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setenv("PATH", "")
    assert visualize.diagram_missing() == (
        "it needs Graphviz's `dot` program: apt-get install graphviz (or brew install graphviz)")
