"""Training data: a config's data set as batched pipelines (tf.data, or NumPy `PyDataset`s on the
JAX and PyTorch backends), and the preprocessing and augmentation layers that go with it."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cnnctl.data import images
from cnnctl.data import sources
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError, ConfigValueError


SPLITS = ("train", "val", "test")
# Image folders (`data.cache`) are decoded into memory up to this many bytes of uint8 pixels.
CACHE_BYTES = 2 * 1024**3
LABEL_MODES = ("int", "categorical", "binary")


@dataclasses.dataclass
class Splits:
    """A data set ready for `model.fit` / `model.evaluate`.

    Images are float32 [B, H, W, C] with pixel values 0..255 (preprocessing is in the model).
    """

    # tf.data.Dataset or keras.utils.PyDataset (see `_use_arrays`)
    train: Any  # endless, seeded reshuffle per epoch; augmented if placement: pipeline
    val: Any  # not shuffled, never augmented
    test: Any
    class_names: list[str]
    counts: dict[str, int]  # images per split, 0 for a split that is absent or not asked for
    class_counts: dict[str, dict[str, int]]  # split -> class name -> images
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable files left out
    # split -> images the source holds before data.max_train_samples / max_test_samples
    # (train: before the validation carve)
    available: dict[str, int] = dataclasses.field(default_factory=dict)
    # split -> the image file of each example, in pipeline order; None for in-memory data
    files: dict[str, "list[str] | None"] = dataclasses.field(default_factory=dict)
    # train_from(epoch, step): the endless training stream from that point on. The order of each
    # epoch depends only on (train.seed, epoch), so a resumed run sees the batches it would have.
    train_from: "Callable[[int, int], Any] | None" = None
    steps_per_epoch: int = 0


def load(config, *, input_shape, label_mode: str, splits=SPLITS, multiple: int = 1,
         progress: "Callable[[str, int, int], None] | None" = None) -> Splits:
    """Load the data set of `config.data` as batched pipelines for a model with `input_shape`.

    Args:
        config: a validated `cnnctl.config.schema.Config`; uses `data`, `train.batch_size`,
            `train.seed` and `augmentation`.
        input_shape: the model's (height, width, channels): images are resized to it and read
            as grayscale (1 channel) or RGB (3).
        label_mode: "int" (sparse int32), "categorical" (one-hot float32) or "binary"
            (float32 [B, 1], two classes only).
        splits: the splits to build; the others are None.
        multiple: every batch holds a multiple of this many images (`train.distribute:
            data_parallel` shards each batch over this many devices): each epoch leaves out
            fewer than `multiple` images, other ones every epoch; validation and test leave out
            their last ones (`.whole()` gives them all). In-memory data sets only.
        progress: called as progress(split, files checked, files in all) while the image
            files of a split are checked (and decoded), every few hundred files.

    Returns:
        Splits. `data.max_train_samples` / `max_test_samples` keep the first N examples
        (folders: in class-interleaved order, see `sources.folder_source`); `data.validation_split`
        then moves a seeded random fraction of train into val.

    Raises:
        CnnctlError: the data cannot be found or read, or does not fit the model or loss.
    """
    data = config.data
    if data is None:
        raise CnnctlError("the config has no `data:` section; add one, e.g. "
                          "data: {source: keras, name: mnist}")
    if label_mode not in LABEL_MODES or not set(splits) <= set(SPLITS):
        raise ValueError(f"label_mode must be one of {LABEL_MODES} and splits among {SPLITS}; "
                         f"received label_mode={label_mode!r}, splits={splits!r}")
    spec = images.image_spec(input_shape, data.image_size, data.color_mode)
    carving = data.validation_split > 0
    need = set(splits) - {"val"} | ({"train" if carving else "val"} if "val" in splits else set())
    if carving:
        need.add("train")  # validation images must be kept out of train even when val isn't built
    class_names, parts = sources.SOURCES[data.source](data, need)

    available = {name: len(part) for name, part in parts.items()}
    for name, limit in (("train", data.max_train_samples), ("test", data.max_test_samples)):
        if name in parts and limit:
            parts[name] = parts[name].take(slice(None, limit))
    if carving and "train" in parts:
        parts["train"], parts["val"] = carve(parts["train"], data.validation_split,
                                             config.train.seed)

    skipped: list[tuple[str, str]] = []
    before = {name: np.bincount(part.labels, minlength=len(class_names))
              for name, part in parts.items()}
    parts = {name: _prepare(part, spec, skipped, data,
                            None if progress is None else functools.partial(progress, name))
             for name, part in parts.items() if name in splits}
    for name, part in parts.items():
        _check_readable(name, before[name], part, class_names, data, skipped)
    if label_mode == "binary" and len(class_names) != 2:
        raise ConfigValueError("loss", f"binary_crossentropy needs 2 classes but the data has "
                               f"{len(class_names)}; use categorical_crossentropy or "
                               "sparse_categorical_crossentropy")

    augment = []
    if config.augmentation.placement == "pipeline":
        augment = augmentation_layers(config.augmentation, seed=config.train.seed)
    n = len(class_names)
    if _use_arrays(parts, data):
        from cnnctl.data import arrays

        device = _on_device(data, parts)
        pipelines = {name: arrays.Batches(part, n, label_mode, on_device=device,
                                          multiple=multiple)
                     for name, part in parts.items() if name != "train"}
        stream = (lambda part: arrays.train_stream(part, n, label_mode, config.train, augment,
                                                   on_device=device, multiple=multiple))
    else:
        if multiple > 1:
            raise ConfigValueError("train.distribute", "data_parallel shards in-memory data sets "
                                   "only (keras, npz, or image folders decoded into memory: "
                                   "data.cache true, files of the model's size); these images "
                                   "are decoded by tf.data in every epoch")
        if data.on_device is True:
            raise ConfigValueError("data.on_device", "true needs the jax or torch backend and an "
                                   "in-memory data set (the tensorflow backend, and image files "
                                   "decoded in every epoch, feed from tf.data on the CPU); set "
                                   "KERAS_BACKEND=jax, or on_device: auto")
        from cnnctl.data import tfdata

        pipelines = {name: tfdata.pipeline(part, spec, n, label_mode)
                     for name, part in parts.items() if name != "train"}
        stream = (lambda part: tfdata.train_stream(part, spec, n, label_mode, config.train,
                                                   augment))
    train_from = None
    if "train" in parts:
        train_from = stream(parts["train"])
        pipelines["train"] = train_from(0, 0)
    class_counts = {name: dict(zip(class_names, np.bincount(part.labels, minlength=len(class_names))
                                   .tolist())) for name, part in parts.items()}
    return Splits(train=pipelines.get("train"), val=pipelines.get("val"),
                  test=pipelines.get("test"), class_names=list(class_names),
                  counts={name: len(parts[name]) if name in parts else 0 for name in SPLITS},
                  class_counts=class_counts, skipped=skipped, train_from=train_from,
                  available={name: n for name, n in available.items() if name in parts},
                  files={name: None if part.files is None or part.encoded
                         else [str(f) for f in part.files] for name, part in parts.items()},
                  steps_per_epoch=arrays_steps(len(parts["train"]), config.train.batch_size,
                                               multiple) if "train" in parts else 0)


def arrays_steps(n: int, batch_size: int, multiple: int = 1) -> int:
    """Steps of an epoch of n images whose last batch is cut to a multiple of `multiple`."""
    return -(-(n - n % batch_size % multiple) // batch_size)


def _use_arrays(parts: dict, data) -> bool:
    """Feed Keras from NumPy (no TensorFlow) rather than tf.data: on the JAX and PyTorch
    backends, for data sets held in memory (image folders too, once decoded: see `_prepare`).
    Image files left on disk are decoded by tf.data on any backend.

    Raises:
        CnnctlError: image files to decode and no TensorFlow installed.
    """
    if keras.backend.backend() == "tensorflow":
        return False
    if all(part.images is not None for part in parts.values()):
        return True
    _need_tensorflow(data)
    return False


# `data.on_device: auto` holds a data set on the GPU up to this many bytes.
ON_DEVICE_BYTES = 4 * 1024**3


def _on_device(data, parts: dict) -> bool:
    """Whether the in-memory data set goes to the accelerator (`data.on_device`)."""
    if data.on_device != "auto":
        return data.on_device
    size = sum(part.images.nbytes + part.labels.nbytes for part in parts.values())
    return size <= ON_DEVICE_BYTES and _accelerator()


def _accelerator() -> bool:
    """A GPU (or other accelerator) is the JAX or PyTorch backend's default device."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def _need_tensorflow(data) -> None:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise ConfigValueError("data.source", f"{data.source}: these image files are decoded with "
                               "tf.data (they need resizing, or data.cache is off, or they do "
                               "not fit in memory), and TensorFlow is not installed; install "
                               "tensorflow, or use an in-memory source (keras, npz)") from None


def carve(part: sources.Part, fraction: float, seed: int) -> tuple[sources.Part, sources.Part]:
    """Split off a seeded random `fraction` of a part as validation; both keep their order."""
    n = len(part)
    k = int(round(n * fraction))
    if k == 0 or k == n:
        raise ConfigValueError(
            "data.validation_split",
            f"{fraction} of {n} training images leaves "
            f"{'no validation' if k == 0 else 'no training'} images; use more data "
            f"or a {'larger' if k == 0 else 'smaller'} fraction")
    order = np.random.default_rng(seed).permutation(n)
    return part.take(np.sort(order[k:])), part.take(np.sort(order[:k]))


def _check_readable(split: str, before: np.ndarray, part: sources.Part, class_names, data,
                    skipped: list[tuple[str, str]]) -> None:
    """Refuse a split, or a class of it, whose files were all skipped as unreadable."""
    key = {"train": "data.train_dir", "val": "data.val_dir", "test": "data.test_dir"}[split]
    if data.source == "folder" and split == "val" and data.validation_split > 0:
        key = "data.train_dir"
    folder = getattr(data, key.split(".")[1], None)
    where = f" in {folder}" if folder else ""
    example = f", e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
    if not len(part):
        raise ConfigValueError(key, f"no readable images{where} ({len(skipped)} skipped as "
                          f"unreadable{example}); fix or replace the files")
    after = np.bincount(part.labels, minlength=len(class_names))
    empty = [class_names[i] for i in np.flatnonzero((before > 0) & (after == 0))]
    if empty:
        example = next((f", e.g. {path}: {reason}" for path, reason in skipped
                        if Path(path).parent.name == empty[0]), example)
        raise ConfigValueError(key, f"no readable images for class {', '.join(map(repr, empty))}"
                          f"{where} (all its files were skipped as unreadable{example}); fix or "
                          "replace them, or remove the class folder")


def _prepare(part: sources.Part, spec: images.ImageSpec, skipped: list, data,
             progress=None) -> sources.Part:
    """Bring a split to the model's shape: in-memory images resized, image files checked (the
    unreadable ones dropped) and, when `data.cache` and they fit in CACHE_BYTES, decoded into
    memory by that same check, so that each file is read and decoded once."""
    if part.images is not None:
        return dataclasses.replace(part, images=images.fit_arrays(part.images, spec))
    if part.encoded:
        return part
    fits = data.cache and len(part) * int(np.prod(spec.shape)) <= CACHE_BYTES
    checks = images.probe_all(part.files.tolist(), keep=spec if fits else None,
                              progress=progress)
    skipped.extend((str(f), c.reason) for f, c in zip(part.files, checks) if c.reason)
    readable = np.array([c.reason is None for c in checks], bool)
    checks = [c for c in checks if c.reason is None]
    part = dataclasses.replace(part.take(readable), native=np.array([c.native for c in checks], bool))
    if not fits or not checks:
        return part
    pixels = [c.pixels for c in checks]
    rest = [i for i, p in enumerate(pixels) if p is None]  # need resizing, or TensorFlow's decode
    if rest:
        _need_tensorflow(data)
        from cnnctl.data import tfdata

        for i, image in zip(rest, tfdata.decode_all(part.take(np.array(rest)), spec)):
            pixels[i] = image
    return dataclasses.replace(part, images=np.stack(pixels))


# --------------------------------------------------------------------------- layers
def preprocessing_layer(preprocessing, channels: int) -> "keras.layers.Layer | None":
    """One Rescaling layer computing (x * rescale - mean) / std per channel, or None when it
    would do nothing. Put it first in the model, after any augmentation layers (those expect
    0..255), so that a saved model carries its own preprocessing.

    Raises:
        ConfigValueError: mean or std has neither 1 nor `channels` values.
    """
    rescale = 1.0 if preprocessing.rescale is None else float(preprocessing.rescale)
    norm = preprocessing.normalize
    if norm is None:
        return None if rescale == 1.0 else keras.layers.Rescaling(rescale, name="preprocessing")
    values = {}
    for key in ("mean", "std"):
        given = list(getattr(norm, key))
        if len(given) not in (1, channels):
            needs = ("1 value (the model's input has 1 channel)" if channels == 1 else
                     f"1 or {channels} values (one per channel)")
            raise ConfigValueError(f"data.preprocessing.normalize.{key}",
                                   f"needs {needs}, got {len(given)}")
        values[key] = given * channels if len(given) == 1 else given
    scale = [rescale / s for s in values["std"]]
    offset = [-m / s for m, s in zip(values["mean"], values["std"])]
    return keras.layers.Rescaling(scale, offset, name="preprocessing")


@keras.saving.register_keras_serializable(package="cnnctl")
class RandomPadCrop(keras.layers.Layer):
    """Pad-and-crop: pad each image to `height` x `width` and cut a random window of its own size
    back out, independently per image, in training; the identity at inference.

    The image keeps its size, so the model's input shape stays as configured (Keras's RandomCrop
    would shrink it, and resize rather than pass through at inference). The classic CIFAR
    "pad 4 pixels and crop 32x32" is `height: 40, width: 40`. Padding is zeros (fill_mode
    constant) or a mirror image (reflect).
    """

    def __init__(self, height: int, width: int, fill_mode: str = "constant", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width, self.fill_mode, self.seed = height, width, fill_mode, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        for key, size, dim in (("height", self.height, input_shape[1]),
                               ("width", self.width, input_shape[2])):
            if dim is not None and size < dim:
                raise CnnctlError(f"augmentation random_crop: {key} {size} is smaller than the "
                                  f"image {key} {dim}; it is the padded size a random {dim}-pixel "
                                  f"window is cut from (e.g. {dim + 8} for 4 pixels of padding)")

    def call(self, images, training=None):
        if not training:
            return images
        ops = keras.ops
        h, w = images.shape[1], images.shape[2]
        top, left = (self.height - h) // 2, (self.width - w) // 2
        padded = ops.pad(images, [[0, 0], [top, self.height - h - top],
                                  [left, self.width - w - left], [0, 0]], mode=self.fill_mode)
        batch = ops.shape(images)[0]
        dy = keras.random.randint((batch, 1), 0, self.height - h + 1, seed=self.seed_generator)
        dx = keras.random.randint((batch, 1), 0, self.width - w + 1, seed=self.seed_generator)
        rows = ops.broadcast_to((dy + ops.arange(h))[:, :, None, None],
                                (batch, h, self.width, images.shape[3]))
        cropped = ops.take_along_axis(padded, rows, axis=1)
        cols = ops.broadcast_to((dx + ops.arange(w))[:, None, :, None],
                                (batch, h, w, images.shape[3]))
        return ops.take_along_axis(cropped, cols, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "fill_mode": self.fill_mode, "seed": self.seed}


def front_layers(config, *, every_augmentation: bool = False) -> list["keras.layers.Layer"]:
    """The layers in front of the configured network: augmentation (when placed in the model,
    or always with `every_augmentation`, to check it) and preprocessing, each built on the
    model's input shape, so that a config mistake in them surfaces here, not in training.

    Raises:
        ConfigValueError: a field of augmentation or data.preprocessing that does not fit.
    """
    shape = tuple(config.model.input_shape)
    front = []
    if config.augmentation.placement == "model" or every_augmentation:
        front += augmentation_layers(config.augmentation, seed=config.train.seed)
        for i, spec in enumerate(config.augmentation.layers):
            if spec.type != "random_crop":
                continue
            for key, size, dim in (("height", spec.height, shape[0]), ("width", spec.width, shape[1])):
                if size is not None and dim is not None and size < dim:
                    raise ConfigValueError(
                        f"augmentation.layers[{i}].{key}", f"{size} is smaller than the image "
                        f"{key} {dim}; it is the padded size a random {dim}-pixel window is cut "
                        f"from (e.g. {dim + 8} for 4 pixels of padding)")
    if config.data is not None:
        prep = preprocessing_layer(config.data.preprocessing, shape[-1])
        if prep is not None:
            front.append(prep)
    x = keras.Input(shape=shape)
    for layer in front:
        x = layer(x)
    return front


# type: (fields it may use, fields it needs: a tuple means any one of them)
_AUGMENT_FIELDS = {
    "random_flip": ({"mode"}, []),
    "random_rotation": ({"factor", "fill_mode"}, ["factor"]),
    "random_zoom": ({"factor", "height_factor", "width_factor", "fill_mode"},
                    [("height_factor", "factor")]),
    "random_translation": ({"factor", "height_factor", "width_factor", "fill_mode"},
                           [("height_factor", "factor"), ("width_factor", "factor")]),
    "random_contrast": ({"factor"}, ["factor"]),
    "random_brightness": ({"factor"}, ["factor"]),
    "random_crop": ({"height", "width", "fill_mode"}, ["height", "width"]),
}


def augmentation_layers(augmentation, *, seed: int | None = None) -> list["keras.layers.Layer"]:
    """Keras random preprocessing layers for `augmentation.layers`, active in training only.

    They work on pixel values 0..255 (brightness and contrast use value_range (0, 255)), so they
    go before `preprocessing_layer`. random_flip without `mode` flips both ways (Keras's
    default); random_zoom's and random_translation's `factor` stands for both height_factor and
    width_factor; random_crop is pad-and-crop, see `RandomPadCrop`.

    Raises:
        ConfigValueError: a field is missing or does not apply, keyed augmentation.layers[i].FIELD.
    """
    layers = []
    for i, spec in enumerate(augmentation.layers):
        where = f"augmentation.layers[{i}]"
        allowed, needed = _AUGMENT_FIELDS[spec.type]
        # a field is given when it has a value: a run's resolved config.yaml lists every
        # field, null where it was left out
        given = {f for f in spec.model_fields_set if getattr(spec, f) is not None}
        for extra in sorted(given - allowed - {"type"}):
            raise ConfigValueError(f"{where}.{extra}", f"{spec.type} does not use `{extra}`; it "
                                   f"takes {', '.join(sorted(allowed)) or 'no options'}")
        for need in needed:
            options = need if isinstance(need, tuple) else (need,)
            if all(getattr(spec, o) is None for o in options):
                raise ConfigValueError(f"{where}.{options[0]}",
                                       f"{spec.type} needs `{'` or `'.join(options)}`")
        layers.append(_augment_layer(spec, where, None if seed is None else seed + i))
    return layers


def _augment_layer(spec, where: str, seed):
    kl = keras.layers
    factor = spec.factor
    height_factor = spec.height_factor if spec.height_factor is not None else factor
    width_factor = spec.width_factor if spec.width_factor is not None else factor
    if spec.type == "random_flip":
        return kl.RandomFlip(spec.mode or "horizontal_and_vertical", seed=seed)
    if spec.type == "random_rotation":
        return kl.RandomRotation(factor, fill_mode=spec.fill_mode or "reflect", seed=seed)
    if spec.type == "random_zoom":
        return kl.RandomZoom(height_factor, width_factor, fill_mode=spec.fill_mode or "reflect",
                             seed=seed)
    if spec.type == "random_translation":
        return kl.RandomTranslation(height_factor, width_factor, fill_mode=spec.fill_mode or "reflect",
                                    seed=seed)
    if spec.type == "random_contrast":
        return kl.RandomContrast(factor, value_range=(0, 255), seed=seed)
    if spec.type == "random_brightness":
        return kl.RandomBrightness(factor, value_range=(0, 255), seed=seed)
    fill = spec.fill_mode or "constant"
    if fill not in ("constant", "reflect"):
        raise ConfigValueError(f"{where}.fill_mode", f"random_crop pads with constant (zeros) "
                               f"or reflect, not {fill}")
    return RandomPadCrop(spec.height, spec.width, fill_mode=fill, seed=seed)
