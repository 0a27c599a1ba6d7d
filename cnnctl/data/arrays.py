"""In-memory data sets as `keras.utils.PyDataset`s: the input of the JAX and PyTorch backends,
which then need no TensorFlow at all (Keras built-ins read from local files, `.npz` arrays,
decoded image folders).

With `on_device` the arrays are copied to the backend's default device (the GPU) once, and each
batch is gathered, cast and one-hot encoded there: no host-to-device copy per step. The batches
are the same as from NumPy, value for value.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from cnnctl.data import batches, sources
from cnnctl.backend import keras



def place(part: sources.Part, on_device: bool):
    """(images, int32 labels) of a part: NumPy arrays, or tensors on the default device. A part
    already placed (see `train_stream`) is not copied again."""
    images, labels = part.images, part.labels
    if not on_device:
        return images, labels.astype(np.int32)
    if isinstance(images, np.ndarray):
        images = keras.ops.convert_to_tensor(images)
    if isinstance(labels, np.ndarray):
        labels = keras.ops.convert_to_tensor(labels.astype(np.int32))
    return images, labels


class _Arrays(keras.utils.PyDataset):
    """The images and labels of a part, in NumPy or on the device."""

    def __init__(self, part: sources.Part, num_classes: int, label_mode: str, on_device: bool):
        super().__init__()
        self.on_device = on_device
        self.images, self.labels = place(part, on_device)
        self.count = len(part)
        self.to_labels = batches.label_fn(label_mode, num_classes,
                                          keras.ops if on_device else None)

    def rows(self, index):
        """(float32 images 0..255, labels) of a slice or an index array."""
        if not self.on_device:
            return self.images[index].astype(np.float32), self.to_labels(self.labels[index])
        ops = keras.ops
        if isinstance(index, slice):
            return ops.cast(self.images[index], "float32"), self.to_labels(self.labels[index])
        index = ops.convert_to_tensor(index)
        return (ops.cast(ops.take(self.images, index, axis=0), "float32"),
                self.to_labels(ops.take(self.labels, index, axis=0)))


class Batches(_Arrays):
    """Batches of an in-memory part in order (evaluation), float32 images 0..255; with
    `multiple`, the last n % multiple images are left out (see `whole`)."""

    def __init__(self, part: sources.Part, num_classes: int, label_mode: str,
                 batch_size: int = batches.EVAL_BATCH, on_device: bool = False, multiple: int = 1):
        super().__init__(part, num_classes, label_mode, on_device)
        self.batch_size, self.multiple = batch_size, multiple
        self.used = self.count - self.count % multiple

    def __len__(self) -> int:
        return -(-self.used // self.batch_size)

    def __getitem__(self, index: int):
        return self.rows(slice(index * self.batch_size, min((index + 1) * self.batch_size,
                                                            self.used)))

    def whole(self) -> "Batches":
        """The same batches with every image."""
        whole = copy.copy(self)
        whole.multiple, whole.used = 1, self.count
        return whole


class Stream(_Arrays):
    """The endless training stream from (epoch, step) on: each epoch a permutation drawn from
    (seed, epoch), so that the stream can be rebuilt at any step (what makes a resumed run equal
    to an uninterrupted one). Batches never straddle two epochs.

    `augment`: layers applied to each batch (augmentation placed in the pipeline).
    """

    def __init__(self, part: sources.Part, num_classes: int, label_mode: str, batch_size: int,
                 seed: int, start: tuple[int, int], augment: list, on_device: bool = False,
                 multiple: int = 1, order: Callable[[int], np.ndarray] | None = None):
        super().__init__(part, num_classes, label_mode, on_device)
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.order = order  # epoch -> its image indices (`data.sampling`), else a permutation
        # the last batch of an epoch is cut to a multiple of `multiple` images
        self.used = self.count - self.count % batch_size % multiple
        self.steps = -(-self.used // batch_size)
        self.first = start[0] * self.steps + start[1]
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def num_batches(self) -> None:
        return None  # endless: `fit` is given steps_per_epoch

    def permutation(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.order(epoch) if self.order is not None else
                           np.random.default_rng([self.seed, epoch]).permutation(self.count))
        return self._order[1]

    def __getitem__(self, index: int):
        epoch, step = divmod(self.first + index, self.steps)
        x, y = self.rows(self.permutation(epoch)[step * self.batch_size:
                                                 min((step + 1) * self.batch_size, self.used)])
        if self.augment:
            from cnnctl.model import strong_augment

            x, y = strong_augment.augment_batch(self.augment, x, y, self.first + index)
            if not self.on_device:
                x, y = keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y)
        return x, y


def train_stream(part: sources.Part, num_classes: int, label_mode: str, train,
                 augment: list, on_device: bool = False, multiple: int = 1,
                 order: Callable[[int], np.ndarray] | None = None) -> Callable[[int, int], Stream]:
    """`train_from(epoch, step)` for an in-memory part (see `Stream`); with `on_device` the
    part is copied to the device once, for every stream built from it. `order(epoch)`: the
    image indices of each epoch (`data.sampling`), instead of a seeded permutation."""
    images, labels = place(part, on_device)
    part = sources.Part(labels, images=images)

    def train_from(epoch: int, step: int) -> Stream:
        return Stream(part, num_classes, label_mode, train.batch_size, train.seed,
                      (epoch, step), augment, on_device, multiple, order)

    return train_from
