"""cnnctl.data.arrays: the NumPy input of the JAX and PyTorch backends: the seeded train stream,
resumable mid-epoch, and evaluation batches in order with each label mode."""

from __future__ import annotations

import numpy as np

from cnnctl.config import schema as schema_lib
from cnnctl.data import arrays
from cnnctl.data import sources


def ids_part(n: int = 100) -> sources.Part:
    """Images whose first pixel is their index."""
    x = np.zeros((n, 2, 2, 1), np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    return sources.Part(np.arange(n) % 3, images=x)


def test_numpy_stream_orders_epochs_by_seed_and_resumes_mid_epoch():
    spec = schema_lib.TrainConfig(batch_size=32, seed=5)
    train_from = arrays.train_stream(ids_part(), 3, "int", spec, [])

    def ids(stream, steps):
        return np.concatenate([stream[i][0][:, 0, 0, 0] for i in range(steps)]).astype(int)

    two_epochs = ids(train_from(0, 0), 8)  # 100 images, batch 32: 4 steps, the last of 4
    first, second = two_epochs[:100], two_epochs[100:]
    assert sorted(first) == sorted(second) == list(range(100))
    assert list(first) != list(second) != list(range(100))
    np.testing.assert_array_equal(ids(train_from(1, 2), 2), second[64:])
    np.testing.assert_array_equal(ids(train_from(0, 3), 2), np.concatenate([first[96:], second[:32]]))
    other = arrays.train_stream(ids_part(), 3, "int", spec.model_copy(update={"seed": 6}), [])
    assert list(ids(other(0, 0), 4)) != list(first)
    x, y = train_from(0, 0)[0]
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (32, 2, 2, 1)


def test_numpy_batches_in_order_with_label_modes():
    part = ids_part(300)
    batches = arrays.Batches(part, 3, "categorical")
    assert len(batches) == 2
    x, y = batches[1]
    assert x.shape == (44, 2, 2, 1) and y.shape == (44, 3)
    np.testing.assert_array_equal(x[:, 0, 0, 0], np.arange(256, 300) % 256)
    np.testing.assert_array_equal(y.argmax(1), np.arange(256, 300) % 3)
    assert arrays.Batches(part, 2, "binary")[0][1].shape == (256, 1)
