"""cnnctl.data.splits: the seeded validation carve, the same for training and data check."""

from __future__ import annotations


import numpy as np
import pytest

from cnnctl.errors import CnnctlError


# --------------------------------------------------------------------------- splits
def test_validation_split_is_disjoint_and_seeded(tmp_path, load_splits, epoch_of, ids_npz,
                                                 image_ids):
    source = {"source": "npz", "path": str(ids_npz(tmp_path / "ids.npz")),
              "max_train_samples": 200, "validation_split": 0.25}
    a = load_splits(source, input_shape=(6, 6, 3), seed=1)
    train, val = image_ids(epoch_of(a)), image_ids(a.val)
    assert len(val) == 50 and len(train) == 150
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(range(200))  # carved after max_train_samples
    assert a.counts == {"train": 150, "val": 50, "test": 30}
    assert sum(a.class_counts["val"].values()) == 50
    np.testing.assert_array_equal(image_ids(a.val), np.sort(val))  # val: in order, not shuffled
    same = load_splits(source, input_shape=(6, 6, 3), seed=1)
    other = load_splits(source, input_shape=(6, 6, 3), seed=2)
    assert set(image_ids(same.val)) == set(val)
    assert set(image_ids(other.val)) != set(val)


def test_validation_split_too_small(tmp_path, load_splits, ids_npz):
    with pytest.raises(CnnctlError, match="data.validation_split: 0.001 of 10 training images "
                                          "leaves no validation"):
        load_splits({"source": "npz", "path": str(ids_npz(tmp_path / "ids.npz")), "max_train_samples": 10,
                     "validation_split": 0.001}, input_shape=(6, 6, 3))
