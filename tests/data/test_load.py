"""cnnctl.data.load: the training pipelines of a data set (the train stream reshuffled per
epoch, files that cannot be read left out, config mismatches, augmentation in the pipeline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnctl.data import load as data_lib
from cnnctl.config.schema import Config
from cnnctl.errors import CnnctlError


def test_train_is_reshuffled_each_epoch_with_the_seed(tmp_path, load_splits, epoch_of, ids_npz,
                                                      image_ids):
    source = {"source": "npz", "path": str(ids_npz(tmp_path / "ids.npz"))}
    a = load_splits(source, input_shape=(6, 6, 3), seed=5, batch_size=32)
    assert a.steps_per_epoch == 10  # 300 images, batch 32: the last batch holds 12
    first, second = image_ids(epoch_of(a, 0)), image_ids(epoch_of(a, 1))
    assert sorted(first) == sorted(second) == list(range(300))
    assert list(first) != list(second) and list(first) != list(range(300))
    # the endless stream is epoch 0 then epoch 1 ..., batch for batch
    stream = image_ids(a.train.take(20))
    assert list(stream) == list(first) + list(second)
    # the order depends on (seed, epoch) only: a new load, or resuming mid-epoch, sees the same
    again = load_splits(source, input_shape=(6, 6, 3), seed=5, batch_size=32)
    assert list(image_ids(epoch_of(again, 1))) == list(second)
    assert list(image_ids(epoch_of(again, 1, step=4))) == list(second[4 * 32:])
    assert list(image_ids(again.train_from(0, 9).take(2))) == list(first[9 * 32:]) + list(second[:32])
    other = load_splits(source, input_shape=(6, 6, 3), seed=6, batch_size=32)
    assert list(image_ids(epoch_of(other, 0))) != list(first)


def test_folder_skips_and_lists_unreadable_files(cifar_folders, tmp_path, load_splits, collect,
                                                 epoch_of):
    root = tmp_path / "train"
    shutil.copytree(cifar_folders / "train", root)
    good = sorted((root / "cat").iterdir())[0].read_bytes()
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "cat" / "notes.JPG").write_text("this is not a picture")
    (root / "ship" / "cut.jpeg").write_bytes(good[: len(good) // 2])
    (root / "ship" / "readme.txt").write_text("ignored: not an image extension")
    splits = load_splits({"source": "folder", "train_dir": str(root)}, input_shape=(32, 32, 3),
                         splits=("train",))
    reasons = {Path(p).name: r for p, r in splits.skipped}
    assert set(reasons) == {"empty.jpg", "notes.JPG", "cut.jpeg"}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.JPG"].startswith("not an image")
    assert reasons["cut.jpeg"] == "truncated image (the file ends early)"
    assert splits.class_counts["train"] == {"airplane": 20, "cat": 20, "ship": 20}
    assert len(collect(epoch_of(splits))[0]) == 60  # the pipeline never meets the bad files


# --------------------------------------------------------------------------- shapes, modes
def test_shape_and_mode_mismatches_are_config_errors(load_splits):
    with pytest.raises(CnnctlError, match=r"data.image_size: \[64, 64\] differs from "
                                          r"model.input_shape \[32, 32, 3\]"):
        load_splits({"source": "npz", "path": "cnnctl://fashion_mnist_small.npz", "image_size": [64, 64]},
                    input_shape=(32, 32, 3))
    with pytest.raises(CnnctlError, match="data.color_mode: rgb gives 3 channels"):
        load_splits({"source": "npz", "path": "cnnctl://fashion_mnist_small.npz", "color_mode": "rgb"})
    with pytest.raises(CnnctlError, match="the config has no `data:` section"):
        data_lib.load(Config.model_validate({"model": {"input_shape": [8, 8, 1]}}),
                      input_shape=(8, 8, 1), label_mode="int")


def test_pipeline_augmentation_touches_train_only(tmp_path, load_splits, collect, epoch_of):
    """placement: pipeline flips train images (asymmetric ones), never val or test."""
    n = 64
    x = np.zeros((n, 4, 4, 1), np.uint8)
    x[:, :, 0, 0] = 200  # a bright left column
    np.savez(tmp_path / "left.npz", x_train=x, y_train=np.zeros(n, int), x_test=x, y_test=np.zeros(n, int))
    splits = load_splits({"source": "npz", "path": str(tmp_path / "left.npz"), "validation_split": 0.5},
                         input_shape=(4, 4, 1), augmentation={"placement": "pipeline", "layers": [
                             {"type": "random_flip", "mode": "horizontal"}]})
    train, _ = collect(epoch_of(splits))
    flipped = train[:, 0, 3, 0] == 200
    assert 0 < flipped.sum() < len(train)
    for split in (splits.val, splits.test):
        images_, _ = collect(split)
        assert np.all(images_[:, :, 0, 0] == 200) and np.all(images_[:, :, 3, 0] == 0)
    model_placed = load_splits({"source": "npz", "path": str(tmp_path / "left.npz")}, input_shape=(4, 4, 1),
                               augmentation={"placement": "model", "layers": [{"type": "random_flip"}]})
    assert np.all(collect(epoch_of(model_placed))[0][:, :, 0, 0] == 200)
