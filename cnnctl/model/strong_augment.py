"""Strong augmentation with Keras 3's own layers (RandAugment, AugMix, MixUp, CutMix,
RandomErasing, RandomGrayscale, RandomColorJitter), and the seeding that makes their draws in
the training pipeline a function of the step, so a resumed run draws what it would have."""

from __future__ import annotations

import contextlib
import random
import threading

import numpy as np

from cnnctl import keras_compat
from cnnctl.backend import keras
from cnnctl.errors import ConfigValueError

# Pixel values are 0..255 in front of the model (preprocessing comes after augmentation).
VALUE_RANGE = (0, 255)


def _given(spec, **keys) -> dict:
    """Keras keyword -> spec value, for the keys the config gives (the rest keep Keras's default)."""
    return {kwarg: getattr(spec, key) for kwarg, key in keys.items() if getattr(spec, key) is not None}


def _rand_augment(spec, seed):
    return keras.layers.RandAugment(value_range=VALUE_RANGE, seed=seed, **_given(
        spec, num_ops="num_ops", factor="factor", interpolation="interpolation"))


def _aug_mix(spec, seed):
    return keras.layers.AugMix(value_range=VALUE_RANGE, seed=seed, **_given(
        spec, num_chains="num_chains", chain_depth="chain_depth", factor="factor",
        alpha="alpha", all_ops="all_ops", interpolation="interpolation"))


# mix_up and cut_mix compute in float32 under mixed precision too: Keras mixes the float32
# one-hot labels with weights of the layer's compute dtype, which must be the same type
def _mix_up(spec, seed):
    return keras.layers.MixUp(seed=seed, dtype="float32", **_given(spec, alpha="alpha"))


def _cut_mix(spec, seed):
    return keras.layers.CutMix(seed=seed, dtype="float32", **_given(spec, factor="factor"))


def _random_erasing(spec, seed):
    return keras.layers.RandomErasing(value_range=VALUE_RANGE, seed=seed, **_given(
        spec, factor="factor", scale="scale", fill_value="fill_value"))


def _random_grayscale(spec, seed):
    return keras.layers.RandomGrayscale(seed=seed, **_given(spec, factor="factor"))


def _random_color_jitter(spec, seed):
    return keras.layers.RandomColorJitter(value_range=VALUE_RANGE, seed=seed, **_given(
        spec, brightness_factor="brightness_factor", contrast_factor="contrast_factor",
        saturation_factor="saturation_factor", hue_factor="hue_factor"))


# YAML type -> builder(spec, seed) of its Keras layer (the other types: cnnctl.model.inputs)
BUILDERS = {
    "rand_augment": _rand_augment,
    "aug_mix": _aug_mix,
    "mix_up": _mix_up,
    "cut_mix": _cut_mix,
    "random_erasing": _random_erasing,
    "random_grayscale": _random_grayscale,
    "random_color_jitter": _random_color_jitter,
}

# types that work on colour and need 3 channels -> what needs them (None: the whole layer)
_COLOR_ONLY = {"random_grayscale": None, "random_color_jitter": ("saturation_factor", "hue_factor")}


def check_channels(augmentation, channels: int | None) -> None:
    """Refuse colour operations on 1-channel images, before Keras fails inside them.

    Raises:
        ConfigValueError: at the item and key that needs 3 channels.
    """
    if channels is None or channels == 3:
        return
    for i, spec in enumerate(augmentation.layers):
        if spec.type not in _COLOR_ONLY:
            continue
        keys = _COLOR_ONLY[spec.type]
        used = [k for k in keys if getattr(spec, k) is not None] if keys else [None]
        if used:
            where = f"augmentation.layers[{i}]" + (f".{used[0]}" if used[0] else "")
            raise ConfigValueError(where, (
                f"{spec.type} works on colour (3-channel) images and model.input_shape has "
                f"{channels} channel(s); remove it, or train on RGB images (data.color_mode: rgb "
                "and 3 channels in model.input_shape)"))


def _mixes_labels(layer) -> bool:
    return isinstance(layer, (keras.layers.MixUp, keras.layers.CutMix))


def _stepped(layer) -> bool:
    """Whether a pipeline layer draws from the step's seed (the types of this module)."""
    return isinstance(layer, _keras_classes())


def _keras_classes():
    kl = keras.layers
    return (kl.RandAugment, kl.AugMix, kl.MixUp, kl.CutMix, kl.RandomErasing, kl.RandomGrayscale,
            kl.RandomColorJitter)


class StepSeed(keras.random.SeedGenerator):
    """The seeds of one layer at one training step: draw k is `make(k)`.

    A layer of the training pipeline normally draws from its own SeedGenerator, whose state
    advances with every batch and is lost when the run stops. Drawing from (layer seed, global
    step) instead makes each batch's augmentation the same in a resumed run, and in parallel
    tf.data maps (no state shared between batches). There is no state variable to save.
    """

    def __init__(self, make):  # no super().__init__: it would create a state variable
        self._make, self._draws = make, 0

    def next(self, ordered=True):
        self._draws += 1
        return self._make(self._draws)


_SEED_DTYPE: list = []
_LOCK = threading.Lock()


def _eager_seed(layer_seed: int, step: int):
    """make(k) for a batch outside tf.data: a seed of the backend's seed dtype from NumPy."""
    if not _SEED_DTYPE:
        _SEED_DTYPE.append(keras.random.SeedGenerator(0).state.dtype)

    def make(k):
        words = np.random.SeedSequence([layer_seed, step, k]).generate_state(2) & 0x7FFFFFFF
        return keras.ops.convert_to_tensor(words, dtype=_SEED_DTYPE[0])

    return make


def _tf_seed(layer_seed: int, step):
    """make(k) inside tf.data: `step` is the batch's int64 tensor."""
    import tensorflow as tf

    base = tf.stack([tf.constant(layer_seed, tf.int64), tf.cast(step, tf.int64)])
    return lambda k: tf.random.experimental.stateless_fold_in(base, k)


@contextlib.contextmanager
def _python_random(words: list[int]):
    """Python's `random` seeded from `words` inside the block, its own state again after it."""
    state = random.getstate()
    random.seed(int(np.random.SeedSequence(words).generate_state(1)[0]))
    try:
        yield
    finally:
        random.setstate(state)


def augment_batch(layers: list, images, labels, step, *, in_tf_data: bool = False):
    """A training batch through the pipeline's augmentation layers, in order.

    The layers of this module draw from (their seed, `step`), the global step of the batch;
    mix_up and cut_mix also mix the (one-hot) labels. The other layers draw from their own
    generators (not restored on resume).

    Returns:
        (images, labels).
    """
    for layer in layers:
        if not _stepped(layer):
            images = layer(images, training=True)
            continue
        seed = 0 if layer.seed is None else int(layer.seed)
        make = _tf_seed(seed, step) if in_tf_data else _eager_seed(seed, int(step))
        # AugMix picks its operations with Python's `random` (once per trace in tf.data)
        words = [seed] if in_tf_data else [seed, int(step)]
        python_seed = (_python_random(words) if isinstance(layer, keras.layers.AugMix)
                       else contextlib.nullcontext())
        with _LOCK, keras_compat.drawing_from(layer, StepSeed(make)), python_seed:
            if _mixes_labels(layer):
                out = layer({"images": images, "labels": labels}, training=True)
                images, labels = out["images"], out["labels"]
            else:
                images = layer(images, training=True)
    return images, labels


def check_labels(config, label_mode: str) -> None:
    """mix_up and cut_mix mix one-hot labels: refuse the losses that cannot take them.

    Raises:
        ConfigValueError: binary_crossentropy (one 0/1 column) with a label-mixing layer.
    """
    from cnnctl.config.schema import LABEL_MIXING

    mixing = [s.type for s in config.augmentation.layers if s.type in LABEL_MIXING]
    if mixing and label_mode == "binary":
        raise ConfigValueError("loss", (
            f"{mixing[0]} mixes one-hot labels of several classes, and binary_crossentropy "
            "trains one 0/1 output; use categorical_crossentropy (or "
            "sparse_categorical_crossentropy) with a 2-unit softmax output"))
