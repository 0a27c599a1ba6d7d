"""tf.data pipelines of a data set: the TensorFlow backend's input, and the only one that
decodes image files (folders, encoded TensorFlow Datasets images) on any backend."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnnctl.backend import keras  # noqa: F401  (first: silences TensorFlow's start-up noise)
from cnnctl.data import batches, images, sources

import tensorflow as tf


def pipeline(part: sources.Part, spec, num_classes: int, label_mode: str) -> tf.data.Dataset:
    """A batched evaluation pipeline of (float32 images 0..255, labels): in order, no augmentation."""
    autotune = tf.data.AUTOTUNE
    to_labels = batches.label_fn(label_mode, num_classes, tf)
    labels = part.labels.astype(np.int32)
    if part.images is not None:
        ds = tf.data.Dataset.from_tensor_slices((part.images, labels)).batch(batches.EVAL_BATCH)
    else:
        decode = decode_fn(spec, encoded=part.encoded)
        ds = tf.data.Dataset.from_tensor_slices((part.files, part.native, labels))
        ds = ds.map(lambda f, native, y: (decode(f, native), y), num_parallel_calls=autotune)
        ds = ds.batch(batches.EVAL_BATCH)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), to_labels(y)), num_parallel_calls=autotune)
    return ds.prefetch(autotune)


def decode_all(part: sources.Part, spec) -> np.ndarray:
    """The files of a part decoded at the model's size: uint8 [N, H, W, C], in parallel."""
    decode = decode_fn(spec, encoded=part.encoded)
    ds = tf.data.Dataset.from_tensor_slices((part.files, part.native))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batches.EVAL_BATCH)
    return np.concatenate(list(ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()))


def train_stream(part: sources.Part, spec, num_classes: int, label_mode: str, train,
                 augment: list, order: Callable[[int], np.ndarray] | None = None
                 ) -> Callable[[int, int], tf.data.Dataset]:
    """The training stream as a function of where it starts (epoch, step).

    Each epoch is a permutation drawn from (seed, epoch) with stateless ops, so the stream can
    be rebuilt at any step of any epoch: that is what makes a resumed run equal to an
    uninterrupted one. Batches never straddle two epochs. `order(epoch)`, when given, gives
    the epoch's image indices instead (`data.sampling`, see `sampling.epoch_order`); it must
    depend on the epoch only, and give len(part) of them.
    """
    autotune = tf.data.AUTOTUNE
    n, batch_size = len(part), train.batch_size
    seed = tf.constant(train.seed, tf.int64)
    to_labels = batches.label_fn(label_mode, num_classes, tf)
    labels = part.labels.astype(np.int32)
    def permutation(epoch):
        if order is not None:
            drawn = tf.numpy_function(lambda e: order(int(e)), [epoch], tf.int64, stateful=False)
            return tf.ensure_shape(drawn, [n])
        noise = tf.random.stateless_uniform([n], seed=tf.stack([seed, tf.cast(epoch, tf.int64)]))
        return tf.argsort(noise)

    if part.images is not None:
        def epoch_batches(epoch, start):
            return tf.data.Dataset.from_tensor_slices(permutation(epoch)[start:]).batch(batch_size)

        def to_batches(indices):
            arrays = tf.data.Dataset.from_tensors((part.images, labels)).repeat()
            return tf.data.Dataset.zip(indices, arrays).map(
                lambda i, xy: (tf.cast(tf.gather(xy[0], i), tf.float32),
                               to_labels(tf.gather(xy[1], i))), num_parallel_calls=autotune)
    else:
        decode = decode_fn(spec, encoded=part.encoded)
        files, native = tf.constant(part.files), tf.constant(part.native)

        def epoch_batches(epoch, start):
            return (tf.data.Dataset.from_tensor_slices(permutation(epoch)[start:])
                    .map(lambda i: (decode(tf.gather(files, i), tf.gather(native, i)),
                                    tf.gather(labels, i)), num_parallel_calls=autotune)
                    .batch(batch_size))

        def to_batches(batches):
            return batches.map(lambda x, y: (tf.cast(x, tf.float32), to_labels(y)),
                               num_parallel_calls=autotune)

    def train_from(epoch: int, step: int) -> tf.data.Dataset:
        first = epoch_batches(tf.constant(epoch, tf.int64), step * batch_size)
        rest = tf.data.Dataset.range(epoch + 1, 2**62).flat_map(lambda e: epoch_batches(e, 0))
        ds = to_batches(first.concatenate(rest))
        if augment:
            from cnnctl.model import strong_augment

            # each batch with its global step: the seed of the layers that draw from it
            steps = tf.data.Dataset.range(epoch * -(-n // batch_size) + step, 2**62)
            ds = tf.data.Dataset.zip(steps, ds).map(
                lambda g, xy: strong_augment.augment_batch(augment, *xy, g, in_tf_data=True),
                num_parallel_calls=autotune)
        return ds.prefetch(autotune)

    return train_from


def decode_fn(spec: images.ImageSpec, encoded: bool = False):
    """A TensorFlow function (source, native) -> uint8 [H, W, C] image of the model's size.

    `source` is a file path, or the encoded bytes when `encoded`; `native` says TensorFlow can
    decode it (see `inspect`), otherwise PIL does. Training and `load_images` both use this, so
    a file gives the model the same pixels in both.
    """
    def decode(source, native):
        data = source if encoded else tf.io.read_file(source)
        image = tf.cond(
            native,
            lambda: _tf_decode(data, spec.decode_channels),
            lambda: tf.numpy_function(images.pil_decode, [data, spec.decode_channels, spec.height,
                                                    spec.width], tf.uint8, stateful=False))
        image = tf.ensure_shape(image, [None, None, spec.decode_channels])
        same = tf.reduce_all(tf.shape(image)[:2] == [spec.height, spec.width])
        image = tf.cond(same, lambda: image, lambda: _resize(image, spec))
        if spec.channels != spec.decode_channels:
            image = tf.image.grayscale_to_rgb(image)
        return tf.ensure_shape(image, spec.shape)

    return decode


def _tf_decode(data, channels: int):
    """TensorFlow's decode of a PNG or plain JPEG; JPEGs with libjpeg's accurate integer DCT,
    PIL's default, so that a file checked by `probe` gives the same pixels either way."""
    jpeg = tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff"
    return tf.cond(
        jpeg,
        lambda: tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=channels, dtype=tf.uint8,
                                   expand_animations=False))


def _resize(images, spec):
    # Rounded back to uint8: the cache and shuffle buffer then hold a quarter of the bytes.
    resized = tf.image.resize(images, (spec.height, spec.width), antialias=True)
    return tf.saturate_cast(tf.round(resized), tf.uint8)
