"""Shared test fixtures: config files written to tmp_path and the models they build."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from cnnctl.config import load as config_lib
from cnnctl.model import build as model_lib


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
def cifar_folders(tmp_path_factory):
    """root/{train,test}/{airplane,cat,ship}/*.jpg: the first 20 real CIFAR-10 JPEGs of 3 classes
    per split, taken from cifar10-jpg.tar.gz without extracting the other 60,000 files."""
    import os
    import tarfile

    archive = os.path.join(SHARED_DATA, "cifar10-jpg.tar.gz")
    if not os.path.isfile(archive):
        pytest.skip(f"{archive} not found")
    root = tmp_path_factory.mktemp("cifar")
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")  # cifar10-jpg/SPLIT/CLASS/NNNN.jpg
            if not member.isfile() or len(parts) != 4 or parts[2] not in ("airplane", "cat", "ship"):
                continue
            key = (parts[1], parts[2])
            if taken.get(key, 0) < 20:
                taken[key] = taken.get(key, 0) + 1
                target = root / parts[1] / parts[2] / parts[3]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    return root


def write_colour_npz(path: Path, train: int, test: int) -> Path:
    """An .npz of 16x16 RGB noise whose class (0, 1, 2) is the channel made brighter."""
    import numpy as np

    rng = np.random.default_rng(0)

    def images(n):
        y = np.arange(n) % 3
        x = rng.integers(0, 120, (n, 16, 16, 3))
        x[np.arange(n), :, :, y] += 120
        return x.astype(np.uint8), y

    (x, y), (xt, yt) = images(train), images(test)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path
