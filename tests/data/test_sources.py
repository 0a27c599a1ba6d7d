"""cnnctl.data.load, cnnctl.data.sources, cnnctl.data.images: every source on small real data."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnnctl.data import load as data_lib
from cnnctl.model import inputs
from cnnctl.data import images
from cnnctl.data import tfdata
from cnnctl.backend import keras
from cnnctl.config import load as config_lib
from cnnctl.config.schema import AugmentationConfig, Config, Preprocessing
from cnnctl.errors import CnnctlError, ConfigError

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"]


def make_config(data: dict, *, input_shape=(28, 28, 1), batch_size=32, seed=1,
                augmentation: dict | None = None) -> Config:
    return Config.model_validate({"model": {"input_shape": list(input_shape)}, "data": data,
                                  "augmentation": augmentation or {},
                                  "train": {"batch_size": batch_size, "seed": seed}})


def load(data: dict, *, label_mode="int", splits=("train", "val", "test"), **kwargs):
    config = make_config(data, **kwargs)
    return data_lib.load(config, input_shape=tuple(config.model.input_shape),
                         label_mode=label_mode, splits=splits)


def collect(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def epoch_of(splits, epoch: int = 0, step: int = 0):
    """One epoch of the endless training stream (from `step` on)."""
    return splits.train_from(epoch, step).take(splits.steps_per_epoch - step)


def read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


# --------------------------------------------------------------------------- keras
def test_keras_fashion_mnist_first_samples_shapes_and_one_hot(fashion_mnist_home):
    splits = load({"source": "keras", "name": "fashion_mnist", "max_train_samples": 1000,
                   "max_test_samples": 200, "validation_split": 0.2},
                  label_mode="categorical", batch_size=64)
    assert splits.class_names == FASHION_NAMES
    assert splits.counts == {"train": 800, "val": 200, "test": 200}
    assert sum(splits.class_counts["test"].values()) == 200
    x, y = next(iter(splits.train))
    assert x.shape == (64, 28, 28, 1) and x.dtype == tf.float32
    assert y.shape == (64, 10) and y.dtype == tf.float32
    assert np.all(y.numpy().sum(axis=1) == 1)
    assert 1 < x.numpy().max() <= 255  # pixel values stay 0..255: rescaling is in the model

    # max_test_samples keeps the first 200 test images, in order, with their labels
    folder = fashion_mnist_home / "datasets" / "fashion-mnist"
    raw_x = read_idx(folder / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:200]
    raw_y = read_idx(folder / "t10k-labels-idx1-ubyte.gz", 8)[:200]
    test_x, test_y = collect(splits.test)
    np.testing.assert_array_equal(test_x[..., 0], raw_x.astype(np.float32))
    np.testing.assert_array_equal(test_y.argmax(axis=1), raw_y)
    assert splits.class_counts["test"] == dict(zip(FASHION_NAMES, np.bincount(raw_y, minlength=10).tolist()))


def test_keras_int_labels_and_rgb_model(fashion_mnist_home):
    splits = load({"source": "keras", "name": "fashion_mnist", "max_train_samples": 100,
                   "max_test_samples": 10}, input_shape=(32, 32, 3), splits=("train",))
    assert splits.val is None and splits.test is None
    assert splits.counts == {"train": 100, "val": 0, "test": 0}
    x, y = next(iter(splits.train))
    assert x.shape == (32, 32, 32, 3)  # resized to the model's size, grey repeated into RGB
    assert y.shape == (32,) and y.dtype == tf.int32
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_binary_labels_need_two_classes(fashion_mnist_home):
    with pytest.raises(CnnctlError, match="binary_crossentropy needs 2 classes but the data has 10"):
        load({"source": "keras", "name": "fashion_mnist", "max_train_samples": 10},
             label_mode="binary")


def test_keras_missing_cache_names_the_files_and_folder(tmp_path, use_keras_home, monkeypatch):
    use_keras_home(tmp_path)

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # offline, wherever the test runs
    start = time.monotonic()
    with pytest.raises(CnnctlError) as error:
        load({"source": "keras", "name": "fashion_mnist"})
    message = str(error.value)
    assert time.monotonic() - start < 10
    assert "fashion_mnist is not in the Keras cache and cannot be downloaded" in message
    assert (f"put train-labels-idx1-ubyte.gz, train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, "
            f"t10k-images-idx3-ubyte.gz in {tmp_path / 'datasets' / 'fashion-mnist'}/") in message
    assert "\n" not in message


def test_keras_damaged_cache_file(fashion_mnist_files, tmp_path, use_keras_home):
    folder = tmp_path / "datasets" / "fashion-mnist"
    shutil.copytree(fashion_mnist_files / "datasets" / "fashion-mnist", folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")  # Keras checks no hash here
    use_keras_home(tmp_path)
    with pytest.raises(CnnctlError, match=rf"cannot load fashion_mnist from {tmp_path / 'datasets'} "
                                          r"\(Not a gzipped file .*\); replace fashion-mnist/"
                                          r"train-labels-idx1-ubyte.gz, .* there with complete copies"):
        load({"source": "keras", "name": "fashion_mnist"})


def test_keras_cifar10_missing_archive_says_how_to_name_it(tmp_path, use_keras_home, monkeypatch):
    use_keras_home(tmp_path)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(CnnctlError, match=r"put cifar-10-python.tar.gz renamed to "
                                          r"cifar-10-batches-py-target_archive in .*datasets/"):
        load({"source": "keras", "name": "cifar10"}, input_shape=(32, 32, 3))


# --------------------------------------------------------------------------- npz
def test_npz_shipped_fashion_mnist_small():
    splits = load({"source": "npz", "path": "cnnctl://fashion_mnist_small.npz"}, batch_size=500)
    assert splits.counts == {"train": 6000, "val": 0, "test": 1000}
    assert splits.class_names == FASHION_NAMES
    assert sum(splits.class_counts["train"].values()) == 6000
    x, y = collect(splits.test)
    assert x.shape == (1000, 28, 28, 1) and y.shape == (1000,)
    with np.load(Path(data_lib.__file__).parent / "fashion_mnist_small.npz") as f:
        np.testing.assert_array_equal(x[..., 0], f["x_test"])
        np.testing.assert_array_equal(y, f["y_test"])
    assert (Path(data_lib.__file__).parent / "fashion_mnist_small.npz").stat().st_size < 4e6


def test_npz_unknown_shipped_name():
    with pytest.raises(CnnctlError, match=r"cnnctl://nope.npz is not shipped with cnnctl; "
                                          r"shipped: cnnctl://fashion_mnist_small.npz"):
        load({"source": "npz", "path": "cnnctl://nope.npz"})


def ids_npz(path: Path, n: int = 300, size: int = 6) -> Path:
    """Images whose pixels (0,0) and (0,1) encode their index; labels i % 3, as [N, 1]."""
    x = np.zeros((n, size, size, 3), np.uint8)
    x[:, 0, 0, :] = (np.arange(n) % 256)[:, None]
    x[:, 0, 1, :] = (np.arange(n) // 256)[:, None]
    np.savez(path, x_train=x, y_train=(np.arange(n) % 3)[:, None], x_test=x[:30], y_test=np.arange(30) % 3)
    return path


def ids(ds) -> np.ndarray:
    x, _ = collect(ds)
    return (x[:, 0, 0, 0] + 256 * x[:, 0, 1, 0]).astype(int)


def test_npz_without_class_names_and_label_column(tmp_path):
    splits = load({"source": "npz", "path": str(ids_npz(tmp_path / "ids.npz"))},
                  input_shape=(6, 6, 3))
    assert splits.class_names == ["0", "1", "2"]
    assert splits.class_counts["train"] == {"0": 100, "1": 100, "2": 100}
    np.testing.assert_array_equal(np.sort(ids(epoch_of(splits))), np.arange(300))


def test_npz_bad_arrays_are_clear_errors(tmp_path):
    np.savez(tmp_path / "a.npz", x_train=np.zeros((4, 5, 5)), y_train=np.zeros(4, int))
    np.savez(tmp_path / "b.npz", images=np.zeros((4, 5, 5), np.uint8))
    np.savez(tmp_path / "c.npz", x_train=np.zeros((4, 5, 5), np.uint8), y_train=np.zeros(3, int))
    with pytest.raises(CnnctlError, match=r"x_train must hold pixel values 0..255 \(got 0..0\)"):
        load({"source": "npz", "path": str(tmp_path / "a.npz")}, input_shape=(5, 5, 1))
    with pytest.raises(CnnctlError, match="has arrays images; it needs x_train, y_train"):
        load({"source": "npz", "path": str(tmp_path / "b.npz")}, input_shape=(5, 5, 1))
    with pytest.raises(CnnctlError,
                       match=r"y_train must hold one class index >= 0 per image of x_train \(4\)"):
        load({"source": "npz", "path": str(tmp_path / "c.npz")}, input_shape=(5, 5, 1))
    with open(tmp_path / "one.npz", "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(CnnctlError, match=r"cannot read .*one.npz as a .npz file: it holds one array"):
        load({"source": "npz", "path": str(tmp_path / "one.npz")})
    with pytest.raises(CnnctlError, match="data.path: .*missing.npz not found"):
        load({"source": "npz", "path": str(tmp_path / "missing.npz")})


# --------------------------------------------------------------------------- splits
def test_validation_split_is_disjoint_and_seeded(tmp_path):
    source = {"source": "npz", "path": str(ids_npz(tmp_path / "ids.npz")),
              "max_train_samples": 200, "validation_split": 0.25}
    a = load(source, input_shape=(6, 6, 3), seed=1)
    train, val = ids(epoch_of(a)), ids(a.val)
    assert len(val) == 50 and len(train) == 150
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(range(200))  # carved after max_train_samples
    assert a.counts == {"train": 150, "val": 50, "test": 30}
    assert sum(a.class_counts["val"].values()) == 50
    np.testing.assert_array_equal(ids(a.val), np.sort(val))  # val: in order, not shuffled
    same = load(source, input_shape=(6, 6, 3), seed=1)
    other = load(source, input_shape=(6, 6, 3), seed=2)
    assert set(ids(same.val)) == set(val)
    assert set(ids(other.val)) != set(val)


def test_train_is_reshuffled_each_epoch_with_the_seed(tmp_path):
    source = {"source": "npz", "path": str(ids_npz(tmp_path / "ids.npz"))}
    a = load(source, input_shape=(6, 6, 3), seed=5, batch_size=32)
    assert a.steps_per_epoch == 10  # 300 images, batch 32: the last batch holds 12
    first, second = ids(epoch_of(a, 0)), ids(epoch_of(a, 1))
    assert sorted(first) == sorted(second) == list(range(300))
    assert list(first) != list(second) and list(first) != list(range(300))
    # the endless stream is epoch 0 then epoch 1 ..., batch for batch
    stream = ids(a.train.take(20))
    assert list(stream) == list(first) + list(second)
    # the order depends on (seed, epoch) only: a new load, or resuming mid-epoch, sees the same
    again = load(source, input_shape=(6, 6, 3), seed=5, batch_size=32)
    assert list(ids(epoch_of(again, 1))) == list(second)
    assert list(ids(epoch_of(again, 1, step=4))) == list(second[4 * 32:])
    assert list(ids(again.train_from(0, 9).take(2))) == list(first[9 * 32:]) + list(second[:32])
    other = load(source, input_shape=(6, 6, 3), seed=6, batch_size=32)
    assert list(ids(epoch_of(other, 0))) != list(first)


def test_validation_split_too_small(tmp_path):
    with pytest.raises(CnnctlError, match="data.validation_split: 0.001 of 10 training images "
                                          "leaves no validation"):
        load({"source": "npz", "path": str(ids_npz(tmp_path / "ids.npz")), "max_train_samples": 10,
              "validation_split": 0.001}, input_shape=(6, 6, 3))


# --------------------------------------------------------------------------- folders
def test_folder_counts_classes_and_shapes(cifar_folders):
    splits = load({"source": "folder", "train_dir": str(cifar_folders / "train"),
                   "test_dir": str(cifar_folders / "test"), "validation_split": 0.25},
                  input_shape=(32, 32, 3), batch_size=8, label_mode="categorical")
    assert splits.class_names == ["airplane", "cat", "ship"]
    assert splits.counts == {"train": 45, "val": 15, "test": 60}
    assert splits.class_counts["test"] == {"airplane": 20, "cat": 20, "ship": 20}
    assert splits.skipped == []
    x, y = collect(epoch_of(splits))
    assert x.shape == (45, 32, 32, 3) and x.dtype == np.float32 and y.shape == (45, 3)
    # the decoded pixels are the JPEG's own, as PIL reads them (up to decoder rounding)
    x_test, y_test = collect(splits.test)
    first = sorted((cifar_folders / "test" / "airplane").iterdir())[0]
    assert y_test[0].argmax() == 0
    assert np.abs(x_test[0] - np.asarray(Image.open(first), np.float32)).max() <= 8


def test_folder_max_samples_are_class_interleaved_and_resized(cifar_folders):
    splits = load({"source": "folder", "train_dir": str(cifar_folders / "train"), "max_train_samples": 9,
                   "cache": False}, input_shape=(16, 20, 1), splits=("train",))
    assert splits.class_counts["train"] == {"airplane": 3, "cat": 3, "ship": 3}
    x, _ = collect(epoch_of(splits))
    assert x.shape == (9, 16, 20, 1)


def test_folder_skips_and_lists_unreadable_files(cifar_folders, tmp_path):
    root = tmp_path / "train"
    shutil.copytree(cifar_folders / "train", root)
    good = sorted((root / "cat").iterdir())[0].read_bytes()
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "cat" / "notes.JPG").write_text("this is not a picture")
    (root / "ship" / "cut.jpeg").write_bytes(good[: len(good) // 2])
    (root / "ship" / "readme.txt").write_text("ignored: not an image extension")
    splits = load({"source": "folder", "train_dir": str(root)}, input_shape=(32, 32, 3),
                  splits=("train",))
    reasons = {Path(p).name: r for p, r in splits.skipped}
    assert set(reasons) == {"empty.jpg", "notes.JPG", "cut.jpeg"}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.JPG"].startswith("not an image")
    assert reasons["cut.jpeg"] == "truncated image (the file ends early)"
    assert splits.class_counts["train"] == {"airplane": 20, "cat": 20, "ship": 20}
    assert len(collect(epoch_of(splits))[0]) == 60  # the pipeline never meets the bad files


def test_folder_errors(cifar_folders, tmp_path):
    root = tmp_path / "train"
    shutil.copytree(cifar_folders / "train", root)
    (root / "dog").mkdir()
    with pytest.raises(CnnctlError, match=r"data.train_dir: class folder .*/dog has no image files"):
        load({"source": "folder", "train_dir": str(root)}, input_shape=(32, 32, 3))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnctlError, match=r"data.train_dir: .*/empty has no class subfolders"):
        load({"source": "folder", "train_dir": str(tmp_path / "empty")}, input_shape=(32, 32, 3))
    with pytest.raises(CnnctlError, match=r"data.train_dir: folder .*/nowhere not found"):
        load({"source": "folder", "train_dir": str(tmp_path / "nowhere")}, input_shape=(32, 32, 3))
    with pytest.raises(CnnctlError, match=r"data.test_dir: .*/train/dog is not a class of data.train_dir"):
        load({"source": "folder", "train_dir": str(cifar_folders / "train"), "test_dir": str(root)},
             input_shape=(32, 32, 3))


def odd_images(folder: Path) -> dict[str, Path]:
    """One file per awkward kind: sizes, modes and formats a user's folder may hold."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
    made = {
        "grey.png": Image.fromarray(rgb[..., 0]),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 90, np.uint8)])),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "sixteen.png": Image.fromarray(np.full((40, 41), 0x8000, np.uint16)),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "wide.jpg": Image.fromarray(np.zeros((10, 300, 3), np.uint8)),
        "bitmap.bmp": Image.fromarray(rgb),
        "anim.gif": Image.fromarray(rgb).convert("P"),
        "photo.webp": Image.fromarray(rgb),
    }
    paths = {}
    for name, image in made.items():
        image.save(folder / name)
        paths[name] = folder / name
    return paths


def test_folder_decodes_every_format_and_mode(tmp_path):
    odd_images(tmp_path / "train" / "odd")
    odd_images(tmp_path / "train" / "more")
    splits = load({"source": "folder", "train_dir": str(tmp_path / "train")}, input_shape=(24, 24, 3),
                  splits=("train",))
    assert splits.skipped == [] and splits.counts["train"] == 18
    x, _ = collect(epoch_of(splits))
    assert x.shape == (18, 24, 24, 3)


@pytest.mark.parametrize("channels", [3, 1])
def test_folder_decoded_by_its_check_gives_the_pipeline_pixels(tmp_path, cifar_folders,
                                                               monkeypatch, channels):
    """With data.cache the check's own decode is the training data: only files that need
    resizing (or TensorFlow's grey conversion) are decoded again, and every pixel equals what
    the per-epoch tf.data decode (data.cache: false) gives."""
    from cnnctl.data import tfdata

    for folder in ("a", "b"):
        odd_images(tmp_path / "train" / folder)
    cifar = [str(f) for f in sorted((cifar_folders / "train" / "cat").iterdir())[:5]]
    for f in cifar:  # real CIFAR JPEGs, resized by PIL to the odd images' 23x37
        Image.open(f).resize((23, 37)).save(tmp_path / "train" / "a" / Path(f).name, quality=90)
    decoded_again = []
    decode_all = tfdata.decode_all
    monkeypatch.setattr(tfdata, "decode_all", lambda part, spec: (
        decoded_again.extend(Path(f).name for f in part.files), decode_all(part, spec))[1])
    data = {"source": "folder", "train_dir": str(tmp_path / "train"),
            "test_dir": str(tmp_path / "train")}
    shape = (37, 23, channels)
    cached = load(data, input_shape=shape, splits=("test",))
    again = {"sixteen.png", "wide.jpg"} | ({"rgba.png", "palette.png"} if channels == 1 else set())
    assert sorted(decoded_again) == sorted(list(again) * 2)  # two class folders
    fresh = load({**data, "cache": False}, input_shape=shape, splits=("test",))
    x_cached, y_cached = collect(cached.test)
    x_fresh, y_fresh = collect(fresh.test)
    assert x_cached.shape == (23, *shape)
    np.testing.assert_array_equal(y_cached, y_fresh)
    np.testing.assert_array_equal(x_cached, x_fresh)


def test_probe_all_in_worker_processes_equals_in_process(tmp_path, monkeypatch):
    paths = [str(p) for p in odd_images(tmp_path).values()]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    paths.append(str(tmp_path / "broken.png"))
    spec = images.image_spec((37, 23, 3))
    here = images.probe_all(paths, keep=spec)
    monkeypatch.setattr(images, "PROCESSES_FROM", 1)
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: probe_all never starts worker processes")
    spread = images.probe_all(paths, digest=True, keep=spec)
    assert [c.path for c in spread] == paths
    for a, b in zip(here, spread):
        assert (a.reason, a.native, a.format, a.mode, a.size) == \
            (b.reason, b.native, b.format, b.mode, b.size)
        assert (a.pixels is None) == (b.pixels is None)
        if a.pixels is not None:
            np.testing.assert_array_equal(a.pixels, b.pixels)
    assert spread[-1].reason == "truncated image (the file ends early)" and spread[0].sha256 is not None


# --------------------------------------------------------------------------- tfds
@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """Two tiny prepared TensorFlow Datasets sets in a data_dir: fixed-size grey images and
    colour images of varying size. Their builders are not registered, so cnnctl reads them by
    name from the folder, as it would a set built elsewhere with `tfds build`."""
    import tensorflow_datasets as tfds

    root = tmp_path_factory.mktemp("tfds")
    with tfds.core.registered.skip_registration():
        class CnnctlTinyGrey(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")
            shape = (12, 12, 1)

            def _info(self):
                return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"),
                                             features=tfds.features.FeaturesDict({
                                                 "image": tfds.features.Image(shape=self.shape),
                                                 "label": tfds.features.ClassLabel(names=["dark", "light"])}))

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples(20), "test": self._generate_examples(6)}

            def _generate_examples(self, n):
                for i in range(n):
                    size = (12, 12) if self.shape[0] else (8 + i, 5 + 2 * i)
                    image = np.full((*size, self.shape[2]), 40 if i % 2 == 0 else 210, np.uint8)
                    yield i, {"image": image, "label": i % 2}

        class CnnctlTinyColour(CnnctlTinyGrey):
            shape = (None, None, 3)

        for builder in (CnnctlTinyGrey, CnnctlTinyColour):
            builder(data_dir=str(root)).download_and_prepare()
    return root


def test_tfds_fixed_size_set(tfds_dir):
    splits = load({"source": "tfds", "name": "cnnctl_tiny_grey", "data_dir": str(tfds_dir),
                   "max_test_samples": 4}, input_shape=(12, 12, 1), batch_size=5)
    assert splits.class_names == ["dark", "light"]
    assert splits.counts == {"train": 20, "val": 0, "test": 4}
    assert splits.class_counts["train"] == {"dark": 10, "light": 10}
    x, y = collect(epoch_of(splits))
    assert x.shape == (20, 12, 12, 1)
    np.testing.assert_array_equal(x[:, 0, 0, 0], np.where(y == 0, 40, 210))


def test_tfds_images_of_varying_size(tfds_dir):
    splits = load({"source": "tfds", "name": "cnnctl_tiny_colour", "data_dir": str(tfds_dir),
                   "validation_split": 0.25}, input_shape=(16, 16, 3), label_mode="binary")
    assert splits.counts == {"train": 15, "val": 5, "test": 6}
    x, y = collect(splits.val)
    assert x.shape == (5, 16, 16, 3) and y.shape == (5, 1) and y.dtype == np.float32
    np.testing.assert_array_equal(x[:, 5, 5, 1], np.where(y[:, 0] == 0, 40, 210))


def test_tfds_missing_set_says_how_to_build_it(tmp_path):
    with pytest.raises(CnnctlError, match=rf"'mnist' is not in {tmp_path} .*run `tfds build mnist "
                                          rf"--data_dir {tmp_path}` on a machine with network"):
        load({"source": "tfds", "name": "mnist", "data_dir": str(tmp_path)})
    with pytest.raises(CnnctlError) as error:
        load({"source": "tfds", "name": "no_such_set_xyz", "data_dir": str(tmp_path)})
    assert "no TensorFlow Datasets set 'no_such_set_xyz'" in str(error.value)
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------- shapes, modes
def test_shape_and_mode_mismatches_are_config_errors():
    with pytest.raises(CnnctlError, match=r"data.image_size: \[64, 64\] differs from "
                                          r"model.input_shape \[32, 32, 3\]"):
        load({"source": "npz", "path": "cnnctl://fashion_mnist_small.npz", "image_size": [64, 64]},
             input_shape=(32, 32, 3))
    with pytest.raises(CnnctlError, match="data.color_mode: rgb gives 3 channels"):
        load({"source": "npz", "path": "cnnctl://fashion_mnist_small.npz", "color_mode": "rgb"})
    with pytest.raises(CnnctlError, match="the config has no `data:` section"):
        data_lib.load(Config.model_validate({"model": {"input_shape": [8, 8, 1]}}),
                      input_shape=(8, 8, 1), label_mode="int")


def test_load_images_converts_any_file_to_the_model_input(tmp_path):
    paths = odd_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    files = [str(p) for p in paths.values()] + [str(tmp_path / "broken.png")]
    for shape in ((28, 28, 1), (32, 30, 3)):
        batch, status = images.load_images(files, shape)
        assert batch.shape == (len(paths), *shape) and batch.dtype == np.float32
        assert [p for p, _ in status] == files
        assert [e is None for _, e in status] == [True] * len(paths) + [False]
        assert 0 <= batch.min() and batch.max() <= 255
    batch, _ = images.load_images([str(paths["sixteen.png"]), str(paths["rgba.png"])], (8, 8, 3))
    assert np.all(batch[0] == 128)  # 16-bit 0x8000 keeps its top 8 bits; not clipped to 255
    rgb = np.asarray(Image.open(paths["rgba.png"]).convert("RGB").resize((8, 8)), np.float32)
    assert np.abs(batch[1] - rgb).mean() < 40  # alpha dropped: colours are the image's own


def test_tensorflow_and_pil_decoding_agree(tmp_path):
    """TensorFlow decodes PNG and plain JPEG itself, PIL the rest: the two give the same pixels."""
    paths = odd_images(tmp_path)
    spec = images.image_spec((37, 23, 3))
    decode = tfdata.decode_fn(spec)
    for name in ("grey.png", "rgba.png", "palette.png", "sixteen.png"):
        native, error = images.inspect(str(paths[name]))
        assert native and error is None
        by_tf = decode(tf.constant(str(paths[name])), tf.constant(True)).numpy()
        by_pil = decode(tf.constant(str(paths[name])), tf.constant(False)).numpy()
        np.testing.assert_array_equal(by_tf, by_pil)
    for name in ("cmyk.jpg", "bitmap.bmp", "anim.gif", "photo.webp"):
        assert images.inspect(str(paths[name])) == (False, None)


# --------------------------------------------------------------------------- layers
def test_preprocessing_layer_arithmetic(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    layer = inputs.preprocessing_layer(Preprocessing.model_validate(
        {"rescale": 1 / 255, "normalize": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]}}), 3)
    expected = (x / 255 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)

    model = keras.Sequential([keras.Input((4, 4, 3)), layer])
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "m.keras")(x).numpy(), expected,
                               rtol=1e-5, atol=1e-5)

    only_mean = inputs.preprocessing_layer(Preprocessing.model_validate(
        {"rescale": None, "normalize": {"mean": [100], "std": [50]}}), 3)
    np.testing.assert_allclose(only_mean(x).numpy(), (x - 100) / 50, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inputs.preprocessing_layer(Preprocessing(), 1)(x).numpy(), x / 255,
                               rtol=1e-6)
    assert inputs.preprocessing_layer(Preprocessing(rescale=None), 3) is None
    with pytest.raises(CnnctlError, match=r"data.preprocessing.normalize.std: needs 1 or 3 values"):
        inputs.preprocessing_layer(Preprocessing.model_validate(
            {"normalize": {"mean": [0.5], "std": [0.2, 0.3]}}), 3)


ALL_AUGMENTATIONS = [
    {"type": "random_flip", "mode": "horizontal"},
    {"type": "random_rotation", "factor": 0.2},
    {"type": "random_zoom", "factor": 0.3},
    {"type": "random_translation", "height_factor": 0.2, "width_factor": 0.2},
    {"type": "random_contrast", "factor": 0.5},
    {"type": "random_brightness", "factor": 0.5},
    {"type": "random_crop", "height": 24, "width": 24},
]


def test_augmentation_layers_act_in_training_only():
    x = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype(np.float32)
    layers = inputs.augmentation_layers(AugmentationConfig.model_validate({"layers": ALL_AUGMENTATIONS}),
                                          seed=3)
    assert [type(layer).__name__ for layer in layers] == [
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
        "RandomBrightness", "RandomPadCrop"]
    for layer in layers:
        assert np.array_equal(layer(x, training=False).numpy(), x), type(layer).__name__
        out = layer(x, training=True).numpy()
        assert out.shape == x.shape and not np.array_equal(out, x), type(layer).__name__
    brightness = layers[5](np.full((4, 2, 2, 3), 128.0, np.float32), training=True).numpy()
    assert brightness.max() > 129 or brightness.min() < 127  # shifts on the 0..255 scale
    assert 0 <= brightness.min() and brightness.max() <= 255


def test_random_crop_is_pad_and_crop():
    x = np.arange(8 * 8, dtype=np.float32).reshape(1, 8, 8, 1) + 1
    crop = inputs.augmentation_layers(AugmentationConfig.model_validate(
        {"layers": [{"type": "random_crop", "height": 12, "width": 12, "fill_mode": "constant"}]}))[0]
    padded = np.pad(x[0, :, :, 0], 2)
    seen = set()
    for _ in range(20):
        out = crop(np.repeat(x, 4, axis=0), training=True).numpy()[..., 0]
        for image in out:  # every output is some 8x8 window of the zero-padded image
            windows = [(dy, dx) for dy in range(5) for dx in range(5)
                       if np.array_equal(padded[dy:dy + 8, dx:dx + 8], image)]
            assert len(windows) == 1
            seen.add(windows[0])
    assert len(seen) > 5  # offsets vary per image and per call
    with pytest.raises(CnnctlError, match="random_crop: height 6 is smaller than the image height 8"):
        keras.Sequential([keras.Input((8, 8, 1)), inputs.RandomPadCrop(6, 10)])


def test_augmentation_config_errors_name_the_field(write_yaml):
    """They are config errors, found when the file is read (FILE:LINE: path: message)."""
    def config(*layers):
        return write_yaml("model: {input_shape: [8, 8, 1]}\naugmentation:\n  layers:\n"
                          + "".join(f"    - {layer}\n" for layer in layers))

    path = config("{type: random_flip}", "{type: random_rotation}")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:5: "
                                          r"augmentation.layers\[1\].factor: random_rotation needs `factor`$"):
        config_lib.load(path)
    with pytest.raises(ConfigError, match=r"augmentation.layers\[0\].width: random_crop needs `width`"):
        config_lib.load(config("{type: random_crop, height: 40}"))
    with pytest.raises(ConfigError, match=r"augmentation.layers\[0\].height_factor: random_translation "
                                          r"needs `height_factor` or `factor`"):
        config_lib.load(config("{type: random_translation, width_factor: 0.1}"))
    with pytest.raises(ConfigError,
                       match=r"augmentation.layers\[0\].factor: random_flip does not use `factor`"):
        config_lib.load(config("{type: random_flip, factor: 0.2}"))
    with pytest.raises(ConfigError, match=r"augmentation.layers\[0\].fill_mode: random_crop pads with"):
        config_lib.load(config("{type: random_crop, height: 40, width: 40, fill_mode: wrap}"))


def test_pipeline_augmentation_touches_train_only(tmp_path):
    """placement: pipeline flips train images (asymmetric ones), never val or test."""
    n = 64
    x = np.zeros((n, 4, 4, 1), np.uint8)
    x[:, :, 0, 0] = 200  # a bright left column
    np.savez(tmp_path / "left.npz", x_train=x, y_train=np.zeros(n, int), x_test=x, y_test=np.zeros(n, int))
    splits = load({"source": "npz", "path": str(tmp_path / "left.npz"), "validation_split": 0.5},
                  input_shape=(4, 4, 1), augmentation={"placement": "pipeline", "layers": [
                      {"type": "random_flip", "mode": "horizontal"}]})
    train, _ = collect(epoch_of(splits))
    flipped = train[:, 0, 3, 0] == 200
    assert 0 < flipped.sum() < len(train)
    for split in (splits.val, splits.test):
        images_, _ = collect(split)
        assert np.all(images_[:, :, 0, 0] == 200) and np.all(images_[:, :, 3, 0] == 0)
    model_placed = load({"source": "npz", "path": str(tmp_path / "left.npz")}, input_shape=(4, 4, 1),
                        augmentation={"placement": "model", "layers": [{"type": "random_flip"}]})
    assert np.all(collect(epoch_of(model_placed))[0][:, :, 0, 0] == 200)
