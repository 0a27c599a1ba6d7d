"""See what the model learned (issue "See what the model learned"): class-activation maps point
at the evidence. The data set: 16x16 noise images, half of them with a bright square in a random
corner ("square"), half without ("empty"); a network trained on it must look at the square."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from cnnctl.use import explain
from cnnctl.use import trained as trained_lib
from cnnctl.errors import CnnctlError

CORNERS = ((0, 0), (0, 11), (11, 0), (11, 11))  # top-left of the 5x5 square


def corner_images(n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels 0 square / 1 empty, corner index or -1)."""
    x = rng.integers(0, 60, (n, 16, 16, 1)).astype(np.uint8)
    y = np.arange(n) % 2
    where = np.where(y == 0, rng.integers(0, 4, n), -1)
    for i, c in enumerate(where):
        if c >= 0:
            top, left = CORNERS[c]
            x[i, top:top + 5, left:left + 5] = rng.integers(220, 256, (5, 5, 1))
    return x, y, where


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cnn_yaml, train_yaml):
    root = tmp_path_factory.mktemp("corners")
    rng = np.random.default_rng(0)
    (x, y, _), (xt, yt, where) = corner_images(768, rng), corner_images(64, rng)
    np.savez(root / "corners.npz", x_train=x, y_train=y, x_test=xt, y_test=yt,
             class_names=np.array(["square", "empty"]))
    config = cnn_yaml(
        name="corners", input_shape="[16, 16, 1]",
        layers=["{type: conv2d, name: conv1, filters: 8, kernel_size: 3, padding: same, "
                "activation: relu}",
                "{type: conv2d, name: conv2, filters: 16, kernel_size: 3, padding: same, "
                "activation: relu}",
                "{type: global_avg_pool2d}",
                "{type: dense, units: 2, activation: softmax}"],
        data="{source: npz, path: DATA}", optimizer="{name: adam, learning_rate: 0.01}",
        train="{epochs: 4, batch_size: 32, seed: 0, tensorboard: false}")
    result = train_yaml(config.replace("DATA", str(root / "corners.npz")), root / "corners.yaml",
                        root / "run")
    assert result["metrics"]["test"]["accuracy"] > 0.95, "the network must learn the task"
    return root / "run", xt.astype(np.float32), where


def quadrant(heat: np.ndarray) -> int:
    """The corner (index into CORNERS) whose quadrant holds the heat map's maximum."""
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    return 2 * int(row >= heat.shape[0] / 2) + int(col >= heat.shape[1] / 2)


@pytest.mark.slow
def test_gradcam_and_cam_peak_on_the_square(trained):
    run, x, where = trained

    model = trained_lib.load_model(run)
    squares = where >= 0
    for heat in (explain.gradcam(model, x[squares])[0], explain.cam(model, x[squares])[0]):
        assert heat.shape == (squares.sum(), 16, 16)
        assert 0 <= heat.min() and heat.max() == pytest.approx(1.0)
        hits = np.mean([quadrant(h) == c for h, c in zip(heat, where[squares])])
        assert hits >= 0.9, hits
    grad, _ = explain.gradcam(model, x[squares])
    cam, _ = explain.cam(model, x[squares])
    assert [quadrant(h) for h in grad] == [quadrant(h) for h in cam]


@pytest.mark.slow
def test_explain_writes_one_figure_per_image(trained, tmp_path):
    run, x, where = trained
    files = []
    for i in (0, 2):  # two "square" test images
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(x[i, :, :, 0].astype(np.uint8)).save(files[-1])
    results = explain.run(run, [str(f) for f in files] + [str(tmp_path / "nothing.png")],
                          out=tmp_path / "out")
    assert [r.get("class") for r in results] == ["square", "square", None]
    assert results[2] == {"path": str(tmp_path / "nothing.png"), "error": "no such file or folder"}
    for r in results[:2]:
        png = Image.open(r["png"])
        assert png.size[0] > 3 * png.size[1] / 2 and 0.5 < r["probability"] <= 1


def test_explain_names_the_layer_in_title_and_file_and_draws_a_colour_bar(trained, tmp_path,
                                                                          monkeypatch):
    run, x, _ = trained
    image = tmp_path / "img.png"
    Image.fromarray(x[0, :, :, 0].astype(np.uint8)).save(image)
    titles = []
    drawn = explain.figure

    def figure(image, heat, title):
        titles.append(title)
        return drawn(image, heat, title)

    monkeypatch.setattr(explain, "figure", figure)
    for layer in ("conv1", "conv2", None):
        explain.run(run, [str(image)], layer=layer, out=tmp_path / "out")
    explain.run(run, [str(image)], method="cam", out=tmp_path / "out")
    # the default is the last conv layer: its file is the same as --layer conv2's
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "img.cam.png", "img.gradcam-conv1.png", "img.gradcam-conv2.png"]
    assert [t.split(", ", 1)[1] for t in titles] == [
        "Grad-CAM at layer conv1", "Grad-CAM at layer conv2", "Grad-CAM at layer conv2",
        "CAM (the maps before global average pooling)"]
    assert titles[0].startswith("img.png: square (")
    fig = drawn(x[0], np.linspace(0, 1, 16).reshape(4, 4), "t")
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [ax.get_title() for ax in fig.axes if ax not in bars] == ["image", "heat map", "overlay"]
    bar, = bars  # the heat map's, from 0 to 1
    assert "evidence for the class" in bar.get_ylabel()
    assert bar.get_ylim() == (0.0, 1.0)


def test_explain_errors(trained):
    run, x, _ = trained

    model = trained_lib.load_model(run)
    with pytest.raises(CnnctlError, match="--layer dense: not a layer with a feature map of this "
                                          "model; choose one of conv1, conv2"):
        explain.gradcam(model, x[:1], layer="dense")
    assert explain.conv_layer(model).name == "conv2"


@pytest.mark.slow
def test_explain_command(trained, tmp_path):
    from typer.testing import CliRunner

    from cnnctl.cli import app

    run, x, _ = trained
    image = tmp_path / "img.png"
    Image.fromarray(x[0, :, :, 0].astype(np.uint8)).save(image)
    result = CliRunner().invoke(app, ["explain", str(run), str(image), "--method", "cam",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"{image}: square" in result.output and (tmp_path / "out" / "img.cam.png").is_file()
    refused = CliRunner().invoke(app, ["explain", str(run), str(image), "--method", "cam",
                                       "--layer", "conv1"])
    assert refused.exit_code == 2
    assert "--layer applies to gradcam" in refused.output and "Traceback" not in refused.output
