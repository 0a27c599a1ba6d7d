"""The layers in front of the configured network: augmentation and preprocessing (they are part of
the saved model, so a `.keras` file takes raw 0-255 images), and cnnctl's own saved layer
`RandomPadCrop`."""

from __future__ import annotations

from cnnctl.backend import keras
from cnnctl.errors import CnnctlError, ConfigValueError
from cnnctl.model import strong_augment


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
    if config.augmentation.layers and len(shape) != 3:
        raise ConfigValueError("augmentation.layers", (
            "augmentation works on images, and model.input_shape "
            f"[{', '.join('null' if d is None else str(d) for d in shape)}] is not "
            "[height, width, channels]"))
    strong_augment.check_channels(config.augmentation, shape[-1] if len(shape) == 3 else None)
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


def augmentation_layers(augmentation, *, seed: int | None = None) -> list["keras.layers.Layer"]:
    """Keras random preprocessing layers for `augmentation.layers`, active in training only.

    The config schema has checked each item's keys (`cnnctl.config.schema.AugmentSpec`); this
    maps each to its layer, item i seeded `seed + i`. They work on pixel values 0..255
    (brightness and contrast use value_range (0, 255)), so they go before `preprocessing_layer`.
    random_flip without `mode` flips both ways (Keras's default); random_zoom's and
    random_translation's `factor` stands for both height_factor and width_factor; random_crop
    is pad-and-crop, see `RandomPadCrop`.
    """
    layers = []
    for i, spec in enumerate(augmentation.layers):
        try:
            layers.append(_augment_layer(spec, None if seed is None else seed + i))
        except ValueError as e:  # Keras's own range checks (a brightness factor within [-1, 1])
            from cnnctl.model.build import keras_reason  # build imports this module

            raise ConfigValueError(f"augmentation.layers[{i}]",
                                   f"{spec.type}: {keras_reason(e)}") from None
    return layers


def _augment_layer(spec, seed):
    kl = keras.layers
    if spec.type == "random_flip":
        return kl.RandomFlip(spec.mode or "horizontal_and_vertical", seed=seed)
    if spec.type == "random_rotation":
        return kl.RandomRotation(spec.factor, fill_mode=spec.fill_mode or "reflect", seed=seed)
    if spec.type in ("random_zoom", "random_translation"):
        height_factor = spec.height_factor if spec.height_factor is not None else spec.factor
        width_factor = spec.width_factor if spec.width_factor is not None else spec.factor
        layer = kl.RandomZoom if spec.type == "random_zoom" else kl.RandomTranslation
        return layer(height_factor, width_factor, fill_mode=spec.fill_mode or "reflect", seed=seed)
    if spec.type == "random_contrast":
        return kl.RandomContrast(spec.factor, value_range=(0, 255), seed=seed)
    if spec.type == "random_brightness":
        return kl.RandomBrightness(spec.factor, value_range=(0, 255), seed=seed)
    if spec.type == "random_crop":
        return RandomPadCrop(spec.height, spec.width, fill_mode=spec.fill_mode or "constant", seed=seed)
    if spec.type in strong_augment.BUILDERS:  # Keras's RandAugment, MixUp, ...
        return strong_augment.BUILDERS[spec.type](spec, seed)
    raise AssertionError(f"no layer for augmentation type {spec.type!r}")  # the schema has them all
