"""`cnnctl report`: one self-contained HTML file whose embedded images decode, opened in headless
Chromium without console errors."""

from __future__ import annotations

import base64
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

@pytest.fixture(scope="module")
def run(fashion_mnist_run) -> Path:
    """conftest's finished run `reported` (2 epochs on 512 shipped Fashion-MNIST images, its
    200 first test images, written by reported.yaml)."""
    return fashion_mnist_run


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
def test_report_of_image_files_names_them_and_says_how_many_of_the_split(cifar_folders, tmp_path,
                                                                         colour_cnn_yaml):
    config = tmp_path / "folders.yaml"
    config.write_text(colour_cnn_yaml(
        name="folders", input_shape="[32, 32, 3]",
        data=f"{{source: folder, train_dir: \"{cifar_folders / 'train'}\", "
             f"test_dir: \"{cifar_folders / 'test'}\"}}",
        optimizer=None, loss="categorical_crossentropy",
        train="{epochs: 1, batch_size: 30, seed: 1, tensorboard: false}"))
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
