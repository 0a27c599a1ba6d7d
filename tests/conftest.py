"""Shared test fixtures: config texts and the files, models, runs and data they make; the
helpers that several test files use (`cnnctl` in process, a run trained from a config text,
model-building and data-loading helpers).

The test files mirror the package (tests/config, tests/model, tests/data, tests/train,
tests/use; the cross-cutting ones at the top). They have no __init__.py, so pytest imports each
by its basename: basenames stay unique, and what they share lives here, as fixtures."""

from __future__ import annotations

import gzip
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnnctl.config import load as config_lib
from cnnctl.model import build as model_lib


# --------------------------------------------------------------------------- config files
@pytest.fixture
def write_yaml(tmp_path):
    """Write YAML text (dedented) to tmp_path/NAME and return the path."""

    def write(text: str, name: str = "config.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def build_yaml(write_yaml):
    """Build the Keras model of YAML text, as `cnnctl` does: config.load + model.build."""

    def build(text: str, overrides: list[str] | None = None):
        return model_lib.build(config_lib.load(write_yaml(text), overrides))

    return build


# --------------------------------------------------------------------------- config texts
# The parts of `cnn_yaml`'s config, in the order they are written, and what they are unless a
# test says otherwise: a small CNN (16 and 32 filters) on the Fashion-MNIST slice shipped in the
# package. A section given as a dict is written as a block mapping, one key a line.
SECTIONS = ("data", "augmentation", "optimizer", "loss", "metrics", "train", "run")
SMALL_CNN = {
    "comment": None,
    "name": "small_cnn",
    "input_shape": "[28, 28, 1]",
    "layers": ["{type: conv2d, filters: 16, kernel_size: 3, activation: relu}",
               "{type: max_pool2d, pool_size: 2}",
               "{type: conv2d, filters: 32, kernel_size: 3, activation: relu}",
               "{type: max_pool2d, pool_size: 2}",
               "{type: flatten}",
               "{type: dense, units: 10, activation: softmax}"],
    "data": '{source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 2000, '
            'max_test_samples: 300, validation_split: 0.1}',
    "optimizer": "{name: adam, learning_rate: 0.002}",
    "loss": "sparse_categorical_crossentropy",
    "metrics": None,
    "train": "{epochs: 2, batch_size: 64, seed: 3}",
}


def _cnn_yaml(**changes) -> str:
    unknown = set(changes) - set(SMALL_CNN) - set(SECTIONS)
    if unknown:
        raise TypeError(f"cnn_yaml() has no part {sorted(unknown)}; parts: "
                        f"{', '.join([*SMALL_CNN, *SECTIONS])}")
    parts = {**SMALL_CNN, **changes}
    lines = [f"# {parts['comment']}"] if parts["comment"] else []
    lines.append("model:")
    if parts["name"]:
        lines.append(f"  name: {parts['name']}")
    lines += [f"  input_shape: {parts['input_shape']}", "  layers:",
              *(f"    - {layer}" for layer in parts["layers"])]
    for key in SECTIONS:
        value = parts.get(key)
        if isinstance(value, dict):
            lines += [f"{key}:", *(f"  {k}: {v}" for k, v in value.items())]
        elif value is not None:
            lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def cnn_yaml():
    """cnn_yaml(**changes) -> the text of a config: SMALL_CNN with the parts in `changes`
    replaced. Parts: comment (the first line, after `# `), name, input_shape, layers (a list of
    one-line YAML mappings) and the sections data, augmentation, optimizer, loss, metrics,
    train, run (one line of YAML each, or a dict for a block); None leaves a part out.

        cnn_yaml(name="spread", train="{epochs: 3, batch_size: 32}", metrics=None)
    """
    return _cnn_yaml


@pytest.fixture(scope="session")
def small_cnn_yaml(cnn_yaml) -> str:
    """The small CNN of `cnn_yaml` as it is, with metrics: [accuracy] (2,000 training images,
    2 epochs: about 0.75 test accuracy in a few seconds)."""
    return cnn_yaml(metrics="[accuracy]")


@pytest.fixture(scope="session")
def mnist_cnn_yaml(cnn_yaml) -> str:
    """The classic 3-conv MNIST CNN of configs/mnist.yaml (93,322 params) on keras.datasets
    mnist, 18 lines whose line numbers tests name (layer i is on line 6 + i)."""
    return cnn_yaml(
        comment="A small CNN on MNIST (93,322 params): cnnctl check mnist.yaml",
        name="mnist_cnn",
        layers=["{type: conv2d, filters: 32, kernel_size: 3, activation: relu}",
                "{type: max_pool2d, pool_size: 2}",
                "{type: conv2d, filters: 64, kernel_size: 3, activation: relu}",
                "{type: max_pool2d, pool_size: 2}",
                "{type: conv2d, filters: 64, kernel_size: 3, activation: relu}",
                "{type: flatten}",
                "{type: dense, units: 64, activation: relu}",
                "{type: dense, units: 10, activation: softmax}"],
        data="{source: keras, name: mnist}", optimizer="{name: adam, learning_rate: 1e-3}",
        metrics="[accuracy]", train="{epochs: 5, batch_size: 128}")


@pytest.fixture(scope="session")
def colour_cnn_yaml(cnn_yaml):
    """colour_cnn_yaml(**changes): `cnn_yaml` with other defaults: the tiniest colour CNN (one
    conv of 4 filters, global average pooling, 3 classes) on 16x16 RGB images of an .npz whose
    path is the placeholder DATA, one epoch of batch 32."""
    defaults = {
        "input_shape": "[16, 16, 3]",
        "layers": ["{type: conv2d, filters: 4, kernel_size: 3, activation: relu}",
                   "{type: global_avg_pool2d}",
                   "{type: dense, units: 3, activation: softmax}"],
        "data": "{source: npz, path: DATA}",
        "optimizer": "{name: adam, learning_rate: 0.01}",
        "train": "{epochs: 1, batch_size: 32, seed: 0, tensorboard: false}",
    }
    return lambda **changes: cnn_yaml(**{**defaults, **changes})


@pytest.fixture(scope="session")
def small_model_yaml() -> str:
    """A `model:` section only (conv, flatten, dense; lines 1-6), for config tests that append
    the section they are about on line 7."""
    return """
model:
  input_shape: [28, 28, 1]
  layers:
    - {type: conv2d, filters: 8, kernel_size: 3, activation: relu}
    - {type: flatten}
    - {type: dense, units: 10, activation: softmax}
"""


@pytest.fixture
def config_errors(write_yaml):
    """config_errors(text, overrides=None): the lines of the ConfigError that loading a config
    text (and overrides) raises, without the file name: `LINE: path: message`. Line 1 is the
    first line after the opening quotes."""
    from cnnctl.errors import ConfigError

    def errors(text: str, overrides=None) -> list[str]:
        path = write_yaml(text)
        with pytest.raises(ConfigError) as info:
            config_lib.load(path, overrides)
        prefix = f"{path}:"
        return [line.removeprefix(prefix) if line.startswith(prefix) else line
                for line in str(info.value).splitlines()]

    return errors


# --------------------------------------------------------------------------- commands and runs
@pytest.fixture(scope="session")
def cnnctl():
    """cnnctl(*args) -> the result of the `cnnctl` command line run in this process (Typer's
    CliRunner; stdout and stderr apart); the arguments are passed as str()."""
    from typer.testing import CliRunner

    from cnnctl.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def console_script() -> Path:
    """The installed `cnnctl` executable of this environment (what users run); the test is
    skipped where there is none."""
    import sys

    script = Path(sys.executable).parent / "cnnctl"
    if not script.is_file():
        pytest.skip(f"no installed cnnctl script beside {sys.executable}")
    return script


@pytest.fixture(scope="session")
def train_yaml():
    """train_yaml(text, config, run, *overrides) -> what cnnctl.train.fit.train returns
    (run_dir, metrics, ...): `text` written to the file `config`, loaded with the `--set`
    overrides, trained quietly into the folder `run`."""
    from cnnctl.train import fit

    def train(text: str, config: Path, run: Path, *overrides: str) -> dict:
        Path(config).write_text(text)
        return fit.train(config_lib.load(config, list(overrides)), run, verbose=0)

    return train


@pytest.fixture(scope="session")
def fashion_mnist_run(tmp_path_factory, cnn_yaml, train_yaml) -> Path:
    """A finished run (reported.yaml: name `reported`, one conv of 8 filters, 2 epochs on 512 of
    the shipped Fashion-MNIST images, its 200 first test images, one-hot labels), shared by the
    tests of `cnnctl report` and `cnnctl visualize`."""
    root = tmp_path_factory.mktemp("report")
    config = cnn_yaml(
        name="reported",
        layers=["{type: conv2d, filters: 8, kernel_size: 3, activation: relu}",
                "{type: max_pool2d, pool_size: 2}",
                "{type: flatten}",
                "{type: dense, units: 10, activation: softmax}"],
        data='{source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 512, '
             'max_test_samples: 200, validation_split: 0.2}',
        optimizer="{name: adam, learning_rate: 0.003}", loss="categorical_crossentropy",
        train="{epochs: 2, batch_size: 64, seed: 1, tensorboard: false}")
    train_yaml(config, root / "reported.yaml", root / "run")
    return root / "run"


# --------------------------------------------------------------------------- models
@pytest.fixture(scope="session")
def model_yaml():
    """model_yaml(input_shape, layers) -> a `model:` section: the input shape and these layers
    (one-line YAML mappings)."""

    def model_yaml(input_shape: list[int], layers: list[str]) -> str:
        return (f"model:\n  input_shape: {input_shape}\n  layers:\n"
                + "".join(f"    - {layer}\n" for layer in layers))

    return model_yaml


@pytest.fixture(scope="session")
def inbound():
    """inbound(model, name) -> the names of the layers whose outputs layer `name` of a
    functional model reads."""

    def inbound(model, name: str) -> list[str]:
        found: list[str] = []

        def walk(value):
            if isinstance(value, dict):
                if "keras_history" in value:
                    found.append(value["keras_history"][0])
                else:
                    for v in value.values():
                        walk(v)
            elif isinstance(value, list | tuple):
                for v in value:
                    walk(v)

        walk(next(layer for layer in model.get_config()["layers"]
                  if layer["name"] == name)["inbound_nodes"])
        return found

    return inbound


@pytest.fixture
def build_error(write_yaml):
    """build_error(text) -> (the config file, the ConfigError that building its model raises)."""
    from cnnctl.errors import ConfigError

    def build_error(text: str) -> tuple[str, str]:
        path = write_yaml(text)
        with pytest.raises(ConfigError) as e:
            model_lib.build(config_lib.load(path))
        return str(path), str(e.value)

    return build_error


# --------------------------------------------------------------------------- real data
# ../shared/data beside the checkout (see its README.md: Fashion-MNIST IDX files, CIFAR-10 as
# JPEG folders); CNNCTL_SHARED_DATA names another place.
SHARED_DATA = os.environ.get("CNNCTL_SHARED_DATA") or str(
    Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture
def use_keras_home(monkeypatch):
    """Point keras.datasets at KERAS_HOME=path for one test. Keras reads $KERAS_HOME once, at
    import, so its stored copy is patched too."""
    from keras.src.backend import config as keras_config

    def use(path):
        monkeypatch.setenv("KERAS_HOME", str(path))
        monkeypatch.setattr(keras_config, "_KERAS_DIR", str(path))
        return path

    return use


@pytest.fixture(scope="session")
def fashion_mnist_files(tmp_path_factory):
    """A KERAS_HOME folder holding datasets/fashion-mnist/ (the four real IDX files)."""
    import os
    import shutil

    source = os.path.join(SHARED_DATA, "fashion-mnist")
    if not os.path.isdir(source):
        pytest.skip(f"{source} not found")
    home = tmp_path_factory.mktemp("keras_home")
    target = home / "datasets" / "fashion-mnist"
    target.mkdir(parents=True)
    for name in os.listdir(source):
        shutil.copyfile(os.path.join(source, name), target / name)
    return home


@pytest.fixture
def fashion_mnist_home(fashion_mnist_files, use_keras_home):
    """keras.datasets.fashion_mnist.load_data() works offline during this test."""
    return use_keras_home(fashion_mnist_files)


@pytest.fixture(scope="session")
def cifar_jpgs():
    """cifar_jpgs(root, count, place=None) -> root: real CIFAR-10 JPEGs taken from
    cifar10-jpg.tar.gz in one pass, without extracting the other files: the first
    `count(split, class)` files of each split and class, written to
    root / place(split, class) / NAME (default place: SPLIT/CLASS). Skips without the archive."""
    import os
    import tarfile

    archive = os.path.join(SHARED_DATA, "cifar10-jpg.tar.gz")
    if not os.path.isfile(archive):
        pytest.skip(f"{archive} not found")

    def take(root: Path, count, place=None) -> Path:
        taken: dict[tuple[str, str], int] = {}
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")  # cifar10-jpg/SPLIT/CLASS/NNNN.jpg
                if not member.isfile() or len(parts) != 4:
                    continue
                key = (parts[1], parts[2])
                if taken.get(key, 0) < count(*key):
                    taken[key] = taken.get(key, 0) + 1
                    folder = root / (place(*key) if place else Path(*key))
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / parts[3]).write_bytes(tar.extractfile(member).read())
        return root

    return take


@pytest.fixture(scope="session")
def cifar_folders(tmp_path_factory, cifar_jpgs):
    """root/{train,test}/{airplane,cat,ship}/*.jpg: the first 20 real CIFAR-10 JPEGs of 3 classes
    per split."""
    return cifar_jpgs(tmp_path_factory.mktemp("cifar"),
                      lambda split, c: 20 if c in ("airplane", "cat", "ship") else 0)


FASHION_MNIST = Path(SHARED_DATA) / "fashion-mnist"


@pytest.fixture(scope="session")
def fashion_mnist_idx():
    """fashion_mnist_idx(split, count) -> (images [count, 28, 28, 1] uint8, labels int64): the
    first `count` of the real IDX files (split: train or t10k); skips without them."""
    if not FASHION_MNIST.is_dir():
        pytest.skip(f"needs {FASHION_MNIST}")

    def read_idx(path: Path, header: int, magic: int) -> np.ndarray:
        """An IDX file's payload: a 16-byte header for images, 8 bytes for labels, big-endian."""
        raw = gzip.decompress(path.read_bytes())
        assert int.from_bytes(raw[:4], "big") == magic, f"{path} is not an IDX file"
        return np.frombuffer(raw, dtype=np.uint8, offset=header)

    def fashion_mnist(split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
        images = read_idx(FASHION_MNIST / f"{split}-images-idx3-ubyte.gz", 16, 2051)
        labels = read_idx(FASHION_MNIST / f"{split}-labels-idx1-ubyte.gz", 8, 2049)
        return images.reshape(-1, 28, 28, 1)[:count], labels[:count].astype(np.int64)

    return fashion_mnist


@pytest.fixture(scope="session")
def fashion_mnist_arrays(fashion_mnist_idx):
    """((x, y) the first 2,000 real training images, (x, y) the first 500 test images)."""
    return fashion_mnist_idx("train", 2000), fashion_mnist_idx("t10k", 500)


@pytest.fixture(scope="session")
def tiny_cnn():
    """tiny_cnn(units, activation) -> an untrained 28x28x1 CNN (rescaling, one conv of 8
    filters, max-pooling, a dense output of `units`)."""
    from cnnctl.backend import keras

    def tiny_cnn(units: int, activation: str):
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(units, activation=activation),
        ])

    return tiny_cnn


@pytest.fixture(scope="session")
def fashion_mnist_cnn(fashion_mnist_arrays, tiny_cnn):
    """The 10-class softmax `tiny_cnn`, trained one epoch on `fashion_mnist_arrays`' training
    images (about 0.7 test accuracy)."""
    from cnnctl.backend import keras

    (x, y), _ = fashion_mnist_arrays
    keras.utils.set_random_seed(0)
    model = tiny_cnn(10, "softmax")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="session")
def colour_npz():
    """colour_npz(path, train, test) -> path: an .npz of 16x16 RGB noise whose class (0, 1, 2)
    is the channel made brighter."""

    def write_colour_npz(path: Path, train: int, test: int) -> Path:
        rng = np.random.default_rng(0)

        def images(n):
            y = np.arange(n) % 3
            x = rng.integers(0, 120, (n, 16, 16, 3))
            x[np.arange(n), :, :, y] += 120
            return x.astype(np.uint8), y

        (x, y), (xt, yt) = images(train), images(test)
        np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
        return path

    return write_colour_npz


# --------------------------------------------------------------------------- data sets
@pytest.fixture(scope="session")
def load_splits():
    """load_splits(data, *, label_mode="int", splits=("train", "val", "test"),
    input_shape=(28, 28, 1), batch_size=32, seed=1, augmentation=None) -> the Splits that
    cnnctl.data.load.load gives for a config with this `data:` section (a dict)."""
    from cnnctl.config.schema import Config
    from cnnctl.data import load as data_lib

    def make_config(data: dict, *, input_shape=(28, 28, 1), batch_size=32, seed=1,
                    augmentation: dict | None = None) -> Config:
        return Config.model_validate({"model": {"input_shape": list(input_shape)}, "data": data,
                                      "augmentation": augmentation or {},
                                      "train": {"batch_size": batch_size, "seed": seed}})

    def load(data: dict, *, label_mode="int", splits=("train", "val", "test"), **kwargs):
        config = make_config(data, **kwargs)
        return data_lib.load(config, input_shape=tuple(config.model.input_shape),
                             label_mode=label_mode, splits=splits)

    return load


def _collect(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="session")
def collect():
    """collect(dataset) -> (images, labels) of every batch of a tf.data dataset, concatenated."""
    return _collect


@pytest.fixture(scope="session")
def epoch_of():
    """epoch_of(splits, epoch=0, step=0): one epoch of the endless training stream (from `step`
    on)."""

    def epoch_of(splits, epoch: int = 0, step: int = 0):
        return splits.train_from(epoch, step).take(splits.steps_per_epoch - step)

    return epoch_of


@pytest.fixture(scope="session")
def ids_npz():
    """ids_npz(path, n=300, size=6) -> path: an .npz of images whose pixels (0,0) and (0,1)
    encode their index; labels i % 3, as [N, 1]; the test split is the first 30."""

    def ids_npz(path: Path, n: int = 300, size: int = 6) -> Path:
        x = np.zeros((n, size, size, 3), np.uint8)
        x[:, 0, 0, :] = (np.arange(n) % 256)[:, None]
        x[:, 0, 1, :] = (np.arange(n) // 256)[:, None]
        np.savez(path, x_train=x, y_train=(np.arange(n) % 3)[:, None], x_test=x[:30],
                 y_test=np.arange(30) % 3)
        return path

    return ids_npz


@pytest.fixture(scope="session")
def image_ids():
    """image_ids(dataset) -> the index each image of an `ids_npz` data set encodes, in order."""

    def ids(ds) -> np.ndarray:
        x, _ = _collect(ds)
        return (x[:, 0, 0, 0] + 256 * x[:, 0, 1, 0]).astype(int)

    return ids


@pytest.fixture(scope="session")
def odd_images():
    """odd_images(folder) -> {name: path}: one file per awkward kind (sizes, modes and formats
    a user's folder may hold) written into `folder`."""
    from PIL import Image

    def odd_images(folder: Path) -> dict[str, Path]:
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

    return odd_images
