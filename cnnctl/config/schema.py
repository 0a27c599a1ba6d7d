"""The config file schema: a tree of strict pydantic v2 models, one per section, layers and
augmentations as discriminated unions on `type` (loading: `cnnctl.config.load`)."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (AfterValidator, BeforeValidator, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationInfo, field_validator, model_validator)

from cnnctl.config.layer_specs import NAME_PATTERN, LayerSpec, Strict, keyed_error

# Upper bounds of the numbers in a config. Each is far above any real use and low enough that
# what follows (NumPy/Keras seeding, int32 step counters, tensor sizes) does not overflow or
# exhaust memory before the first step: a bad value is an error at its line, not a crash later.
MAX_SEED = 2**32 - 1          # NumPy and Keras seeds are unsigned 32-bit
MAX_EPOCHS = 1_000_000        # epochs * steps per epoch stays a countable int64 step
MAX_BATCH = 1_000_000         # images per step
MAX_COUNT = 2**31 - 1         # samples, buffer sizes, steps: TensorFlow's int32 counters
MAX_SIZE = 65_536             # pixels per side, filters, units, kernel/pool windows, strides
MAX_REPEAT = 10_000           # stacked copies of one layer
MAX_STEPS_PER_EXECUTION = 1_000  # 2**31 - 1 hangs `fit` (tensorflow backend) before the first step

Finite = Annotated[float, Field(allow_inf_nan=False)]
"""A float that is a number (not .inf or .nan)."""
Count = Annotated[int, Field(gt=0, le=MAX_COUNT)]
Size = Annotated[int, Field(gt=0, le=MAX_SIZE)]

# the numeric keys of a layer and their bounds (the layer schemas themselves give the lower ones)
_LAYER_BOUNDS = {"filters": MAX_SIZE, "units": MAX_SIZE, "depth_multiplier": MAX_SIZE,
                 "kernel_size": MAX_SIZE, "strides": MAX_SIZE, "pool_size": MAX_SIZE,
                 "dilation_rate": MAX_SIZE, "size": MAX_SIZE, "padding": MAX_SIZE,
                 "height": MAX_SIZE, "width": MAX_SIZE, "repeat": MAX_REPEAT,
                 "groups": MAX_SIZE, "cropping": MAX_SIZE, "noise_shape": MAX_SIZE,
                 "shared_axes": 8}


def _number_error(value: Any, limit: int) -> bool:
    """Whether a layer value (a number, a pair or nested pairs of them) is over `limit` or not
    a finite number."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > limit
    if isinstance(value, float):
        return not math.isfinite(value) or value > limit
    if isinstance(value, (list, tuple)):
        return any(_number_error(v, limit) for v in value)
    return False


def bounded_layer(spec: Any) -> Any:
    """A validated layer whose sizes are within the bounds above (Keras would try to allocate
    them, or overflow, when the model is built)."""
    for key, limit in _LAYER_BOUNDS.items():
        if _number_error(getattr(spec, key, None), limit):
            raise keyed_error(key, f"must be <= {limit} (got {getattr(spec, key)!r})")
    for key, value in spec:
        if isinstance(value, float) and not math.isfinite(value):
            raise keyed_error(key, f"must be a finite number (got {value!r})")
    return spec


def _top_level_name(spec: Any) -> Any:
    for key in ("name", "inputs"):
        value = getattr(spec, key, None)
        for name in [value] if isinstance(value, str) else value or []:
            if name[:1].isdigit():
                raise keyed_error(key, f"{name!r} starts with a digit; names in model.layers "
                                  "start with a letter or _ (inside a block a digit is fine: "
                                  "the block's name comes first)")
    return spec


BlockLayer = Annotated[LayerSpec, AfterValidator(bounded_layer)]
"""One layer of a block template, its parameters filled in: a layer spec within the bounds."""
BoundedLayer = Annotated[LayerSpec, AfterValidator(bounded_layer), AfterValidator(_top_level_name)]
"""One item of `model.layers`: a layer spec within the size bounds."""


# --------------------------------------------------------------------------- model
class BlockTemplate(Strict):
    """A reusable group of layers with parameters, used as `{block: NAME, param: value}`."""

    params: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Any] = Field(
        default_factory=dict,
        description="Parameter names and their defaults (null: must be given at each use). "
        "Layers refer to a parameter as `$name`, compute with `${expression}` (e.g. "
        "`${in_channels * 4}`) and name layers with `${name}` inside a string; see \"Blocks\".")
    inputs: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=lambda: ["input"], min_length=1, description="The names its layers use "
        "for the block's inputs; a use gives as many in its `inputs` (default: one, `input`).")
    layers: list[dict[str, Any]] = Field(
        min_length=1, description="Layers of the block; the last one is its output.")

    @field_validator("params")
    @classmethod
    def _not_builtin(cls, params: dict) -> dict:
        from cnnctl.model.graph import BUILTIN_NAMES  # the names every block sees

        taken = [k for k in params if k in BUILTIN_NAMES]
        if taken:
            raise ValueError(f"{', '.join(taken)} is a name every block has "
                             f"({', '.join(BUILTIN_NAMES)}); call the parameter something else")
        return params

    @field_validator("inputs")
    @classmethod
    def _distinct(cls, inputs: list[str]) -> list[str]:
        if len(set(inputs)) != len(inputs):
            raise ValueError(f"names an input twice (got {inputs})")
        return inputs


class Backbone(Strict):
    """A network from keras.applications, used without its classification top, or the trained
    model of a previous cnnctl run cut after one of its layers."""

    name: str | None = Field(None, description="A keras.applications model, e.g. ResNet50, "
                             "MobileNetV2, EfficientNetB0, VGG16 (or give `run`).")
    weights: str | None = Field(None, description="null, `imagenet`, or a path to a weights file "
                                "(.h5 or .weights.h5; a relative path is looked for beside the config file, "
                                "then in the current directory).")
    trainable: bool = Field(True, description="false freezes the backbone (train the head only); "
                            "train.phases, where given, decide instead.")
    pooling: Literal["avg", "max"] | None = Field(
        None, description="Global pooling at the backbone's end (null: keep the feature map).")
    run: str | None = Field(None, description="Instead of `name`: a previous cnnctl run "
                            "directory (looked for as `weights` is) whose trained model, with "
                            "its preprocessing, is the backbone.")
    until: str | None = Field(None, description="With `run`: the layer of the run's model "
                              "after which it is cut (the config's `layers:` follow it).")

    @model_validator(mode="after")
    def _name_or_run(self) -> "Backbone":
        if (self.name is None) == (self.run is None):
            raise keyed_error("name", ("give either `name` (a keras.applications model) or "
                              "`run` (a previous cnnctl run directory), not both") if self.name
                              else ("missing: give `name` (a keras.applications model) or `run` "
                                    "(a previous cnnctl run directory)"))
        if self.run is not None:
            if self.until is None:
                raise keyed_error("until", "a `run` backbone needs `until`: the name of the "
                                  "layer of the run's model after which it is cut")
            for key in ("weights", "pooling"):
                if getattr(self, key) is not None:
                    raise keyed_error(key, f"a `run` backbone keeps the run's trained weights "
                                      f"and layers; `{key}` is for a keras.applications `name`")
        elif self.until is not None:
            raise keyed_error("until", "`until` cuts a `run` backbone; a keras.applications "
                              "`name` is used whole, without its top")
        return self


class ModelConfig(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)] = Field("model", description="Keras model name.")
    input_shape: list[Size | None] = Field(
        min_length=1, max_length=3, description="Height, width, channels; null height and "
        "width take images of any size (the data's image_size sets the training size).")
    backbone: Backbone | None = None
    blocks: dict[Annotated[str, Field(pattern=NAME_PATTERN)], BlockTemplate] = Field(
        default_factory=dict, description="Reusable layer groups with parameters (see below).")
    layers: list[BoundedLayer] = Field(default_factory=list, description="The network, in order "
                                       "(see layer types below); after the backbone if there is one.")

    @field_validator("input_shape")
    @classmethod
    def _known_channels(cls, shape: list) -> list:
        if shape[-1] is None:
            raise ValueError(f"the last entry (the channels) must be a number (got {shape})")
        return shape

    @model_validator(mode="before")
    @classmethod
    def _some_layers(cls, value: Any) -> Any:
        # `layers: []` written out: a model of nothing, that Keras fails on only in training
        if isinstance(value, dict) and value.get("layers") == [] and value.get("backbone") is None:
            raise keyed_error("layers", "needs at least one layer (or a `backbone:`), e.g. "
                                        "- {type: dense, units: 10, activation: softmax}")
        return value


# --------------------------------------------------------------------------- data
class Normalize(Strict):
    mean: list[Finite] = Field(min_length=1, description="Per channel, after rescale.")
    std: list[Annotated[PositiveFloat, Field(allow_inf_nan=False)]] = Field(min_length=1, description="Per channel, after rescale.")


class Preprocessing(Strict):
    rescale: Finite | None = Field(1 / 255, description="Multiply pixel values by this (null: keep 0-255).")
    normalize: Normalize | None = Field(None, description="Then (x - mean) / std per channel.")


class DataConfig(Strict):
    source: Literal["keras", "tfds", "folder", "npz", "csv"] = Field(
        "keras", description="Where the images come from.")
    name: str | None = Field(None, description="keras: mnist, fashion_mnist, cifar10, cifar100; "
                             "tfds: a TensorFlow Datasets name.")
    data_dir: str | None = Field(None, description="tfds: where TensorFlow Datasets keeps its files.")
    train_dir: str | None = Field(None, description="folder: one subfolder of images per class.")
    val_dir: str | None = Field(None, description="folder: validation images, one subfolder per class.")
    test_dir: str | None = Field(None, description="folder: test images, one subfolder per class.")
    path: str | None = Field(None, description="npz: file with x_train, y_train, x_test, y_test.")
    train_csv: str | None = Field(None, description="csv: a CSV (.csv) or TSV (.tsv) file of "
                                  "image paths and labels, one image a row under a header row; "
                                  "paths relative to the file's folder, or absolute.")
    val_csv: str | None = Field(None, description="csv: validation images, a file like train_csv.")
    test_csv: str | None = Field(None, description="csv: test images, a file like train_csv.")
    path_column: str = Field("path", min_length=1, description="csv: the header of the image "
                             "path column.")
    label_column: str = Field("label", min_length=1, description="csv: the header of the label "
                              "column (class names, or class indices 0, 1, ...).")
    delimiter: str | None = Field(None, min_length=1, max_length=1, description="csv: the "
                                  "field separator (default: a tab in .tsv and .tab files, else a "
                                  "comma).")
    class_names: list[str] | None = Field(None, min_length=1, description="csv: the classes in "
                                          "label order (default: train_csv's labels sorted, or "
                                          "0..N for integer labels); other labels are errors.")
    image_size: list[Size] | None = Field(None, min_length=2, max_length=2,
                                                 description="Height, width images are resized to.")
    color_mode: Literal["rgb", "grayscale"] | None = Field(
        None, description="Default: from the model's input channels (1 grayscale, 3 rgb).")
    validation_split: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of train held out "
                                    "for validation (seeded by train.seed).")
    max_train_samples: Count | None = Field(None, description="Use only the first N train images.")
    max_test_samples: Count | None = Field(None, description="Use only the first N test images.")
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    cache: bool = Field(True, description="Decode image files once, into memory, while checking "
                        "them before training (when they fit in 2 GiB of pixels); false: decode "
                        "them anew in every epoch.")
    shuffle_buffer: Count = Field(10_000, description="Shuffle buffer of file-based sources.")
    on_device: bool | Literal["auto"] = Field(
        "auto", description="jax, torch backends: hold the in-memory data set on the accelerator "
        "and draw batches there, with no copy from the host per step; auto: when a GPU is "
        "visible and the data takes at most 4 GiB there.")
    sampling: Literal["none", "balanced"] = Field(
        "none", description="balanced: each training epoch draws every class equally often "
        "(minority images repeat, majority ones are subsampled), as many images as a plain "
        "epoch, in an order fixed by (train.seed, epoch).")

    @model_validator(mode="after")
    def _source_fields(self) -> "DataConfig":
        required = {"keras": "name", "tfds": "name", "folder": "train_dir", "npz": "path",
                    "csv": "train_csv"}[self.source]
        if getattr(self, required) is None:
            raise ValueError(f"source {self.source!r} needs `{required}`")
        return self

    @field_validator("name")
    @classmethod
    def _known_keras_name(cls, name: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("source") == "keras" and name is not None and name not in KERAS_DATASETS:
            from cnnctl.config import wording  # it words errors with these models: imported late

            raise ValueError(f"unknown keras data set {name!r}{wording.did_you_mean(name, KERAS_DATASETS)}; "
                             f"choose one of {', '.join(KERAS_DATASETS)}")
        return name

    @field_validator("class_names")
    @classmethod
    def _distinct_class_names(cls, names: list[str] | None) -> list[str] | None:
        if names is not None:
            if any(not n.strip() for n in names):
                raise ValueError("class names must not be empty")
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"class {twice[0]!r} is named twice; give each class once")
        return names


KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def _range(value: Any) -> Any:
    """A `[low, high]` list from YAML is the (low, high) tuple Keras takes."""
    return tuple(value) if isinstance(value, list) else value


Factor = Annotated[Union[Annotated[NonNegativeFloat, Field(allow_inf_nan=False)], tuple[Finite, Finite]],
                   BeforeValidator(_range)]
FillMode = Literal["reflect", "wrap", "constant", "nearest"]


class AugmentBase(Strict):
    """What every augmentation type shares: a type tag, only its own keys, and the ones it needs."""

    # the keys it needs, in groups: any one key of a group will do; the first is named in errors
    NEEDS: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _drop_other_types_nulls(cls, value: Any) -> Any:
        # A run's resolved config.yaml written by cnnctl 0.1 lists every key of every
        # augmentation type, null where it was not given: a null key of another type is no
        # value and is dropped. One with a value is an error ("random_flip does not use ...").
        if isinstance(value, dict):
            return {k: v for k, v in value.items()
                    if not (v is None and k in AUGMENT_KEYS and k not in cls.model_fields)}
        return value

    @model_validator(mode="after")
    def _needed_keys(self) -> "AugmentBase":
        for options in self.NEEDS:
            if all(getattr(self, key) is None for key in options):
                raise keyed_error(options[0], f"{self.type} needs `{'` or `'.join(options)}`")
        return self


class RandomFlip(AugmentBase):
    type: Literal["random_flip"] = "random_flip"
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None = Field(
        None, description="Which way images are flipped (default horizontal_and_vertical: "
        "either way).")


class RandomRotation(AugmentBase):
    type: Literal["random_rotation"] = "random_rotation"
    NEEDS = (("factor",),)
    factor: Factor | None = Field(
        None, description="Fraction of a full turn: f rotates by a random amount in [-f, f], "
        "[low, high] in that range.")
    fill_mode: FillMode | None = Field(
        None, description="How new pixels are filled (default reflect).")


class RandomZoom(AugmentBase):
    type: Literal["random_zoom"] = "random_zoom"
    NEEDS = (("height_factor", "factor"),)
    factor: Factor | None = Field(
        None, description="Both height_factor and width_factor, where they are not given.")
    height_factor: Factor | None = Field(
        None, description="Zoom as a fraction of the height: f zooms by a random amount in "
        "[-f, f] (> 0 zooms out), [low, high] in that range.")
    width_factor: Factor | None = Field(
        None, description="Zoom as a fraction of the width (default: factor, else the height's "
        "zoom, keeping the aspect ratio).")
    fill_mode: FillMode | None = Field(
        None, description="How new pixels are filled (default reflect).")


class RandomTranslation(AugmentBase):
    type: Literal["random_translation"] = "random_translation"
    NEEDS = (("height_factor", "factor"), ("width_factor", "factor"))
    factor: Factor | None = Field(
        None, description="Both height_factor and width_factor, where they are not given.")
    height_factor: Factor | None = Field(
        None, description="Shift as a fraction of the height: f shifts by a random amount in "
        "[-f, f], [low, high] in that range.")
    width_factor: Factor | None = Field(
        None, description="Shift as a fraction of the width, likewise.")
    fill_mode: FillMode | None = Field(
        None, description="How new pixels are filled (default reflect).")


class RandomContrast(AugmentBase):
    type: Literal["random_contrast"] = "random_contrast"
    NEEDS = (("factor",),)
    factor: Factor | None = Field(
        None, description="f scales the contrast by a random factor in [1 - f, 1 + f], "
        "[low, high] by one in [1 - low, 1 + high].")


class RandomBrightness(AugmentBase):
    type: Literal["random_brightness"] = "random_brightness"
    NEEDS = (("factor",),)
    factor: Factor | None = Field(
        None, description="Shift as a fraction of the 0..255 range: f by a random amount in "
        "[-f, f], [low, high] in that range (-1 black, 1 white).")


class RandomCrop(AugmentBase):
    """Pad-and-crop: the image keeps its size (cnnctl's RandomPadCrop layer)."""

    type: Literal["random_crop"] = "random_crop"
    NEEDS = (("height",), ("width",))
    height: Size | None = Field(
        None, description="The padded height a random window of the image's height is cut "
        "from (at least the image height; e.g. 40 for a 32-pixel image padded by 4).")
    width: Size | None = Field(
        None, description="The padded width a random window of the image's width is cut from.")
    fill_mode: Literal["constant", "reflect"] | None = Field(
        None, description="How the padding is filled: constant (zeros, the default) or reflect.")

    @field_validator("fill_mode", mode="before")
    @classmethod
    def _pads_with(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ("constant", "reflect"):
            raise ValueError(f"random_crop pads with constant (zeros) or reflect, not {value}")
        return value


# Strong augmentation: Keras 3's own layers (built in cnnctl.model.strong_augment). mix_up and
# cut_mix mix the labels of a batch too, so they run where the labels are: the pipeline.
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
FractionRange = Annotated[Union[Fraction, tuple[Fraction, Fraction]], BeforeValidator(_range)]
Interpolation = Literal["bilinear", "nearest"]


class RandAugment(AugmentBase):
    """keras.layers.RandAugment: num_ops random operations of its list per image."""

    type: Literal["rand_augment"] = "rand_augment"
    num_ops: Annotated[int, Field(gt=0, le=16)] | None = Field(
        None, description="Operations applied one after another to each image (default 2).")
    factor: FractionRange | None = Field(
        None, description="Strength of the operations, 0..1: f draws it in [0, f], [low, high] "
        "in that range (default 0.5).")
    interpolation: Interpolation | None = Field(
        None, description="Resampling of the geometric operations (default bilinear).")


class AugMix(AugmentBase):
    """keras.layers.AugMix: a Dirichlet mix of num_chains chains of random operations, blended
    with the original image."""

    type: Literal["aug_mix"] = "aug_mix"
    num_chains: Annotated[int, Field(gt=0, le=16)] | None = Field(
        None, description="Chains of operations mixed together (default 3).")
    chain_depth: Annotated[int, Field(gt=0, le=16)] | None = Field(
        None, description="Steps per chain, each an operation or none, so 0 to this many "
        "operations (default 3).")
    factor: FractionRange | None = Field(
        None, description="Strength of the operations, 0..1: f draws it in [0, f], [low, high] "
        "in that range (default 0.3).")
    alpha: Annotated[PositiveFloat, Field(allow_inf_nan=False)] | None = Field(
        None, description="Concentration of the Dirichlet (chain weights) and Beta (blend "
        "with the original) draws (default 1.0).")
    all_ops: bool | None = Field(
        None, description="Also brightness, color, contrast and sharpness operations "
        "(default true).")
    interpolation: Interpolation | None = Field(
        None, description="Resampling of the geometric operations (default bilinear).")


class MixUp(AugmentBase):
    """keras.layers.MixUp: each image and its one-hot label blended with another's of the batch."""

    type: Literal["mix_up"] = "mix_up"
    alpha: Annotated[PositiveFloat, Field(allow_inf_nan=False)] | None = Field(
        None, description="Beta(alpha, alpha) draws each image's blend weight (default 0.2; "
        "smaller blends less). Mixes the labels too: placement pipeline only.")


class CutMix(AugmentBase):
    """keras.layers.CutMix: a random box of each image replaced by the same box of another image
    of the batch, the labels mixed by the box's area."""

    type: Literal["cut_mix"] = "cut_mix"
    factor: FractionRange | None = Field(
        None, description="Range the mix weight is drawn from, 0..1 (default 1: any box size). "
        "Mixes the labels too: placement pipeline only.")


class RandomErasing(AugmentBase):
    """keras.layers.RandomErasing: a random box of each image filled with noise or a value."""

    type: Literal["random_erasing"] = "random_erasing"
    factor: FractionRange | None = Field(
        None, description="Probability that an image is erased (default 1.0): f draws it in "
        "[0, f] per image, [low, high] in that range.")
    scale: tuple[Fraction, Fraction] | None = Field(
        None, description="[low, high] range of the erased box's area, a fraction of the "
        "image (each side is the square root of a draw; default [0.02, 0.33]).")
    fill_value: Finite | None = Field(
        None, description="Pixel value (0..255) the box is filled with (default: noise, "
        "normal * 255 clipped to 0..255).")

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_pair(cls, value: Any) -> Any:
        return _range(value)


class RandomGrayscale(AugmentBase):
    """keras.layers.RandomGrayscale (3-channel images)."""

    type: Literal["random_grayscale"] = "random_grayscale"
    factor: Fraction | None = Field(
        None, description="Probability that an image is turned gray (default 0.5).")


class RandomColorJitter(AugmentBase):
    """keras.layers.RandomColorJitter: brightness, contrast, saturation and hue, each in turn."""

    type: Literal["random_color_jitter"] = "random_color_jitter"
    NEEDS = (("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor"),)
    brightness_factor: Factor | None = Field(
        None, description="As random_brightness's factor (fraction of 0..255, within [-1, 1]).")
    contrast_factor: Factor | None = Field(
        None, description="As random_contrast's factor.")
    saturation_factor: FractionRange | None = Field(
        None, description="Saturation, 0..1, drawn in [0, f] or [low, high]: 0 gray, 0.5 "
        "unchanged, 1 fully saturated (3-channel images).")
    hue_factor: FractionRange | None = Field(
        None, description="Hue shift, 0..1, drawn in [0, f] or [low, high]: 0 none, 1 the "
        "most (3-channel images).")


AUGMENT_SPECS: dict[str, type[AugmentBase]] = {
    cls.model_fields["type"].default: cls
    for cls in (RandomFlip, RandomRotation, RandomZoom, RandomTranslation, RandomContrast,
                RandomBrightness, RandomCrop, RandAugment, AugMix, MixUp, CutMix, RandomErasing,
                RandomGrayscale, RandomColorJitter)
}
# the augmentation types that mix the labels of a batch as well as its images
LABEL_MIXING = frozenset({"mix_up", "cut_mix"})
# the keys of all augmentation types (each type takes some of them)
AUGMENT_KEYS = frozenset(k for cls in AUGMENT_SPECS.values() for k in cls.model_fields) - {"type"}

AugmentSpec = Annotated[Union[RandomFlip, RandomRotation, RandomZoom, RandomTranslation,
                              RandomContrast, RandomBrightness, RandomCrop, RandAugment, AugMix,
                              MixUp, CutMix, RandomErasing, RandomGrayscale, RandomColorJitter],
                        Field(discriminator="type")]
"""One item of `augmentation.layers`: a Keras random preprocessing layer, by `type`."""


class AugmentationConfig(Strict):
    placement: Literal["pipeline", "model"] = Field(
        "model", description="pipeline: in tf.data on the CPU; model: preprocessing layers in "
        "the model, run on the accelerator and inactive at inference.")
    layers: list[AugmentSpec] = Field(default_factory=list, description="Applied in order, "
                                      "to training images only (see augmentation types below).")

    @model_validator(mode="after")
    def _labels_in_reach(self) -> "AugmentationConfig":
        # a layer in the model sees images only: mixing labels needs the pipeline's batches
        mixing = [f"{s.type} (layers[{i}])" for i, s in enumerate(self.layers)
                  if s.type in LABEL_MIXING]
        if mixing and self.placement == "model":
            raise keyed_error("placement", (
                f"{', '.join(mixing)} {'mixes' if len(mixing) == 1 else 'mix'} the labels of a "
                "batch, which layers in the model "
                "never see; set augmentation.placement: pipeline (all augmentation then runs on "
                "the training batches, before the model)"))
        return self


# --------------------------------------------------------------------------- training
class Schedule(Strict):
    type: Literal["constant", "cosine", "exponential", "step", "one_cycle"] = Field(
        "constant", description="Learning rate per step; peaks at optimizer.learning_rate.")
    warmup_epochs: float = Field(0.0, ge=0.0, le=MAX_EPOCHS, description="Linear warm-up from 0 (not one_cycle).")
    decay_rate: float = Field(0.1, gt=0.0, le=1.0, description="exponential, step: factor per decay.")
    decay_epochs: float = Field(1.0, gt=0.0, le=MAX_EPOCHS, description="exponential, step: epochs per decay.")
    min_learning_rate: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="cosine, one_cycle: final rate.")


class OptimizerConfig(Strict):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = Field(
        "adam", description="Keras optimizer; `optimizer: NAME` is short for `optimizer: {name: NAME}`.")
    learning_rate: float = Field(0.001, gt=0.0, allow_inf_nan=False, description="Peak learning rate.")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd, rmsprop.")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum.")
    weight_decay: Annotated[NonNegativeFloat, Field(allow_inf_nan=False)] | None = Field(None, description="Decoupled weight decay "
                                                  "(adamw default 0.004).")
    clipnorm: Annotated[PositiveFloat, Field(allow_inf_nan=False)] | None = Field(None, description="Clip each gradient to this norm.")
    clipvalue: Annotated[PositiveFloat, Field(allow_inf_nan=False)] | None = Field(None, description="Clip gradient values to +-this.")
    schedule: Schedule = Field(default_factory=Schedule)
    reference_batch_size: Annotated[int, Field(gt=0, le=MAX_BATCH)] | None = Field(
        None, description="Scale the learning rates linearly by train.batch_size / this (the "
        "batch size they were tuned for), so a larger batch keeps the same recipe.")
    ema_momentum: float | None = Field(
        None, gt=0.0, lt=1.0, description="Keep an exponential moving average of the weights "
        "with this momentum (e.g. 0.999): validation, best.keras and last.keras use the "
        "averaged weights, training continues from the raw ones.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class LossConfig(Strict):
    name: Literal["categorical_crossentropy", "sparse_categorical_crossentropy",
                  "binary_crossentropy"] = Field(
        "categorical_crossentropy", description="Labels are one-hot or sparse to fit; "
        "`loss: NAME` is short for `loss: {name: NAME}`.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Move this much of the "
                                   "target probability to the other classes.")
    from_logits: bool = Field(False, description="The model's last layer gives logits (no "
                              "softmax or sigmoid, as in tutorials ending in `Dense(10)`): the "
                              "loss applies it, and predict, eval, report and export give "
                              "probabilities.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class MetricConfig(Strict):
    name: Literal["accuracy", "top_k_accuracy", "precision", "recall", "auc",
                  "balanced_accuracy", "macro_f1"] = Field(
        description="`- accuracy` is short for `- {name: accuracy}`; balanced_accuracy (the mean "
        "recall of the classes) and macro_f1 (the mean F1) count argmax predictions.")
    k: Count = Field(5, description="top_k_accuracy: how many top classes count.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class EarlyStopping(Strict):
    monitor: str = "val_loss"
    patience: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 3
    min_delta: Annotated[NonNegativeFloat, Field(allow_inf_nan=False)] = 0.0
    restore_best_weights: bool = True


class ReduceLROnPlateau(Strict):
    monitor: str = "val_loss"
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 2
    min_lr: Annotated[NonNegativeFloat, Field(allow_inf_nan=False)] = 0.0


class TrainLast(Strict):
    last: Annotated[int, Field(gt=0, le=MAX_COUNT)] = Field(
        description="The last N layers of the backbone are trained.")


class TrainFrom(Strict):
    model_config = {**Strict.model_config, "serialize_by_alias": True}

    from_layer: str = Field(alias="from", min_length=1, description="The backbone's layers "
                            "from this one (by name) on are trained.")


class Phase(Strict):
    """One phase of `train.phases`: epochs with their own trainable layers and learning rate."""

    epochs: int = Field(gt=0, le=MAX_EPOCHS, description="Epochs of this phase.")
    trainable: Literal["all", "none"] | TrainLast | TrainFrom = Field(
        "all", description="The backbone layers trained in this phase (the config's `layers:`, "
        "the head, always are): all, none (head only), {last: N} or {from: LAYER}; the "
        "backbone's batch-norm layers stay frozen, in inference mode, throughout.")
    learning_rate: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = Field(
        None, description="Peak learning rate of this phase (default optimizer.learning_rate).")
    schedule: Schedule | None = Field(None, description="Learning-rate schedule of this phase, "
                                      "over its own epochs (default optimizer.schedule).")


def _class_weight(value: Any) -> Any:
    """`train.class_weight`: auto or {class name: weight}, checked here in full so that a bad
    value gets one error, not one per member of the union."""
    if value is None or value == "auto":
        return value
    if not isinstance(value, dict):
        raise ValueError(f"must be auto or a mapping {{class name: weight}} (got {value!r})")
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not (
                math.isfinite(weight) and weight > 0):
            raise ValueError(f"the weight of class {name!r} must be a number above 0 (got {weight!r})")
    return {str(name): float(weight) for name, weight in value.items()}


class TrainConfig(Strict):
    epochs: int = Field(10, gt=0, le=MAX_EPOCHS, description="Passes over the training data.")
    batch_size: int = Field(32, gt=0, le=MAX_BATCH, description="Images per step.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Seeds weights, shuffling, validation split and augmentation.")
    deterministic: bool = Field(False, description="Deterministic ops (slower) for bit-exact reruns.")
    mixed_precision: Annotated[Literal["off", "float16", "bfloat16"], BeforeValidator(
        lambda v: "off" if v is False else v)] = Field(  # YAML 1.1 reads a bare `off` as false
        "off", description="Compute in half precision, keep weights in float32.")
    jit_compile: Union[bool, Literal["auto"]] = Field("auto", description="XLA-compile the train step.")
    steps_per_execution: Annotated[int, Field(gt=0, le=MAX_STEPS_PER_EXECUTION)] = Field(1, description="Batches run per call into the backend.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop when the monitor stalls.")
    reduce_lr_on_plateau: ReduceLROnPlateau | None = Field(
        None, description="Lower the learning rate when the monitor stalls.")
    tensorboard: bool = Field(True, description="Write TensorBoard logs to RUN/logs.")
    backup_every_steps: Count | None = Field(
        None, description="Also back up every N steps (a backup is always written at each "
        "epoch end); a resumed run continues from the newest backup.")
    class_weight: Annotated[Union[Literal["auto"], dict[str, float]],
                            BeforeValidator(_class_weight)] | None = Field(
        None, description="Weigh each training image's loss by its class: auto (inverse class "
        "frequency of the training split, averaging 1 over its images) or {class name: "
        "weight} (classes not named weigh 1).")
    checkpoint_monitor: str = Field("val_loss", description="Metric that picks best.keras: "
                                    "loss or one of `metrics`, val_ in front for the validation "
                                    "figure (val_balanced_accuracy and val_macro_f1 need not be "
                                    "listed); falls back to loss when there is no validation data.")
    test_time_augmentation: Literal["none", "flip"] = Field(
        "none", description="flip: final metrics (and `cnnctl eval`, `predict`) average the "
        "probabilities of each image and its horizontal mirror.")
    distribute: Literal["none", "mirrored", "multi_worker", "data_parallel"] = Field(
        "none", description="Train on several devices: mirrored (tensorflow backend: "
        "tf.distribute.MirroredStrategy over all local GPUs), multi_worker (tensorflow backend: "
        "tf.distribute.MultiWorkerMirroredStrategy over several machines, cluster from TF_CONFIG "
        "or `cnnctl train --workers --worker-index`), data_parallel (jax backend: "
        "keras.distribution.DataParallel over the local devices); batch_size is per replica.")
    scale_lr_with_replicas: bool = Field(
        False, description="With distribute: multiply the learning rates by the number of "
        "replicas (the global batch is batch_size times that).")
    phases: list[Phase] | None = Field(
        None, min_length=1, description="Fine-tuning: phases trained one after another in the "
        "same run, each with a new optimizer (see \"Fine-tuning\"); epochs is their sum.")

    @model_validator(mode="after")
    def _phase_epochs(self) -> "TrainConfig":
        if self.phases:
            total = sum(p.epochs for p in self.phases)
            if "epochs" in self.model_fields_set and self.epochs != total:
                raise keyed_error("epochs", f"is {self.epochs} but train.phases add up to "
                                  f"{total} epochs; leave epochs out (the phases set it) or "
                                  "make them agree")
            self.__dict__["epochs"] = total
        return self


class RunConfig(Strict):
    dir: str = Field("runs", description="Runs are written to DIR/<config name>/<timestamp>/.")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = Field(
        None, description="Default: the config file's name.")
    keep: list[Literal["last", "backup", "optimizer_state"]] = Field(
        ["last"], description="What a finished run keeps besides checkpoints/best.keras (the "
        "model and its weights): last (checkpoints/last.keras), backup (backup/, the full "
        "training state, otherwise removed when the run finishes; an unfinished run always keeps "
        "it), optimizer_state (the optimizer's state inside best.keras and last.keras too, to "
        "continue training from them; it triples their size with adam).")


SEARCH_KINDS = ("uniform", "log_uniform", "int_uniform", "log_int_uniform", "choice")


class SearchDistribution(Strict):
    """One entry of `tune.space`: how a trial draws the value of one config path."""

    uniform: list[Finite] | None = Field(None, min_length=2, max_length=2, description="[low, high]: any number between.")
    log_uniform: list[Annotated[PositiveFloat, Field(allow_inf_nan=False)]] | None = Field(
        None, min_length=2, max_length=2, description="[low, high], both above 0, drawn evenly on a "
        "log scale (learning rates, weight decay).")
    int_uniform: list[int] | None = Field(None, min_length=2, max_length=2, description="[low, high]: a whole number between, both included.")
    log_int_uniform: list[PositiveInt] | None = Field(
        None, min_length=2, max_length=2, description="[low, high], whole numbers above 0, on a log scale (widths).")
    choice: list[Any] | None = Field(None, min_length=1, description="One of these values: numbers, "
                                     "strings (e.g. block template names), lists or mappings.")
    step: Annotated[PositiveFloat, Field(allow_inf_nan=False)] | None = Field(
        None, description="uniform, int_uniform: only low, low + step, low + 2 step, ... up to high.")

    @model_validator(mode="after")
    def _one_kind(self):
        given = [kind for kind in SEARCH_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SEARCH_KINDS)} (got "
                             f"{', '.join(given) or 'none'}), e.g. {{log_uniform: [1.0e-4, 1.0e-1]}}")
        kind = given[0]
        if kind != "choice":
            low, high = getattr(self, kind)
            if not low < high:
                raise keyed_error(kind, f"low ({low}) must be below high ({high})")
        if self.step is not None:
            if kind not in ("uniform", "int_uniform"):
                raise keyed_error("step", f"only uniform and int_uniform take a step (this is {kind})")
            if kind == "int_uniform" and self.step != int(self.step):
                raise keyed_error("step", f"int_uniform needs a whole-number step (got {self.step})")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in SEARCH_KINDS if getattr(self, kind) is not None)


class TuneSampler(Strict):
    name: Literal["tpe", "random", "grid", "cmaes", "qmc"] = Field(
        "tpe", description="Optuna's sampler: tpe (default), random, grid (every choice combined; "
        "choices only), cmaes (numbers only), qmc. `sampler: random` is short for `{name: random}`.")
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = Field(None, description="Seeds the sampler: the same study draws the same trials.")
    options: dict[str, Any] = Field(default_factory=dict, description="More keyword arguments of "
                                    "the Optuna sampler, e.g. {n_startup_trials: 5} for tpe.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class TunePruner(Strict):
    name: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = Field(
        "median", description="Optuna's pruner, fed the metric at every epoch end: median (default), "
        "percentile, successive_halving, hyperband, none. `pruner: none` is short for `{name: none}`.")
    options: dict[str, Any] = Field(default_factory=dict, description="More keyword arguments of "
                                    "the Optuna pruner, e.g. {n_startup_trials: 2, n_warmup_steps: 1} for median.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class TuneConfig(Strict):
    """`cnnctl tune`: the hyperparameter search over this config."""

    metric: str = Field("val_accuracy", description="What a trial scores: a column of history.csv "
                        "(val_accuracy, val_loss, accuracy, ...); val_* is read from best.keras at the end.")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="null: maximize accuracy, AUC, precision and recall; minimize losses.")
    trials: Count | None = Field(20, description="Trials in the study, counting the ones done before a resume (null: until the timeout).")
    timeout: Annotated[PositiveFloat, Field(allow_inf_nan=False)] | None = Field(
        None, description="Seconds after which `cnnctl tune` starts no new trial (running ones finish).")
    study: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = Field(
        None, description="The study's name (default: the config file's name).")
    dir: str = Field("studies", description="Studies are written to DIR/<study>/: study.db, trials/, best.yaml, trials.csv, plots.")
    sampler: TuneSampler = Field(default_factory=TuneSampler)
    pruner: TunePruner = Field(default_factory=TunePruner)
    space: dict[str, SearchDistribution] = Field(
        min_length=1, description="Config path -> distribution, e.g. optimizer.learning_rate: "
        "{log_uniform: [1.0e-4, 1.0e-1]}, model.layers[3].rate: {uniform: [0.1, 0.5]}, "
        "train.batch_size: {choice: [32, 64, 128]}.")

    @model_validator(mode="after")
    def _some_budget(self):
        if self.trials is None and self.timeout is None:
            raise keyed_error("trials", "give trials, timeout or both: with neither the search never ends")
        if self.metric.startswith("test_"):
            raise keyed_error("metric", f"{self.metric}: choosing hyperparameters on the test split "
                              "makes its figures optimistic; tune on a val_* metric (set "
                              "data.validation_split if the data has no validation split)")
        return self


class Config(Strict):
    """A whole cnnctl config file."""

    model: ModelConfig
    data: DataConfig | None = None
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    metrics: list[MetricConfig] = Field(default_factory=lambda: [MetricConfig(name="accuracy")])
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    tune: TuneConfig | None = Field(None, description="The search of `cnnctl tune` (`cnnctl train` ignores it).")


def json_schema() -> dict:
    """The JSON Schema of a config file, for editors (yaml-language-server)."""
    schema = Config.model_json_schema()
    # `optimizer: NAME`, `loss: NAME` and `metrics: [NAME]` are short for `{name: NAME}`
    for name in ("OptimizerConfig", "LossConfig", "MetricConfig", "TuneSampler", "TunePruner"):
        full = schema["$defs"][name]
        short = {"type": "string", "enum": full["properties"]["name"]["enum"]}
        schema["$defs"][name] = {"anyOf": [short, full]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cnnctl config"
    return schema
