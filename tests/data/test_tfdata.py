"""cnnctl.data.tfdata: the tf.data decode of image files agrees with PIL and with the
decode of the data check it reuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnnctl.data import images
from cnnctl.data import tfdata


@pytest.mark.parametrize("channels", [3, 1])
def test_folder_decoded_by_its_check_gives_the_pipeline_pixels(tmp_path, cifar_folders,
                                                               monkeypatch, channels, load_splits,
                                                               collect, odd_images):
    """With data.cache the check's own decode is the training data: only files that need
    resizing (or TensorFlow's grey conversion) are decoded again, and every pixel equals what
    the per-epoch tf.data decode (data.cache: false) gives."""
    from cnnctl.data import tfdata

    for folder in ("a", "b"):
        odd_images(tmp_path / "train" / folder)
    cifar = [str(f) for f in sorted((cifar_folders / "train" / "cat").iterdir())[:5]]
    for f in cifar:  # real CIFAR JPEGs, resized by PIL to the odd images' 23x37
        Image.open(f).resize((23, 37)).save(tmp_path / "train" / "a" / Path(f).name, quality=90)
    decoded_again = []
    decode_all = tfdata.decode_all
    monkeypatch.setattr(tfdata, "decode_all", lambda part, spec: (
        decoded_again.extend(Path(f).name for f in part.files), decode_all(part, spec))[1])
    data = {"source": "folder", "train_dir": str(tmp_path / "train"),
            "test_dir": str(tmp_path / "train")}
    shape = (37, 23, channels)
    cached = load_splits(data, input_shape=shape, splits=("test",))
    again = {"sixteen.png", "wide.jpg"} | ({"rgba.png", "palette.png"} if channels == 1 else set())
    assert sorted(decoded_again) == sorted(list(again) * 2)  # two class folders
    fresh = load_splits({**data, "cache": False}, input_shape=shape, splits=("test",))
    x_cached, y_cached = collect(cached.test)
    x_fresh, y_fresh = collect(fresh.test)
    assert x_cached.shape == (23, *shape)
    np.testing.assert_array_equal(y_cached, y_fresh)
    np.testing.assert_array_equal(x_cached, x_fresh)


def test_tensorflow_and_pil_decoding_agree(tmp_path, odd_images):
    """TensorFlow decodes PNG and plain JPEG itself, PIL the rest: the two give the same pixels."""
    paths = odd_images(tmp_path)
    spec = images.image_spec((37, 23, 3))
    decode = tfdata.decode_fn(spec)
    for name in ("grey.png", "rgba.png", "palette.png", "sixteen.png"):
        native, error = images.inspect(str(paths[name]))
        assert native and error is None
        by_tf = decode(tf.constant(str(paths[name])), tf.constant(True)).numpy()
        by_pil = decode(tf.constant(str(paths[name])), tf.constant(False)).numpy()
        np.testing.assert_array_equal(by_tf, by_pil)
    for name in ("cmyk.jpg", "bitmap.bmp", "anim.gif", "photo.webp"):
        assert images.inspect(str(paths[name])) == (False, None)
