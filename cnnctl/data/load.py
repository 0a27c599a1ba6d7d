"""Training data: a config's data set as batched pipelines (tf.data, or NumPy `PyDataset`s on the
JAX and PyTorch backends), split into train, validation and test."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cnnctl.data import batches, images
from cnnctl.data import fingerprint as fingerprints
from cnnctl.data import sources
from cnnctl.data.splits import SPLITS, training_splits
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError, ConfigValueError


# Image folders (`data.cache`) are decoded into memory up to this many bytes of uint8 pixels.
CACHE_BYTES = 2 * 1024**3


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
    # what the data was (`cnnctl.data.fingerprint`): a resumed run checks it is unchanged
    fingerprint: dict = dataclasses.field(default_factory=dict)


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
    if label_mode not in batches.LABEL_MODES or not set(splits) <= set(SPLITS):
        raise ValueError(f"label_mode must be one of {batches.LABEL_MODES} and splits among {SPLITS}; "
                         f"received label_mode={label_mode!r}, splits={splits!r}")
    from cnnctl.model import strong_augment

    strong_augment.check_labels(config, label_mode)  # before the data is read
    spec = images.image_spec(input_shape, data.image_size, data.color_mode)
    carving = data.validation_split > 0
    need = set(splits) - {"val"} | ({"train" if carving else "val"} if "val" in splits else set())
    if carving:
        need.add("train")  # validation images must be kept out of train even when val isn't built
    class_names, parts = sources.SOURCES[data.source](data, need)

    available = {name: len(part) for name, part in parts.items()}
    parts = training_splits(parts, data, config.train.seed)

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
    if config.augmentation.placement == "pipeline":  # the model's layers, run in the pipeline
        from cnnctl.model import inputs

        augment = inputs.augmentation_layers(config.augmentation, seed=config.train.seed)
    n = len(class_names)
    if _use_arrays(parts, data):
        from cnnctl.data import arrays

        device = _on_device(data, parts)
        pipelines = {name: arrays.Batches(part, n, label_mode, on_device=device,
                                          multiple=multiple)
                     for name, part in parts.items() if name != "train"}
        stream = (lambda part: arrays.train_stream(part, n, label_mode, config.train, augment,
                                                   on_device=device, multiple=multiple,
                                                   order=_order(data, part, config.train.seed)))
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
                                                   augment, order=_order(data, part,
                                                                         config.train.seed)))
    train_from = None
    if "train" in parts:
        train_from = stream(parts["train"])
        pipelines["train"] = train_from(0, 0)
    class_counts = {name: dict(zip(class_names, np.bincount(part.labels, minlength=len(class_names))
                                   .tolist())) for name, part in parts.items()}
    steps = arrays_steps(len(parts["train"]), config.train.batch_size,
                         multiple) if "train" in parts else 0
    return Splits(train=pipelines.get("train"), val=pipelines.get("val"),
                  test=pipelines.get("test"), class_names=list(class_names),
                  counts={name: len(parts[name]) if name in parts else 0 for name in SPLITS},
                  class_counts=class_counts, skipped=skipped, train_from=train_from,
                  available={name: n for name, n in available.items() if name in parts},
                  files={name: None if part.files is None or part.encoded
                         else [str(f) for f in part.files] for name, part in parts.items()},
                  steps_per_epoch=steps,
                  fingerprint=fingerprints.of(parts, list(class_names), steps))


def _order(data, part: sources.Part, seed: int):
    """The image order of each training epoch under `data.sampling` (None: a permutation)."""
    from cnnctl.data import sampling

    return sampling.epoch_order(data.sampling, part.labels, seed)


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


def _check_readable(split: str, before: np.ndarray, part: sources.Part, class_names, data,
                    skipped: list[tuple[str, str]]) -> None:
    """Refuse a split, or a class of it, whose files were all skipped as unreadable."""
    kind = "csv" if data.source == "csv" else "dir"
    key = f"data.{split}_{kind}"
    if data.source in ("folder", "csv") and split == "val" and data.validation_split > 0:
        key = f"data.train_{kind}"
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
                          "replace them, or remove the class "
                          + ("rows" if kind == "csv" else "folder"))


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
