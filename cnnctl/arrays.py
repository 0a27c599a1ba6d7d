"""In-memory data sets as `keras.utils.PyDataset`s: the input of the JAX and PyTorch backends,
which then need no TensorFlow at all (Keras built-ins read from local files, `.npz` arrays,
decoded image folders)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnnctl import sources
from cnnctl.backend import keras

EVAL_BATCH = 256  # as the tf.data pipelines: independent of train.batch_size


def _label_fn(label_mode: str, num_classes: int) -> Callable[[np.ndarray], np.ndarray]:
    return {
        "int": lambda y: y.astype(np.int32),
        "categorical": lambda y: np.eye(num_classes, dtype=np.float32)[y],
        "binary": lambda y: y.astype(np.float32).reshape(-1, 1),
    }[label_mode]


class Batches(keras.utils.PyDataset):
    """Batches of an in-memory part in order (evaluation), float32 images 0..255."""

    def __init__(self, part: sources.Part, num_classes: int, label_mode: str,
                 batch_size: int = EVAL_BATCH):
        super().__init__()
        self.images, self.labels, self.batch_size = part.images, part.labels, batch_size
        self.to_labels = _label_fn(label_mode, num_classes)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index: int):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.images[rows].astype(np.float32), self.to_labels(self.labels[rows])


class Stream(keras.utils.PyDataset):
    """The endless training stream from (epoch, step) on: each epoch a permutation drawn from
    (seed, epoch), so that the stream can be rebuilt at any step (what makes a resumed run equal
    to an uninterrupted one). Batches never straddle two epochs.

    `augment`: layers applied to each batch (augmentation placed in the pipeline).
    """

    def __init__(self, part: sources.Part, num_classes: int, label_mode: str, batch_size: int,
                 seed: int, start: tuple[int, int], augment: list):
        super().__init__()
        self.images, self.labels, self.batch_size = part.images, part.labels, batch_size
        self.to_labels = _label_fn(label_mode, num_classes)
        self.seed, self.augment = seed, augment
        self.steps = -(-len(self.labels) // batch_size)
        self.first = start[0] * self.steps + start[1]
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def num_batches(self) -> None:
        return None  # endless: `fit` is given steps_per_epoch

    def permutation(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(
                len(self.labels)))
        return self._order[1]

    def __getitem__(self, index: int):
        epoch, step = divmod(self.first + index, self.steps)
        rows = self.permutation(epoch)[step * self.batch_size:(step + 1) * self.batch_size]
        x = self.images[rows].astype(np.float32)
        for layer in self.augment:
            x = keras.ops.convert_to_numpy(layer(x, training=True))
        return x, self.to_labels(self.labels[rows])


def train_stream(part: sources.Part, num_classes: int, label_mode: str, train,
                 augment: list) -> Callable[[int, int], Stream]:
    """`train_from(epoch, step)` for an in-memory part (see `Stream`)."""
    def train_from(epoch: int, step: int) -> Stream:
        return Stream(part, num_classes, label_mode, train.batch_size, train.seed,
                      (epoch, step), augment)

    return train_from
