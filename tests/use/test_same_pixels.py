"""One image, one set of pixels, one answer in every command: a model trained on grey images
(data.color_mode: grayscale, repeated into 3 channels) whose test folder holds RGB, palette and
grey PNGs gives the same probabilities for each file in `predict`, `eval`, `report` and the
samples of `export`'s parity check (predict, explain and visualize: tests/use/test_trained.py)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnctl.config import load as config_lib
from cnnctl.train import fit as train_lib
from cnnctl.use import evaluate, export, predict, report, trained

CONFIG = """
model:
  name: grey_folders
  input_shape: [16, 16, 3]
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, activation: relu}
    - {type: global_avg_pool2d}
    - {type: dense, units: 3, activation: softmax}
data: {source: folder, train_dir: TRAIN, test_dir: TEST, color_mode: grayscale}
loss: sparse_categorical_crossentropy
train: {epochs: 1, batch_size: 8, seed: 0, tensorboard: false}
"""
MODES = ("rgb", "palette", "grey")


def write_folder(root: Path, per_class: int, seed: int) -> None:
    """Three classes of 16x16 images (red-ish, green-ish, blue-ish), in three file modes."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (16, 16, 3))
            pixels[..., c] += 135
            image = Image.fromarray(pixels.astype(np.uint8))
            mode = MODES[i % 3]
            if mode == "palette":
                image = image.convert("P", palette=Image.Palette.ADAPTIVE)
            elif mode == "grey":
                image = image.convert("L")
            image.save(root / name / f"{mode}{i}.png")


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grey_folders")
    write_folder(root / "train", 12, 0)
    write_folder(root / "test", 3, 1)
    config = root / "grey.yaml"
    config.write_text(CONFIG.replace("TRAIN", str(root / "train")).replace("TEST", str(root / "test")))
    train_lib.train(config_lib.load(config), root / "run", verbose=0)
    return root / "run"


def predicted_probabilities(run: Path, files: list[str]) -> np.ndarray:
    """predict's probabilities of every class, per file, in class order."""
    names = trained.open_model(run).labels()
    rows = predict.run(run, files, top_k=len(names))
    assert [r["path"] for r in rows] == files
    return np.array([[next(t["prob"] for t in r["top"] if t["label"] == n) for n in names]
                     for r in rows])


@pytest.mark.slow
def test_every_command_gives_one_file_the_same_probabilities(grey_run, tmp_path, monkeypatch):
    opened = trained.open_model(grey_run)
    test = opened.test_images()
    files = list(test.files)
    assert len(files) == 9 and {Path(f).name[:3] for f in files} == {"rgb", "pal", "gre"}
    # the run's test images (report, export) are the files as predict reads them
    pixels, status = opened.load_images(files)
    assert [why for _, why in status] == [None] * 9
    np.testing.assert_array_equal(test.x, pixels)
    for image in pixels:  # grey, repeated into 3 channels, whatever the file's mode
        np.testing.assert_array_equal(image[..., 0], image[..., 2])

    probs = predicted_probabilities(grey_run, files)
    np.testing.assert_allclose(probs, opened.model.predict(pixels, verbose=0), atol=1e-6)

    # eval: its loss and accuracy are those of predict's probabilities on the same files
    scored, _, _ = evaluate.run(grey_run)
    labels = test.y
    assert scored["num_samples"] == 9
    assert scored["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == labels)))
    assert scored["loss"] == pytest.approx(float(np.mean(-np.log(probs[np.arange(9), labels]))),
                                           abs=1e-5)

    # report: the probabilities it scores are predict's
    seen = {}
    real = evaluate.report_from_predictions

    def spy(y, outputs, names, from_logits=None):
        seen["report"] = (np.asarray(y), np.asarray(outputs))
        return real(y, outputs, names, from_logits)

    monkeypatch.setattr(evaluate, "report_from_predictions", spy)
    report.run(grey_run, tmp_path / "report.html")
    reported_y, reported = seen["report"]
    np.testing.assert_array_equal(reported_y, labels)
    np.testing.assert_allclose(reported, probs, atol=1e-6)

    # export: the parity check runs on the same pixels
    def fake_export(model, fmt, out, quantize, calibration=None):
        seen["calibration"] = calibration
        return out

    def fake_parity(model, fmt, written, samples, quantize):
        seen["parity"] = samples
        return types.SimpleNamespace(ok=True)

    monkeypatch.setattr(export, "export", fake_export)
    monkeypatch.setattr(export, "parity", fake_parity)
    export.run(grey_run, "savedmodel", tmp_path / "exported", images=9)
    np.testing.assert_array_equal(seen["parity"], pixels)
    np.testing.assert_array_equal(seen["calibration"], pixels)
