"""cnnctl.data.sources: every source (keras.datasets, .npz, folders, TensorFlow Datasets) on small
real data: class names, counts, the first samples, and the errors that name what to fix."""

from __future__ import annotations

import gzip
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnnctl.data import load as data_lib
from cnnctl.errors import CnnctlError

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


# --------------------------------------------------------------------------- keras
def test_keras_fashion_mnist_first_samples_shapes_and_one_hot(fashion_mnist_home, load_splits,
                                                              collect):
    splits = load_splits({"source": "keras", "name": "fashion_mnist", "max_train_samples": 1000,
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


def test_keras_int_labels_and_rgb_model(fashion_mnist_home, load_splits):
    splits = load_splits({"source": "keras", "name": "fashion_mnist", "max_train_samples": 100,
                          "max_test_samples": 10}, input_shape=(32, 32, 3), splits=("train",))
    assert splits.val is None and splits.test is None
    assert splits.counts == {"train": 100, "val": 0, "test": 0}
    x, y = next(iter(splits.train))
    assert x.shape == (32, 32, 32, 3)  # resized to the model's size, grey repeated into RGB
    assert y.shape == (32,) and y.dtype == tf.int32
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_binary_labels_need_two_classes(fashion_mnist_home, load_splits):
    with pytest.raises(CnnctlError, match="binary_crossentropy needs 2 classes but the data has 10"):
        load_splits({"source": "keras", "name": "fashion_mnist", "max_train_samples": 10},
                    label_mode="binary")


def test_keras_missing_cache_names_the_files_and_folder(tmp_path, use_keras_home, monkeypatch,
                                                        load_splits):
    use_keras_home(tmp_path)

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)  # offline, wherever the test runs
    start = time.monotonic()
    with pytest.raises(CnnctlError) as error:
        load_splits({"source": "keras", "name": "fashion_mnist"})
    message = str(error.value)
    assert time.monotonic() - start < 10
    assert "fashion_mnist is not in the Keras cache and cannot be downloaded" in message
    assert (f"put train-labels-idx1-ubyte.gz, train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, "
            f"t10k-images-idx3-ubyte.gz in {tmp_path / 'datasets' / 'fashion-mnist'}/") in message
    assert "\n" not in message


def test_keras_damaged_cache_file(fashion_mnist_files, tmp_path, use_keras_home, load_splits):
    folder = tmp_path / "datasets" / "fashion-mnist"
    shutil.copytree(fashion_mnist_files / "datasets" / "fashion-mnist", folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")  # Keras checks no hash here
    use_keras_home(tmp_path)
    with pytest.raises(CnnctlError, match=rf"cannot load fashion_mnist from {tmp_path / 'datasets'} "
                                          r"\(Not a gzipped file .*\); replace fashion-mnist/"
                                          r"train-labels-idx1-ubyte.gz, .* there with complete copies"):
        load_splits({"source": "keras", "name": "fashion_mnist"})


def test_keras_cifar10_missing_archive_says_how_to_name_it(tmp_path, use_keras_home, monkeypatch,
                                                           load_splits):
    use_keras_home(tmp_path)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(CnnctlError, match=r"put cifar-10-python.tar.gz renamed to "
                                          r"cifar-10-batches-py-target_archive in .*datasets/"):
        load_splits({"source": "keras", "name": "cifar10"}, input_shape=(32, 32, 3))


# --------------------------------------------------------------------------- npz
def test_npz_shipped_fashion_mnist_small(load_splits, collect):
    splits = load_splits({"source": "npz", "path": "cnnctl://fashion_mnist_small.npz"}, batch_size=500)
    assert splits.counts == {"train": 6000, "val": 0, "test": 1000}
    assert splits.class_names == FASHION_NAMES
    assert sum(splits.class_counts["train"].values()) == 6000
    x, y = collect(splits.test)
    assert x.shape == (1000, 28, 28, 1) and y.shape == (1000,)
    with np.load(Path(data_lib.__file__).parent / "fashion_mnist_small.npz") as f:
        np.testing.assert_array_equal(x[..., 0], f["x_test"])
        np.testing.assert_array_equal(y, f["y_test"])
    assert (Path(data_lib.__file__).parent / "fashion_mnist_small.npz").stat().st_size < 4e6


def test_npz_unknown_shipped_name(load_splits):
    with pytest.raises(CnnctlError, match=r"cnnctl://nope.npz is not shipped with cnnctl; "
                                          r"shipped: cnnctl://fashion_mnist_small.npz"):
        load_splits({"source": "npz", "path": "cnnctl://nope.npz"})


def test_npz_without_class_names_and_label_column(tmp_path, load_splits, epoch_of, ids_npz,
                                                  image_ids):
    splits = load_splits({"source": "npz", "path": str(ids_npz(tmp_path / "ids.npz"))},
                         input_shape=(6, 6, 3))
    assert splits.class_names == ["0", "1", "2"]
    assert splits.class_counts["train"] == {"0": 100, "1": 100, "2": 100}
    np.testing.assert_array_equal(np.sort(image_ids(epoch_of(splits))), np.arange(300))


def test_npz_bad_arrays_are_clear_errors(tmp_path, load_splits):
    np.savez(tmp_path / "a.npz", x_train=np.zeros((4, 5, 5)), y_train=np.zeros(4, int))
    np.savez(tmp_path / "b.npz", images=np.zeros((4, 5, 5), np.uint8))
    np.savez(tmp_path / "c.npz", x_train=np.zeros((4, 5, 5), np.uint8), y_train=np.zeros(3, int))
    with pytest.raises(CnnctlError, match=r"x_train must hold pixel values 0..255 \(got 0..0\)"):
        load_splits({"source": "npz", "path": str(tmp_path / "a.npz")}, input_shape=(5, 5, 1))
    with pytest.raises(CnnctlError, match="has arrays images; it needs x_train, y_train"):
        load_splits({"source": "npz", "path": str(tmp_path / "b.npz")}, input_shape=(5, 5, 1))
    with pytest.raises(CnnctlError,
                       match=r"y_train must hold one class index >= 0 per image of x_train \(4\)"):
        load_splits({"source": "npz", "path": str(tmp_path / "c.npz")}, input_shape=(5, 5, 1))
    with open(tmp_path / "one.npz", "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(CnnctlError, match=r"cannot read .*one.npz as a .npz file: it holds one array"):
        load_splits({"source": "npz", "path": str(tmp_path / "one.npz")})
    with pytest.raises(CnnctlError, match="data.path: .*missing.npz not found"):
        load_splits({"source": "npz", "path": str(tmp_path / "missing.npz")})


# --------------------------------------------------------------------------- folders
def test_folder_counts_classes_and_shapes(cifar_folders, load_splits, collect, epoch_of):
    splits = load_splits({"source": "folder", "train_dir": str(cifar_folders / "train"),
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


def test_folder_max_samples_are_class_interleaved_and_resized(cifar_folders, load_splits, collect,
                                                              epoch_of):
    splits = load_splits({"source": "folder", "train_dir": str(cifar_folders / "train"), "max_train_samples": 9,
                          "cache": False}, input_shape=(16, 20, 1), splits=("train",))
    assert splits.class_counts["train"] == {"airplane": 3, "cat": 3, "ship": 3}
    x, _ = collect(epoch_of(splits))
    assert x.shape == (9, 16, 20, 1)


def test_folder_errors(cifar_folders, tmp_path, load_splits):
    root = tmp_path / "train"
    shutil.copytree(cifar_folders / "train", root)
    (root / "dog").mkdir()
    with pytest.raises(CnnctlError, match=r"data.train_dir: class folder .*/dog has no image files"):
        load_splits({"source": "folder", "train_dir": str(root)}, input_shape=(32, 32, 3))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnctlError, match=r"data.train_dir: .*/empty has no class subfolders"):
        load_splits({"source": "folder", "train_dir": str(tmp_path / "empty")}, input_shape=(32, 32, 3))
    with pytest.raises(CnnctlError, match=r"data.train_dir: folder .*/nowhere not found"):
        load_splits({"source": "folder", "train_dir": str(tmp_path / "nowhere")}, input_shape=(32, 32, 3))
    with pytest.raises(CnnctlError, match=r"data.test_dir: .*/train/dog is not a class of data.train_dir"):
        load_splits({"source": "folder", "train_dir": str(cifar_folders / "train"), "test_dir": str(root)},
                    input_shape=(32, 32, 3))


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


def test_tfds_fixed_size_set(tfds_dir, load_splits, collect, epoch_of):
    splits = load_splits({"source": "tfds", "name": "cnnctl_tiny_grey", "data_dir": str(tfds_dir),
                          "max_test_samples": 4}, input_shape=(12, 12, 1), batch_size=5)
    assert splits.class_names == ["dark", "light"]
    assert splits.counts == {"train": 20, "val": 0, "test": 4}
    assert splits.class_counts["train"] == {"dark": 10, "light": 10}
    x, y = collect(epoch_of(splits))
    assert x.shape == (20, 12, 12, 1)
    np.testing.assert_array_equal(x[:, 0, 0, 0], np.where(y == 0, 40, 210))


def test_tfds_images_of_varying_size(tfds_dir, load_splits, collect):
    splits = load_splits({"source": "tfds", "name": "cnnctl_tiny_colour", "data_dir": str(tfds_dir),
                          "validation_split": 0.25}, input_shape=(16, 16, 3), label_mode="binary")
    assert splits.counts == {"train": 15, "val": 5, "test": 6}
    x, y = collect(splits.val)
    assert x.shape == (5, 16, 16, 3) and y.shape == (5, 1) and y.dtype == np.float32
    np.testing.assert_array_equal(x[:, 5, 5, 1], np.where(y[:, 0] == 0, 40, 210))


def test_tfds_missing_set_says_how_to_build_it(tmp_path, load_splits):
    with pytest.raises(CnnctlError, match=rf"'mnist' is not in {tmp_path} .*run `tfds build mnist "
                                          rf"--data_dir {tmp_path}` on a machine with network"):
        load_splits({"source": "tfds", "name": "mnist", "data_dir": str(tmp_path)})
    with pytest.raises(CnnctlError) as error:
        load_splits({"source": "tfds", "name": "no_such_set_xyz", "data_dir": str(tmp_path)})
    assert "no TensorFlow Datasets set 'no_such_set_xyz'" in str(error.value)
    assert "\n" not in str(error.value)
