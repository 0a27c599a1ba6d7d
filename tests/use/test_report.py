"""`cnnctl report`: one self-contained HTML file whose embedded images decode, opened in headless
Chromium without console errors."""

from __future__ import annotations

import base64
import importlib.util
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.config import load as config_lib
from cnnctl.use import trained
from cnnctl.use import report
from cnnctl.train import fit as train_lib
from cnnctl.cli import app
from cnnctl.errors import CnnctlError

CONFIG = """
model:
  name: reported
  input_shape: [28, 28, 1]
  layers:
    - {type: conv2d, filters: 8, kernel_size: 3, activation: relu}
    - {type: max_pool2d, pool_size: 2}
    - {type: flatten}
    - {type: dense, units: 10, activation: softmax}
data: {source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 512, max_test_samples: 200, validation_split: 0.2}
optimizer: {name: adam, learning_rate: 0.003}
loss: categorical_crossentropy
train: {epochs: 2, batch_size: 64, seed: 1, tensorboard: false}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    config = root / "reported.yaml"
    config.write_text(CONFIG)
    train_lib.train(config_lib.load(config), root / "run", verbose=0)
    return root / "run"


def embedded(text: str) -> list[Image.Image]:
    images = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', text):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        images.append(image)
    return images


@pytest.mark.slow
def test_report_is_one_file_with_every_section_and_decodable_images(run, tmp_path):
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.html").read_text()
    for heading in ("Test metrics", "Learning curves", "Per class", "Confusion matrix",
                    "Most confident mistakes", "Where the network looked", "Config",
                    "Environment"):
        assert f"<h2>{heading}</h2>" in text
    assert "<title>reported: test accuracy 0." in text and "<h1>reported: test accuracy 0." in text
    assert "<h2>Model</h2>" in text and "params: 1" in text and "conv2d" in text
    # the config as written first, the resolved one folded away
    own = text.index("reported.yaml, as written")
    assert own < text.index("<details><summary>resolved config") < text.index("shuffle_buffer: 10000")
    assert "max_train_samples: 512" in text and "T-shirt/top" in text
    # the headline's split everywhere: the run's 200 of the file's 1,000 test images
    said = "all 200 test images (data.max_test_samples keeps 200 of the 1,000)"
    assert text.count(said) == 3 and "the first" not in text.split("<h2>Model</h2>")[0]
    # curves, confusion matrix, the mistakes sheet, 4 Grad-CAM figures
    pictures = embedded(text)
    assert len(pictures) == 7 and all(p.size[0] > 200 for p in pictures)


@pytest.mark.slow
def test_report_of_image_files_names_them_and_says_how_many_of_the_split(cifar_folders, tmp_path):
    config = tmp_path / "folders.yaml"
    config.write_text(f"""
model:
  name: folders
  input_shape: [32, 32, 3]
  layers:
    - {{type: conv2d, filters: 4, kernel_size: 3, activation: relu}}
    - {{type: global_avg_pool2d}}
    - {{type: dense, units: 3, activation: softmax}}
data: {{source: folder, train_dir: "{cifar_folders / 'train'}", test_dir: "{cifar_folders / 'test'}"}}
loss: categorical_crossentropy
train: {{epochs: 1, batch_size: 30, seed: 1, tensorboard: false}}
""")
    train_lib.train(config_lib.load(config, ["train.seed=2"]), tmp_path / "run", verbose=0)
    own = (tmp_path / "run" / "source_config.yaml").read_text()
    assert own.startswith(f"# {config}, as written; run with --set train.seed=2 (the resolved")
    assert own.endswith(config.read_text())

    page = report.run(tmp_path / "run", tmp_path / "r.html", limit=25)
    text = page.read_text()
    assert text.count("25 of 60 test images") == 3  # per class, confusion matrix, mistakes
    assert "all 60" not in text
    # the pictures are titled with the image files (the file names are drawn into the PNGs,
    # so look at what the report draws them from)
    test = trained.test_arrays(tmp_path / "run", (32, 32, 3), 25)
    assert len(test.y) == 25 and test.total == 60 and test.held == 60
    assert test.name(0).startswith(str(cifar_folders / "test")) and test.name(0).endswith(".jpg")
    assert not re.search(r'src="(?!data:)', text), "everything is embedded: no outside files"


def test_report_needs_a_finished_run(tmp_path):
    with pytest.raises(CnnctlError, match="no metrics.json; report a finished run directory"):
        report.build(tmp_path)


@pytest.mark.optional
@pytest.mark.slow
def test_report_opens_in_headless_chromium(run, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    page = report.run(run, tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
         "--v=0", "--window-size=1200,3000", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    image = Image.open(shot)
    assert image.size == (1200, 3000)
    pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # a page was drawn, not a blank screen


@pytest.mark.optional
@pytest.mark.slow
def test_visualize_filters_feature_maps_and_diagram(run, tmp_path):
    from cnnctl.use import visualize

    model = trained.load_model(run)
    image = np.load(Path(__file__).resolve().parents[1] / "cnnctl" / "data" /
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
