"""The config file schema (pydantic v2, strict) and how a YAML file becomes a validated Config."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import pydantic
from pydantic import (BeforeValidator, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from cnnctl.config import yaml_source
from cnnctl.errors import CnnctlError, ConfigError, ConfigIssue, ConfigValueError
from cnnctl.config.layer_specs import KERAS_LAYER_NAMES, LAYER_SPECS, NAME_PATTERN, LayerSpec, Strict


# --------------------------------------------------------------------------- model
class BlockTemplate(Strict):
    """A reusable group of layers with parameters, used as `{block: NAME, param: value}`."""

    params: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Any] = Field(
        default_factory=dict,
        description="Parameter names and their defaults (null: must be given at each use). "
        "Layers refer to a parameter as `$name` (whole value) or `${name}` inside a string.")
    layers: list[dict[str, Any]] = Field(
        min_length=1, description="Layers of the block; `input` names the block's input.")


class Backbone(Strict):
    """A network from keras.applications, used without its classification top."""

    name: str = Field(description="A keras.applications model, e.g. ResNet50, MobileNetV2, "
                      "EfficientNetB0, VGG16.")
    weights: str | None = Field(None, description="null, `imagenet`, or a path to a weights file.")
    trainable: bool = Field(True, description="false freezes the backbone (train the head only).")
    pooling: Literal["avg", "max"] | None = Field(
        None, description="Global pooling at the backbone's end (null: keep the feature map).")


class ModelConfig(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)] = Field("model", description="Keras model name.")
    input_shape: list[PositiveInt] = Field(min_length=1, max_length=3,
                                           description="Height, width, channels.")
    backbone: Backbone | None = None
    blocks: dict[Annotated[str, Field(pattern=NAME_PATTERN)], BlockTemplate] = Field(
        default_factory=dict, description="Reusable layer groups with parameters (see below).")
    layers: list[LayerSpec] = Field(default_factory=list, description="The network, in order "
                                    "(see layer types below); after the backbone if there is one.")


# --------------------------------------------------------------------------- data
class Normalize(Strict):
    mean: list[float] = Field(min_length=1, description="Per channel, after rescale.")
    std: list[PositiveFloat] = Field(min_length=1, description="Per channel, after rescale.")


class Preprocessing(Strict):
    rescale: float | None = Field(1 / 255, description="Multiply pixel values by this (null: keep 0-255).")
    normalize: Normalize | None = Field(None, description="Then (x - mean) / std per channel.")


class DataConfig(Strict):
    source: Literal["keras", "tfds", "folder", "npz"] = Field(
        "keras", description="Where the images come from.")
    name: str | None = Field(None, description="keras: mnist, fashion_mnist, cifar10, cifar100; "
                             "tfds: a TensorFlow Datasets name.")
    data_dir: str | None = Field(None, description="tfds: where TensorFlow Datasets keeps its files.")
    train_dir: str | None = Field(None, description="folder: one subfolder of images per class.")
    val_dir: str | None = Field(None, description="folder: validation images, one subfolder per class.")
    test_dir: str | None = Field(None, description="folder: test images, one subfolder per class.")
    path: str | None = Field(None, description="npz: file with x_train, y_train, x_test, y_test.")
    image_size: list[PositiveInt] | None = Field(None, min_length=2, max_length=2,
                                                 description="Height, width images are resized to.")
    color_mode: Literal["rgb", "grayscale"] | None = Field(
        None, description="Default: from the model's input channels (1 grayscale, 3 rgb).")
    validation_split: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of train held out "
                                    "for validation (seeded by train.seed).")
    max_train_samples: PositiveInt | None = Field(None, description="Use only the first N train images.")
    max_test_samples: PositiveInt | None = Field(None, description="Use only the first N test images.")
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    cache: bool = Field(True, description="Decode image files once, into memory, while checking "
                        "them before training (when they fit in 2 GiB of pixels); false: decode "
                        "them anew in every epoch.")
    shuffle_buffer: PositiveInt = Field(10_000, description="Shuffle buffer of file-based sources.")
    on_device: bool | Literal["auto"] = Field(
        "auto", description="jax, torch backends: hold the in-memory data set on the accelerator "
        "and draw batches there, with no copy from the host per step; auto: when a GPU is "
        "visible and the data takes at most 4 GiB there.")

    @model_validator(mode="after")
    def _source_fields(self) -> "DataConfig":
        required = {"keras": "name", "tfds": "name", "folder": "train_dir", "npz": "path"}[self.source]
        if getattr(self, required) is None:
            raise ValueError(f"source {self.source!r} needs `{required}`")
        return self

    @field_validator("name")
    @classmethod
    def _known_keras_name(cls, name: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("source") == "keras" and name is not None and name not in KERAS_DATASETS:
            raise ValueError(f"unknown keras data set {name!r}{did_you_mean(name, KERAS_DATASETS)}; "
                             f"choose one of {', '.join(KERAS_DATASETS)}")
        return name


KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")


def _range(value: Any) -> Any:
    """A `[low, high]` list from YAML is the (low, high) tuple Keras takes."""
    return tuple(value) if isinstance(value, list) else value


Factor = Annotated[Union[NonNegativeFloat, tuple[float, float]], BeforeValidator(_range)]
FillMode = Literal["reflect", "wrap", "constant", "nearest"]


def keyed_error(key: str, message: str) -> PydanticCustomError:
    """A model validator's error about one key of its model: the error is reported at that key
    (`augmentation.layers[0].factor`), not at the model, even where the key is not in the file."""
    return PydanticCustomError("keyed_value_error", "{message}", {"key": key, "message": message})


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
    height: PositiveInt | None = Field(
        None, description="The padded height a random window of the image's height is cut "
        "from (at least the image height; e.g. 40 for a 32-pixel image padded by 4).")
    width: PositiveInt | None = Field(
        None, description="The padded width a random window of the image's width is cut from.")
    fill_mode: Literal["constant", "reflect"] | None = Field(
        None, description="How the padding is filled: constant (zeros, the default) or reflect.")

    @field_validator("fill_mode", mode="before")
    @classmethod
    def _pads_with(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ("constant", "reflect"):
            raise ValueError(f"random_crop pads with constant (zeros) or reflect, not {value}")
        return value


AUGMENT_SPECS: dict[str, type[AugmentBase]] = {
    cls.model_fields["type"].default: cls
    for cls in (RandomFlip, RandomRotation, RandomZoom, RandomTranslation, RandomContrast,
                RandomBrightness, RandomCrop)
}
# the keys of all augmentation types (each type takes some of them)
AUGMENT_KEYS = frozenset(k for cls in AUGMENT_SPECS.values() for k in cls.model_fields) - {"type"}

AugmentSpec = Annotated[Union[RandomFlip, RandomRotation, RandomZoom, RandomTranslation,
                              RandomContrast, RandomBrightness, RandomCrop],
                        Field(discriminator="type")]
"""One item of `augmentation.layers`: a Keras random preprocessing layer, by `type`."""


class AugmentationConfig(Strict):
    placement: Literal["pipeline", "model"] = Field(
        "model", description="pipeline: in tf.data on the CPU; model: preprocessing layers in "
        "the model, run on the accelerator and inactive at inference.")
    layers: list[AugmentSpec] = Field(default_factory=list, description="Applied in order, "
                                      "to training images only (see augmentation types below).")


# --------------------------------------------------------------------------- training
class Schedule(Strict):
    type: Literal["constant", "cosine", "exponential", "step", "one_cycle"] = Field(
        "constant", description="Learning rate per step; peaks at optimizer.learning_rate.")
    warmup_epochs: NonNegativeFloat = Field(0.0, description="Linear warm-up from 0 (not one_cycle).")
    decay_rate: float = Field(0.1, gt=0.0, le=1.0, description="exponential, step: factor per decay.")
    decay_epochs: PositiveFloat = Field(1.0, description="exponential, step: epochs per decay.")
    min_learning_rate: NonNegativeFloat = Field(0.0, description="cosine, one_cycle: final rate.")


class OptimizerConfig(Strict):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = Field(
        "adam", description="Keras optimizer; `optimizer: NAME` is short for `optimizer: {name: NAME}`.")
    learning_rate: PositiveFloat = Field(0.001, description="Peak learning rate.")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd, rmsprop.")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum.")
    weight_decay: NonNegativeFloat | None = Field(None, description="Decoupled weight decay "
                                                  "(adamw default 0.004).")
    clipnorm: PositiveFloat | None = Field(None, description="Clip each gradient to this norm.")
    clipvalue: PositiveFloat | None = Field(None, description="Clip gradient values to +-this.")
    schedule: Schedule = Field(default_factory=Schedule)
    reference_batch_size: PositiveInt | None = Field(
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

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class MetricConfig(Strict):
    name: Literal["accuracy", "top_k_accuracy", "precision", "recall", "auc"] = Field(
        description="`- accuracy` is short for `- {name: accuracy}`.")
    k: PositiveInt = Field(5, description="top_k_accuracy: how many top classes count.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class EarlyStopping(Strict):
    monitor: str = "val_loss"
    patience: NonNegativeInt = 3
    min_delta: NonNegativeFloat = 0.0
    restore_best_weights: bool = True


class ReduceLROnPlateau(Strict):
    monitor: str = "val_loss"
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: NonNegativeInt = 2
    min_lr: NonNegativeFloat = 0.0


class TrainConfig(Strict):
    epochs: PositiveInt = Field(10, description="Passes over the training data.")
    batch_size: PositiveInt = Field(32, description="Images per step.")
    seed: int = Field(42, description="Seeds weights, shuffling, validation split and augmentation.")
    deterministic: bool = Field(False, description="Deterministic ops (slower) for bit-exact reruns.")
    mixed_precision: Annotated[Literal["off", "float16", "bfloat16"], BeforeValidator(
        lambda v: "off" if v is False else v)] = Field(  # YAML 1.1 reads a bare `off` as false
        "off", description="Compute in half precision, keep weights in float32.")
    jit_compile: Union[bool, Literal["auto"]] = Field("auto", description="XLA-compile the train step.")
    steps_per_execution: PositiveInt = Field(1, description="Batches run per call into the backend.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop when the monitor stalls.")
    reduce_lr_on_plateau: ReduceLROnPlateau | None = Field(
        None, description="Lower the learning rate when the monitor stalls.")
    tensorboard: bool = Field(True, description="Write TensorBoard logs to RUN/logs.")
    backup_every_steps: PositiveInt | None = Field(
        None, description="Also back up every N steps (a backup is always written at each "
        "epoch end); a resumed run continues from the newest backup.")
    checkpoint_monitor: str = Field("val_loss", description="Metric that picks best.keras; "
                                    "falls back to loss when there is no validation data.")
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


# --------------------------------------------------------------------------- loading
class LoadedConfig:
    """A validated config with the YAML source it came from (for error locations)."""

    def __init__(self, config: Config, source: yaml_source.Source, text: str | None = None,
                 overrides: list[str] | None = None):
        self.config = config
        self.source = source
        self.text = text  # the file as the user wrote it
        self.overrides = list(overrides or [])  # the `--set` items applied to it

    @property
    def file(self) -> str:
        return self.source.file

    def error_at(self, key: str, message: str) -> ConfigError:
        """A ConfigError for the dotted config path `key` (`data.train_dir`), located at its
        line in the file, or at `--set` when an override gave the value. List items are
        written `[i]` (`augmentation.layers[2].factor`)."""
        path = tuple(int(part) if part.isdigit() else part
                     for part in re.findall(r"[^.\[\]]+", key))
        if any(path[:len(o)] == o for o in self.source.overridden):
            return ConfigError([ConfigIssue("--set", None, key, message)])
        return ConfigError([self.source.issue(path, message)])

    @contextlib.contextmanager
    def located(self):
        """Inside this block a `ConfigValueError`, whoever raises it (a data source, a layer, the
        distribution plan), leaves as a ConfigError at FILE:LINE: path of its key. Code below
        the config raises ConfigValueError(key, detail); the entry points that hold the loaded
        config (train, check, data check, eval, a run's test images) run inside this."""
        try:
            yield
        except ConfigValueError as e:
            raise self.error_at(e.key, e.detail) from None


def located(config):
    """`config.located()` for a LoadedConfig; for a bare Config (no file to point at), a block
    that lets ConfigValueError through as it is (`key: detail`)."""
    return config.located() if isinstance(config, LoadedConfig) else contextlib.nullcontext()


def did_you_mean(word: Any, choices, aliases: dict[str, str] | None = None) -> str:
    """` (did you mean 'x'?)` for the closest choice, or "" when nothing is close.

    Case, `_` and `-` do not count, so the Keras spellings of a name find it (`Relu` and
    `ReLU` relu, `SGD` sgd, `CategoricalCrossentropy` categorical_crossentropy, `HeNormal`
    he_normal).

    Args:
        word: what the user wrote.
        choices: the names that are allowed.
        aliases: other names of a choice, e.g. Keras class names (`MaxPooling2D`) of layer types.

    Returns:
        The suggestion with a leading space, or "".
    """
    choices = [str(c) for c in choices]
    text = str(word)
    folded = {_fold(c): c for c in choices}
    folded.update({_fold(alias): c for alias, c in (aliases or {}).items() if _fold(alias) not in folded})
    match = [folded[_fold(text)]] if _fold(text) in folded else []
    lower = {c.lower(): c for c in choices}
    match = match or [lower[m] for m in difflib.get_close_matches(text.lower(), lower, n=1, cutoff=0.6)]
    # abbreviations: `lr` for learning_rate, `bs` for batch_size
    match = match or [c for c in choices if "_" in c and "".join(p[0] for p in c.split("_")) == text.lower()]
    return f" (did you mean {match[0]!r}?)" if match else ""


def _fold(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def load(path: str | Path, overrides: list[str] | None = None) -> LoadedConfig:
    """Read, parse and validate a config file, with `--set key=value` overrides applied.

    Raises:
        CnnctlError: the file cannot be read.
        ConfigError: every problem found in the file, each with its line and config path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CnnctlError(f"{path}: config file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CnnctlError(f"{path}: cannot read the config file: {e}") from None
    source = yaml_source.parse(text, str(path))
    if not isinstance(source.data, dict):
        raise ConfigError([source.issue((), "the top level must be a mapping with sections "
                                             "`model:`, `data:`, `train:`, ...")])
    for item in overrides or []:
        _apply_override(source, item)
    return LoadedConfig(validate(source, Config), source, text, overrides)


def _apply_override(source: yaml_source.Source, item: str) -> None:
    """Apply one `path.to.key=value` override; the value is read as YAML.

    Raises:
        CnnctlError: the override is malformed, its value has a YAML tag, or its path goes
            through a value that is not a mapping or a list.
    """
    key, sep, raw = item.partition("=")
    parts: list[Any] = []
    for part in key.strip().split(".") if sep else [""]:
        match = _OVERRIDE_PART.fullmatch(part)
        if not match:
            raise CnnctlError(f"--set {item!r}: expected path.to.key=value, e.g. --set "
                              "train.epochs=1 or --set model.layers[0].filters=16")
        parts.append(match[1])
        parts.extend(int(index) for index in re.findall(r"\d+", match[2]))
    value = _override_value(item, raw)
    node = source.data
    for depth, part in enumerate(parts):
        here, where = tuple(parts[:depth + 1]), yaml_source.format_path(parts[:depth]) or "the top level"
        if isinstance(part, int) and not (isinstance(node, list) and part < len(node)):
            raise CnnctlError(f"--set {item!r}: {yaml_source.format_path(here)} is not in the config"
                              + (f" ({where} has {len(node)} item(s))" if isinstance(node, list) else ""))
        if isinstance(part, str) and not isinstance(node, dict):
            raise CnnctlError(f"--set {item!r}: {where} is not a mapping")
        if depth == len(parts) - 1:
            node[part] = value
            break
        if isinstance(part, str) and node.get(part) is None:
            if isinstance(parts[depth + 1], int):
                raise CnnctlError(f"--set {item!r}: {yaml_source.format_path(parts[:depth + 2])} "
                                  "is not in the config")
            node[part] = {}  # a section that is absent or empty in the file comes from --set alone
            source.overridden.add(here)
        node = node[part]
    source.lines[tuple(parts)] = None  # errors in an override point at the override, not a line
    source.overridden.add(tuple(parts))


_OVERRIDE_PART = re.compile(r"([^.\[\]=\s]+)((?:\[\d+\])*)")


def _override_value(item: str, raw: str) -> Any:
    """The value of `--set key=RAW`: RAW read as YAML, or the text itself where it is not YAML."""
    if not raw.strip():
        return None
    try:
        return yaml_source.parse(raw, "--set").data
    except ConfigError as e:
        if all(i.message.startswith(("YAML syntax error", "the file is empty")) for i in e.issues):
            return raw
        raise CnnctlError(f"--set {item!r}: {'; '.join(i.message for i in e.issues)}") from None


def validate(source: yaml_source.Source, schema: Any, data: Any = None,
             prefix: tuple = (), line_path: tuple | None = None):
    """Validate `data` (default: the whole file) against a schema, raising all errors with lines.

    Args:
        source: the parsed file, for lines and `--set` overrides.
        schema: a pydantic model class or any type pydantic can validate.
        data: the value to validate; default: the whole file.
        prefix: the config path of `data`, put in front of each error's path.
        line_path: where to look up lines, when not `prefix` (a block's layers used elsewhere).

    Returns:
        The validated value.

    Raises:
        ConfigError: every problem pydantic found, in plain words, each with its line.
    """
    data = source.data if data is None else data
    try:
        if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
            return schema.model_validate(data)
        return pydantic.TypeAdapter(schema).validate_python(data)
    except pydantic.ValidationError as e:
        errors = e.errors()
    found = [_issue(source, schema, _in_input(err, data), prefix, line_path) for err in errors]
    raise ConfigError(list(dict.fromkeys(f.issue for f in _tidy(found))))


def _in_input(err: dict, data: Any) -> dict:
    """Cut list indices off an error's location where the input had a scalar there.

    `kernel_size: 0` is read as `[0, 0]`: its error belongs at kernel_size, not at
    kernel_size[0] and kernel_size[1], which the file does not have.
    """
    loc, node = err["loc"], data
    for depth, part in enumerate(loc):
        if isinstance(node, dict) and part in node or isinstance(node, list) and (
                isinstance(part, int) and part < len(node)):
            node = node[part]
        elif isinstance(part, int) and not isinstance(node, dict | list) and all(
                isinstance(p, int) for p in loc[depth:]):
            return {**err, "loc": loc[:depth], "input": node}
        elif isinstance(node, dict | list):  # a key pydantic adds (a union member, [key]): skip
            continue
        else:
            break
    return err


class _Found(typing.NamedTuple):
    """One pydantic error turned into an issue, with what `_tidy` needs to merge or drop it."""

    issue: ConfigIssue
    path: tuple  # the whole config path
    kind: str  # pydantic's error type
    got: str  # the value as shown in "(got VALUE)", or "" when the message does not show it
    via_union: bool  # one of the errors of a value that fits none of a union's members


def _tidy(found: list[_Found]) -> list[_Found]:
    """Drop errors that only echo another one and merge the errors of one union value."""
    # "missing 'filters'" says nothing new beside "unknown key 'filtres' (did you mean 'filters'?)"
    suggested = {f.path[:-1] + (m[1],) for f in found if f.kind == "extra_forbidden"
                 for m in [re.search(r"did you mean '([^']*)'", f.issue.message)] if m}
    # pydantic adds "should have at least 2 items after validation" when an item is invalid
    echoes = {f.path for f in found if f.kind == "length_after_validation"}
    broken = {p for f in found for p in echoes
              if f.path[:len(p)] == p and f.kind != "length_after_validation"}
    kept = [f for f in found if not (f.kind == "missing" and f.path in suggested)
            and not (f.kind == "length_after_validation" and f.path in broken)]
    out: list[_Found] = []
    for f in kept:
        if not f.via_union:
            out.append(f)
            continue
        group = [g for g in kept if g.via_union and g.path == f.path]
        if f is not group[0]:
            continue
        # A value of the right type with a bad value says more than "must be a list" from the
        # other members; only when it fits no member at all are all the alternatives listed.
        specific = [g for g in group if g.kind not in _TYPE_KINDS]
        if specific:
            out.extend(specific)
            continue
        whats = [g.issue.message.removesuffix(f" (got {g.got})").removeprefix("must be ") for g in group]
        joiner = ", or " if any(" or " in w for w in whats) else " or "
        message = f"must be {joiner.join(dict.fromkeys(whats))} (got {f.got})"
        out.append(f._replace(issue=dataclasses.replace(f.issue, message=message)))
    return out


_TYPE_KINDS = {"int_type", "int_parsing", "int_from_float", "float_type", "float_parsing",
               "bool_type", "bool_parsing", "string_type", "list_type", "tuple_type", "dict_type",
               "model_type", "model_attributes_type", "literal_error", "none_required"}


def _issue(source, schema, err, prefix, line_path) -> _Found:
    """Turn one pydantic error into a located, readable ConfigIssue."""
    path, model, via_union, is_key, types = _strip_tags(schema, err["loc"])
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    # the augmentation union's errors, not the layer union's: they have words of their own
    augment = any(isinstance(m, type) and issubclass(m, AugmentBase) for t in types for m in _members(t))
    got = _shown(value)
    if kind in ("too_short", "too_long") and isinstance(value, list | tuple) and (
            ctx.get("actual_length") != len(value)):  # counts only the valid items: an echo
        kind = "length_after_validation"
    if kind == "extra_forbidden" and isinstance(model, type) and issubclass(model, AugmentBase) and (
            path[-1] in AUGMENT_KEYS):  # a key of another augmentation type
        own = sorted(set(model.model_fields) - {"type"})
        msg = f"{_tag_of(model)} does not use `{path[-1]}`; it takes {', '.join(own) or 'no options'}"
        got = ""
    elif kind == "extra_forbidden":
        allowed = sorted(model.model_fields) if model else []
        msg = f"unknown key {path[-1]!r}{did_you_mean(path[-1], allowed)}"
        if allowed:
            msg += f"; allowed keys: {', '.join(allowed)}"
        got = ""
    elif kind == "keyed_value_error":  # a model validator's error about one of its keys
        msg, path, got = str(ctx["message"]), path + (ctx["key"],), ""
    elif kind == "union_tag_invalid" and augment:
        tag = ctx.get("tag")
        msg = (f"unknown augmentation type {tag!r}{did_you_mean(tag, AUGMENT_SPECS)}; "
               f"augmentation types: {', '.join(AUGMENT_SPECS)}")
        path, got = path + ("type",), ""
    elif kind in ("union_tag_not_found", "model_attributes_type", "model_type") and augment and (
            not isinstance(value, dict)):
        msg = ("an augmentation layer must be a mapping, e.g. {type: random_flip, mode: horizontal} "
               f"(got {got})")
    elif kind == "union_tag_not_found" and augment:
        typo = next((k for k in value if isinstance(k, str) and did_you_mean(k, ("type",))), None)
        if typo is None:
            msg = f"missing `type:`; give an augmentation type: {', '.join(AUGMENT_SPECS)}"
        else:
            msg = (f"unknown key {typo!r}{did_you_mean(typo, ('type',))}; an augmentation layer needs "
                   f"`type:`, one of {', '.join(AUGMENT_SPECS)}")
            path = path + (typo,)
        got = ""
    elif kind == "union_tag_invalid":
        tag = ctx.get("tag")
        hint = did_you_mean(tag, LAYER_SPECS, aliases=KERAS_LAYER_NAMES)
        msg = f"unknown layer type {tag!r}" + (hint or (  # the suggestion alone: the list is long
            f"; layer types: {', '.join(LAYER_SPECS)} (or `block:` for a block of model.blocks)"))
        path, got = path + ("type",), ""
    elif kind == "union_tag_not_found" and not isinstance(value, dict):
        msg = f"a layer must be a mapping, e.g. {{type: dense, units: 10}} (got {got})"
    elif kind == "union_tag_not_found":
        typo = next((k for k in value if isinstance(k, str) and did_you_mean(k, ("type", "block"))), None)
        if typo is None:
            msg = "missing `type:` (or `block:`); give a layer type such as conv2d or dense"
        else:
            msg = (f"unknown key {typo!r}{did_you_mean(typo, ('type', 'block'))}; a layer needs "
                   "`type:` (a layer type such as conv2d or dense) or `block:`")
            path = path + (typo,)
        got = ""
    elif kind == "missing":
        msg, got = f"missing required key {path[-1]!r}", ""
    elif kind == "literal_error":
        choices = _literal_choices(ctx)
        msg = (f"must be {'one of ' if len(choices) > 1 else ''}{ctx.get('expected')}"
               f"{did_you_mean(value, choices)} (got {got})")
    elif kind == "value_error":
        msg, got = str(ctx.get("error", err["msg"])), ""
    elif kind == "string_pattern_mismatch":
        what = _PATTERNS.get(ctx.get("pattern"), f"must match the pattern {ctx.get('pattern')}")
        msg = f"{'the key ' if is_key else ''}{what} (got {got})"
    elif kind in _MESSAGES:
        msg = f"{_MESSAGES[kind].format(**ctx)} (got {got})"
    else:
        msg = f"{err['msg'][0].lower()}{err['msg'][1:]} (got {got})"
    if isinstance(value, str) and yaml_source.TUPLE_TEXT.fullmatch(value):  # `kernel_size: (3, 3)`
        msg, got, via_union = yaml_source.tuple_message(value[1:-1].split(",")), "", False
    full = tuple(prefix) + tuple(path)
    if any(full[:len(o)] == o for o in source.overridden):
        issue = ConfigIssue("--set", None, yaml_source.format_path(full), msg)
    else:
        located = source.issue(tuple(line_path or prefix) + tuple(path), msg)
        issue = ConfigIssue(located.file, located.line, yaml_source.format_path(full), msg)
    return _Found(issue, full, kind, got, via_union)


def _shown(value: Any) -> str:
    """A value as the user wrote it in YAML: null, true, 3, 'text', [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
}

_PATTERNS = {
    NAME_PATTERN: "must be a name of letters, digits and underscores, not starting with a digit",
    r"^[A-Za-z0-9_.-]+$": "must be letters, digits, '_', '.' and '-' only",
}


def _literal_choices(ctx: dict) -> list[str]:
    return [c.strip(" '\"") for c in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]


def _strip_tags(schema, loc) -> tuple[tuple, type | None, bool, bool, list]:
    """Drop what is not the user's path from a pydantic error location.

    Pydantic puts the tag of a discriminated-union member (`conv2d`), the name of a plain
    union member (`constrained-float`, `tuple[float, float]`) and `[key]` (the error is in a
    mapping key, not its value) in error locations.

    Returns:
        The user's path; the model class that holds its last key (for "allowed keys"); whether
        a union member's name was dropped; whether the error is about a key; the types the
        schema has at the path (the members of a union there tell which union it is).
    """
    path: list[Any] = []
    types: list[Any] = [schema]
    holder = None
    via_union = is_key = False
    for part in loc:
        if part == "[key]":
            is_key = True
            continue
        members = [m for t in types for m in _members(t) if m is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, pydantic.BaseModel)]
        if isinstance(part, str) and len(members) > 1:
            tagged = [m for m in models if _tag_of(m) == part]
            if tagged:  # a discriminated-union tag
                types = tagged
                continue
            if not any(part in m.model_fields for m in models) and not any(
                    typing.get_origin(m) is dict for m in members):
                via_union = True  # the name of the union member that failed: a model's class
                types = [m for m in models if m.__name__ == part] or [  # name or a type's repr
                    m for m in members if m not in models]
                continue
        holder = models[0] if models else None
        path.append(part)
        nxt: list[Any] = []
        for m in members:
            origin = typing.get_origin(m)
            if m in models and isinstance(part, str) and part in m.model_fields:
                nxt.append(m.model_fields[part].annotation)
            elif origin is list and isinstance(part, int):
                nxt.extend(typing.get_args(m)[:1])
            elif origin is tuple and isinstance(part, int):
                args = typing.get_args(m)
                nxt.extend(args[:1] if args[-1:] == (Ellipsis,) else args[part:part + 1])
            elif origin is dict and isinstance(part, str):
                nxt.append(typing.get_args(m)[1])
        types = nxt
    return (tuple(path), holder if path and isinstance(path[-1], str) else None, via_union, is_key,
            types)


def _tag_of(cls) -> str | None:
    field = getattr(cls, "model_fields", {}).get("type")
    if field is not None and isinstance(field.default, str):
        return field.default
    return "block" if cls.__name__ == "BlockCall" else None


def _members(t) -> list:
    """The concrete types inside Optional / Union / Annotated."""
    origin = typing.get_origin(t)
    if origin is Annotated:
        return _members(typing.get_args(t)[0])
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        return [m for a in typing.get_args(t) for m in _members(a)]
    return [t]


def json_schema() -> dict:
    """The JSON Schema of a config file, for editors (yaml-language-server)."""
    schema = Config.model_json_schema()
    # `optimizer: NAME`, `loss: NAME` and `metrics: [NAME]` are short for `{name: NAME}`
    for name in ("OptimizerConfig", "LossConfig", "MetricConfig"):
        full = schema["$defs"][name]
        short = {"type": "string", "enum": full["properties"]["name"]["enum"]}
        schema["$defs"][name] = {"anyOf": [short, full]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cnnctl config"
    return schema
