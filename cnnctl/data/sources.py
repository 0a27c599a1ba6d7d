"""Where images come from (config `data.source`): keras.datasets, .npz files, TensorFlow
Datasets, folders of image files. Each source gives its class names and its splits as `Part`s."""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import pickle
import socket
import zipfile
from pathlib import Path

import numpy as np

from cnnctl.data import images
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError, ConfigValueError

MAX_CLASSES = 100_000  # labels above it are a broken file, not a data set: class names are sized by them


def shown_path(path: Path) -> str:
    """A path as given, plus where a relative one was looked for (the current directory)."""
    return str(path) if path.is_absolute() else (
        f"{path} (relative to the current directory, {Path.cwd()})")


@dataclasses.dataclass
class Part:
    """One split before it is a pipeline: images in memory, or files to decode (paths, or the
    encoded bytes themselves when `encoded`)."""

    labels: np.ndarray
    images: np.ndarray | None = None
    files: np.ndarray | None = None
    native: np.ndarray | None = None  # per file: TensorFlow can decode it (else PIL does)
    encoded: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index) -> "Part":
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Part(self.labels[index], pick(self.images), pick(self.files), pick(self.native),
                    self.encoded)


# --------------------------------------------------------------------------- keras.datasets
KERAS_CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"],
}

# The files keras.datasets (Keras 3.15) keeps under $KERAS_HOME/datasets/, and for the CIFAR
# archives the name they are published under.
KERAS_FILES = {
    "mnist": {"mnist.npz": None},
    "fashion_mnist": {f"fashion-mnist/{f}": None for f in (
        "train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")},
    "cifar10": {"cifar-10-batches-py-target_archive": "cifar-10-python.tar.gz"},
    "cifar100": {"cifar-100-python-target_archive": "cifar-100-python.tar.gz"},
}


def keras_datasets_dir() -> Path:
    """The folder keras.datasets reads and downloads to: $KERAS_HOME/datasets, by default
    ~/.keras/datasets (Keras reads $KERAS_HOME once, when it is imported)."""
    from cnnctl import keras_compat

    home = os.path.expanduser(keras_compat.keras_home())
    if not os.access(home, os.W_OK):
        home = "/tmp/.keras"  # keras.utils.get_file falls back here too
    return Path(home) / "datasets"


def keras_source(data, need) -> tuple[list[str], dict[str, Part]]:
    """keras.datasets NAME: train and test arrays (all of them: Keras loads both anyway)."""
    (x_train, y_train), (x_test, y_test) = _keras_load(data.name)
    class_names = KERAS_CLASS_NAMES.get(data.name) or _cifar100_names()
    return class_names, {"train": Part(y_train.reshape(-1), images=x_train),
                         "test": Part(y_test.reshape(-1), images=x_test)}


def _keras_load(name: str):
    """keras.datasets.NAME.load_data(), downloading if need be; a clear error offline."""
    folder = keras_datasets_dir()
    saved = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an unreachable server ends the download instead of hanging
    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as e:  # keras.utils.get_file raises a bare Exception for URL failures
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        reason = reason.split(" -- ", 1)[-1]  # "URL fetch failure on URL: None -- [Errno -2] ..."
        missing = [f for f in KERAS_FILES[name] if not (folder / f).exists()]
        if not missing:  # damaged: unreadable, or a wrong checksum and the fresh download failed
            raise ConfigValueError("data.name", f"cannot load {name} from {folder} ({reason}); replace "
                              f"{', '.join(KERAS_FILES[name])} there with complete copies, or "
                              "delete them and run once with network") from None
        where = (folder / missing[0]).parent
        files = ", ".join(Path(f).name if KERAS_FILES[name][f] is None
                          else f"{KERAS_FILES[name][f]} renamed to {Path(f).name}" for f in missing)
        message = (f"data.name: {name} is not in the Keras cache and cannot be downloaded: put "
                   f"{files} in {where}/ (copies of the files keras.datasets downloads), or run "
                   f"once with network (download failed: {reason})")
        raise CnnctlError(message) from None
    finally:
        socket.setdefaulttimeout(saved)


def _cifar100_names() -> list[str]:
    """CIFAR-100's fine label names, from the `meta` file Keras extracted, else "0".."99"."""
    meta = keras_datasets_dir() / "cifar-100-python-target" / "cifar-100-python" / "meta"
    try:
        with open(meta, "rb") as f:  # written by the CIFAR authors; Keras unpickles it too
            names = pickle.load(f, encoding="bytes")[b"fine_label_names"]
        return [n.decode() for n in names]
    except (OSError, KeyError, pickle.UnpicklingError, EOFError):
        return [str(i) for i in range(100)]


# --------------------------------------------------------------------------- npz
def resolve_npz(path: str):
    """A .npz path, or `cnnctl://NAME.npz` for a file shipped in cnnctl/data/.

    Raises:
        CnnctlError: the file does not exist.
    """
    if path.startswith("cnnctl://"):
        shipped = importlib.resources.files("cnnctl.data")
        name = path[len("cnnctl://"):]
        if name and "/" not in name and (shipped / name).is_file():
            return shipped / name
        names = sorted("cnnctl://" + p.name for p in shipped.iterdir() if p.name.endswith(".npz"))
        raise ConfigValueError("data.path", f"{path} is not shipped with cnnctl; shipped: "
                          f"{', '.join(names)}")
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "not found"
        raise ConfigValueError("data.path", f"{shown_path(file)} {what}; give a .npz file with "
                              "x_train, y_train, x_test, y_test (like keras's mnist.npz)")
    return file


def npz_source(data, need) -> tuple[list[str], dict[str, Part]]:
    """A .npz file with x_train, y_train, optionally x_test, y_test and class_names."""
    file = resolve_npz(data.path)
    try:
        with file.open("rb") as fh:
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("it holds one array, not named arrays")
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigValueError("data.path", f"cannot read {data.path} as a .npz file: {e}") from None
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing or ("x_test" in arrays) != ("y_test" in arrays):
        raise ConfigValueError("data.path", f"{data.path} has arrays {', '.join(sorted(arrays))}; it "
                          "needs x_train, y_train and optionally x_test, y_test")
    parts = {}
    for name in ("train", "test"):
        if f"x_{name}" in arrays:
            parts[name] = _npz_part(arrays[f"x_{name}"], arrays[f"y_{name}"], name, data.path)
    top = max(int(p.labels.max(initial=0)) for p in parts.values())
    if "class_names" in arrays:
        class_names = [str(c) for c in arrays["class_names"].reshape(-1)]
        if top >= len(class_names):
            raise ConfigValueError("data.path", f"{data.path} has label {top} but only "
                              f"{len(class_names)} class_names")
    else:
        class_names = [str(i) for i in range(top + 1)]
    return class_names, parts


def npz_labels(y: np.ndarray, count: int, name: str, where: str) -> np.ndarray:
    """The int64 class indices of the array y_`name` of the .npz file `where`, one per image of
    its `count`: whole numbers 0..MAX_CLASSES - 1 (whole floats too, as some sets store them).

    Raises:
        ConfigValueError: (data.path) a wrong shape or dtype, or the first label out of range.
    """
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != count or y.dtype.kind not in "iuf":
        raise ConfigValueError("data.path", f"{where}: y_{name} must hold one class index >= 0 per "
                          f"image of x_{name} ({count}); got {y.dtype} {list(y.shape)}")
    with np.errstate(invalid="ignore"):
        bad = (y < 0) | (y >= MAX_CLASSES)
        if y.dtype.kind == "f":
            bad |= ~np.isfinite(y) | (y != np.floor(y))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ConfigValueError("data.path", f"{where}: y_{name}[{first}] is {y[first].item()!r}; "
                               f"labels must be whole class indices 0..{MAX_CLASSES - 1}")
    return y.astype(np.int64)


def _npz_part(x: np.ndarray, y: np.ndarray, name: str, where: str) -> Part:
    y = npz_labels(y, len(x), name, where)
    if x.dtype.kind not in "uif":
        raise ConfigValueError("data.path", f"{where}: x_{name} must be numeric pixel values, "
                          f"got {x.dtype}")
    if x.dtype != np.uint8 and len(x):
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 255 or (x.dtype.kind == "f" and high <= 1.0):
            raise ConfigValueError("data.path", f"{where}: x_{name} must hold pixel values 0..255 (got "
                              f"{low:g}..{high:g}); rescaling is done in the model "
                              "(data.preprocessing.rescale)")
    return Part(y, images=x)


# --------------------------------------------------------------------------- tfds
def tfds_source(data, need) -> tuple[list[str], dict[str, Part]]:
    """A prepared TensorFlow Datasets set, read without downloading: its train, test and
    validation splits (those in `need`), first N examples only when max_*_samples is set."""
    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(data.data_dir) if data.data_dir else None
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    build = f"run `tfds build {data.name} --data_dir {where}` on a machine with network"
    try:
        builder = tfds.builder(data.name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:  # its message lists the whole catalogue
        message = (f"data.name: no TensorFlow Datasets set {data.name!r} in {where} nor in the "
                   f"tfds catalogue; check the name and data.data_dir, or {build}")
        raise CnnctlError(message) from None
    if not builder.is_prepared():
        raise ConfigValueError("data.name", f"TensorFlow Datasets set {data.name!r} is not in {where} "
                          f"and is not downloaded here; {build} and copy the folder over")
    info = builder.info
    keys = info.supervised_keys
    features = dict(info.features.items())
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)
            and isinstance(features.get(keys[0]), tfds.features.Image)
            and isinstance(features.get(keys[1]), tfds.features.ClassLabel)):
        raise ConfigValueError("data.name", f"TensorFlow Datasets set {data.name!r} has no (image, "
                          "class label) pair in its supervised_keys; use an image "
                          "classification set")
    image_key, label = keys[0], features[keys[1]]
    fixed = None not in (features[image_key].shape or (None,))
    names = {"train": "train", "test": "test", "val": "validation"}
    limits = {"train": data.max_train_samples, "test": data.max_test_samples}
    parts = {}
    for part, split in names.items():
        if part not in need or split not in info.splits:
            if part == "train" and part in need:
                raise ConfigValueError("data.name", f"TensorFlow Datasets set {data.name!r} has no "
                                  f"train split (it has {', '.join(info.splits)})")
            continue
        if limits.get(part):
            split = f"{split}[:{limits[part]}]"
        decoders = None if fixed else {image_key: tfds.decode.SkipDecoding()}
        x, y = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True,
                                                decoders=decoders))
        if fixed:  # decoded once, into memory, like keras.datasets
            parts[part] = Part(y.astype(np.int64), images=x)
        else:  # images of varying size stay encoded and are decoded in the pipeline
            parts[part] = Part(y.astype(np.int64), files=x, native=np.ones(len(x), bool),
                                encoded=True)
    return list(label.names), parts


# --------------------------------------------------------------------------- folders
def folder_source(data, need) -> tuple[list[str], dict[str, Part]]:
    """train_dir (class names: its sorted subfolders), val_dir, test_dir: image file paths,
    not yet checked. Files are ordered class-interleaved, see `_folder_part`.

    Raises:
        CnnctlError: a folder is missing, unreadable or empty, has no class subfolders, or a
            class folder holds no image files; each before any image is decoded.
    """
    if data.val_dir and data.validation_split > 0:
        raise ConfigValueError("data.val_dir", "set either val_dir or validation_split, not both")
    train_dir = _folder(data.train_dir, "data.train_dir")
    class_names = sorted(d.name for d in _entries(train_dir, "data.train_dir")
                         if d.is_dir() and not d.name.startswith("."))
    if not class_names:
        loose = [f for f in _entries(train_dir, "data.train_dir") if images.is_image_file(f.name)]
        holds = (f"it holds {plural(len(loose), 'image file')} but no folders" if loose
                 else "it is empty")
        raise ConfigValueError("data.train_dir", f"{train_dir} has no class subfolders ({holds}); put "
                          f"each class's images in a subfolder, e.g. {train_dir / 'cat'}/1.jpg")
    parts = {"train": _folder_part(train_dir, class_names, "data.train_dir")}
    for part, folder in (("val", data.val_dir), ("test", data.test_dir)):
        if folder and part in need:
            parts[part] = _folder_part(_folder(folder, f"data.{part}_dir"), class_names,
                                       f"data.{part}_dir")
    return class_names, parts


def _folder(path: str, key: str) -> Path:
    """The folder a `data.*_dir` value names.

    Raises:
        ConfigValueError: it does not exist or is a file.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "not found"
        raise ConfigValueError(key, f"folder {shown_path(folder)} {what}; give a folder with one "
                              "subfolder of images per class")
    return folder


def plural(n: int, noun: str) -> str:
    """`1 file`, `3 files`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _entries(folder: Path, where: str, what: str = "folder") -> list[Path]:
    """The entries of a folder, or a clear error when it cannot be listed (permissions)."""
    try:
        return list(folder.iterdir())
    except OSError as e:
        raise ConfigValueError(where, f"cannot read {what} {folder} ({e.strerror or e}); make it "
                          "readable (chmod u+rx) or remove it") from None


def _folder_part(folder: Path, class_names: list[str], where: str) -> Part:
    """The image files of a class-per-subfolder folder, interleaved class by class (1st of each
    class, 2nd of each class, ...) so that the first N files cover every class."""
    per_class = []
    for sub in sorted(d for d in _entries(folder, where)
                      if d.is_dir() and not d.name.startswith(".")):
        if sub.name not in class_names:
            raise ConfigValueError(where, f"{sub} is not a class of data.train_dir (classes: "
                              f"{', '.join(class_names)}); rename or remove it")
        files = images.list_images(sub)
        if not files:
            others = [f.name for f in _entries(sub, where, "class folder") if not f.is_dir()]
            kinds = ", ".join(images.IMAGE_EXTENSIONS)
            holds = (f"; it holds {plural(len(others), 'other file')}, e.g. {sorted(others)[0]}"
                     if others else "")
            raise ConfigValueError(where, f"class folder {sub} has no image files ({kinds}){holds}; "
                              "add images or remove it")
        per_class.append((class_names.index(sub.name), files))
    if not per_class:
        raise ConfigValueError(where, f"{folder} has no class subfolders with images")
    order = sorted(((i, label, f) for label, files in per_class for i, f in enumerate(files)))
    return Part(np.array([label for _, label, _ in order], np.int64),
                files=np.array([f for _, _, f in order]))


# --------------------------------------------------------------------------- class names
def known_class_names(data) -> list[str] | None:
    """The class names a source gives, where they are known without reading any image.

    keras.datasets sets have fixed classes; an .npz file has its class_names array or its
    labels (those arrays alone are read); a folder's classes are the subfolders of train_dir;
    a CSV source's are data.class_names or the labels of train_csv (no image is read).
    Where that would take more (tfds: building the data set) or the data is not there, or
    not readable as such, the answer is None: loading the data says what is wrong.

    Args:
        data: the config's `data` section, or None.

    Returns:
        The class names in label order, as the source gives them when the data is loaded, or None.
    """
    if data is None:
        return None
    if data.source == "keras":
        return KERAS_CLASS_NAMES.get(data.name) or (_cifar100_names() if data.name == "cifar100" else None)
    if data.source == "npz":
        return _npz_class_names(data.path)
    if data.source == "folder":
        try:  # the class folders as folder_source finds them
            names = sorted(d.name for d in Path(data.train_dir).expanduser().iterdir()
                           if d.is_dir() and not d.name.startswith("."))
        except OSError:
            return None
        return names or None
    if data.source == "csv":
        from cnnctl.data import csv_source

        return csv_source.csv_class_names(data)
    return None


def _npz_class_names(path: str) -> list[str] | None:
    """npz_source's class names from the class_names, y_train and y_test arrays alone."""
    try:
        file = resolve_npz(path)
        with file.open("rb") as fh:
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                return None
            with loaded:
                if "class_names" in loaded.files:
                    return [str(c) for c in loaded["class_names"].reshape(-1)]
                arrays = {k: loaded[k] for k in ("y_train", "y_test") if k in loaded.files}
        labels = [npz_labels(y, y.shape[0] if y.ndim else -1, k[2:], path)
                  for k, y in arrays.items()]
    except (CnnctlError, OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    if "y_train" not in loaded.files or any(y.size == 0 for y in labels):
        return None
    return [str(i) for i in range(max(int(y.max()) for y in labels) + 1)]


def _csv_source(data, need) -> tuple[list[str], dict[str, Part]]:
    """CSV / TSV label files: see `cnnctl.data.csv_source` (which builds on this module)."""
    from cnnctl.data import csv_source

    return csv_source.csv_source(data, need)


SOURCES = {"keras": keras_source, "npz": npz_source, "tfds": tfds_source,
           "folder": folder_source, "csv": _csv_source}
