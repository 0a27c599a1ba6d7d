"""The config file schema (pydantic v2, strict) and how a YAML file becomes a validated Config."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pydantic
from pydantic import (Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationInfo, field_validator, model_validator)

from cnnctl import yaml_source
from cnnctl.errors import CnnctlError, ConfigError, ConfigIssue
from cnnctl.layer_specs import LAYER_SPECS, NAME_PATTERN, LayerSpec, Strict


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
    cache: bool = Field(True, description="Cache decoded images in memory after the first epoch.")
    shuffle_buffer: PositiveInt = Field(10_000, description="Shuffle buffer of file-based sources.")

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


class AugmentLayer(Strict):
    type: Literal["random_flip", "random_rotation", "random_zoom", "random_translation",
                  "random_contrast", "random_brightness", "random_crop"] = Field(
        description="A Keras random preprocessing layer.")
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] | None = Field(
        None, description="random_flip (default horizontal).")
    factor: Union[NonNegativeFloat, tuple[float, float]] | None = Field(
        None, description="rotation (fraction of a full turn), zoom, contrast, brightness.")
    height_factor: Union[NonNegativeFloat, tuple[float, float]] | None = Field(
        None, description="zoom, translation (fraction of the height).")
    width_factor: Union[NonNegativeFloat, tuple[float, float]] | None = Field(
        None, description="zoom, translation (fraction of the width).")
    height: PositiveInt | None = Field(None, description="random_crop: crop height.")
    width: PositiveInt | None = Field(None, description="random_crop: crop width.")
    fill_mode: Literal["reflect", "wrap", "constant", "nearest"] = Field(
        "reflect", description="rotation, zoom, translation: how new pixels are filled.")


class AugmentationConfig(Strict):
    placement: Literal["pipeline", "model"] = Field(
        "model", description="pipeline: in tf.data on the CPU; model: preprocessing layers in "
        "the model, run on the accelerator and inactive at inference.")
    layers: list[AugmentLayer] = Field(default_factory=list, description="Applied in order, "
                                       "to training images only.")


# --------------------------------------------------------------------------- training
class Schedule(Strict):
    type: Literal["constant", "cosine", "exponential", "step", "one_cycle"] = Field(
        "constant", description="Learning rate per step; peaks at optimizer.learning_rate.")
    warmup_epochs: NonNegativeFloat = Field(0.0, description="Linear warm-up from 0 (not one_cycle).")
    decay_rate: float = Field(0.1, gt=0.0, le=1.0, description="exponential, step: factor per decay.")
    decay_epochs: PositiveFloat = Field(1.0, description="exponential, step: epochs per decay.")
    min_learning_rate: NonNegativeFloat = Field(0.0, description="cosine, one_cycle: final rate.")


class OptimizerConfig(Strict):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="Keras optimizer.")
    learning_rate: PositiveFloat = Field(0.001, description="Peak learning rate.")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd, rmsprop.")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum.")
    weight_decay: NonNegativeFloat | None = Field(None, description="Decoupled weight decay "
                                                  "(adamw default 0.004).")
    clipnorm: PositiveFloat | None = Field(None, description="Clip each gradient to this norm.")
    clipvalue: PositiveFloat | None = Field(None, description="Clip gradient values to +-this.")
    schedule: Schedule = Field(default_factory=Schedule)


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
    mixed_precision: Literal["off", "float16", "bfloat16"] = Field(
        "off", description="Compute in half precision, keep weights in float32.")
    jit_compile: Union[bool, Literal["auto"]] = Field("auto", description="XLA-compile the train step.")
    steps_per_execution: PositiveInt = Field(1, description="Batches run per call into the backend.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop when the monitor stalls.")
    reduce_lr_on_plateau: ReduceLROnPlateau | None = Field(
        None, description="Lower the learning rate when the monitor stalls.")
    tensorboard: bool = Field(True, description="Write TensorBoard logs to RUN/logs.")
    checkpoint_monitor: str = Field("val_loss", description="Metric that picks best.keras; "
                                    "falls back to loss when there is no validation data.")


class RunConfig(Strict):
    dir: str = Field("runs", description="Runs are written to DIR/<config name>/<timestamp>/.")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = Field(
        None, description="Default: the config file's name.")


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

    def __init__(self, config: Config, source: yaml_source.Source):
        self.config = config
        self.source = source

    @property
    def file(self) -> str:
        return self.source.file


def did_you_mean(word: Any, choices) -> str:
    """` (did you mean 'x'?)` for the closest choice, or "" when nothing is close."""
    choices = [str(c) for c in choices]
    match = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    # abbreviations: `lr` for learning_rate, `bs` for batch_size
    match = match or [c for c in choices if "_" in c and "".join(p[0] for p in c.split("_")) == word]
    return f" (did you mean {match[0]!r}?)" if match else ""


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
    return LoadedConfig(validate(source, Config), source)


def _apply_override(source: yaml_source.Source, item: str) -> None:
    """Apply one `path.to.key=value` override; the value is read as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise CnnctlError(f"--set {item!r}: expected path.to.key=value, e.g. --set train.epochs=1")
    try:
        value = yaml_source.parse(raw, "--set").data if raw.strip() else None
    except ConfigError:
        value = raw
    parts: list[Any] = []
    for part in key.split("."):
        name, _, rest = part.partition("[")
        parts.append(name)
        for index in filter(None, rest.replace("]", "").split("[")):
            parts.append(int(index))
    node = source.data
    for depth, part in enumerate(parts[:-1]):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise CnnctlError(f"--set {item!r}: {yaml_source.format_path(parts[:depth + 1])} "
                                  "is not in the config")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise CnnctlError(f"--set {item!r}: {yaml_source.format_path(parts[:depth])} is not a mapping")
            node = node.setdefault(part, {})
    if isinstance(parts[-1], int) and (not isinstance(node, list) or parts[-1] >= len(node)):
        raise CnnctlError(f"--set {item!r}: {key} is not in the config")
    node[parts[-1]] = value
    source.lines[tuple(parts)] = None  # errors in an override point at the override, not a line
    source.overridden = getattr(source, "overridden", set()) | {tuple(parts)}


def validate(source: yaml_source.Source, schema: Any, data: Any = None,
             prefix: tuple = (), line_path: tuple | None = None):
    """Validate `data` (default: the whole file) against a schema, raising all errors with lines."""
    data = source.data if data is None else data
    try:
        if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
            return schema.model_validate(data)
        return pydantic.TypeAdapter(schema).validate_python(data)
    except pydantic.ValidationError as e:
        issues = [_issue(source, schema, err, prefix, line_path) for err in e.errors()]
    # "missing 'filters'" says nothing new beside "unknown key 'filtres' (did you mean 'filters'?)"
    suggested = {(i.path.rsplit(".", 1)[0], i.message.split("did you mean ")[1].split("'")[1])
                 for i in issues if i.message.startswith("unknown key") and "did you mean" in i.message}
    raise ConfigError([i for i in issues if not (i.message.startswith("missing required key")
                                                  and tuple(i.path.rsplit(".", 1)) in suggested)])


def _issue(source, schema, err, prefix, line_path) -> ConfigIssue:
    """Turn one pydantic error into a located, readable ConfigIssue."""
    path, model = _strip_tags(schema, err["loc"])
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        allowed = sorted(model.model_fields) if model else []
        msg = f"unknown key {path[-1]!r}{did_you_mean(path[-1], allowed)}"
        if allowed:
            msg += f"; allowed keys: {', '.join(allowed)}"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = ctx.get("tag")
        if tag is None:
            msg = "missing `type:` (or `block:`); give a layer type such as conv2d or dense"
        else:
            msg = f"unknown layer type {tag!r}{did_you_mean(tag, LAYER_SPECS)}"
            path = path + ("type",)
    elif kind == "missing":
        msg = f"missing required key {path[-1]!r}"
    elif kind == "literal_error":
        msg = f"must be one of {ctx.get('expected')}{did_you_mean(value, _literal_choices(ctx))} (got {value!r})"
    elif kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
    elif kind in _MESSAGES:
        msg = f"{_MESSAGES[kind].format(**ctx)} (got {value!r})"
    else:
        msg = f"{err['msg'][0].lower()}{err['msg'][1:]} (got {value!r})"
    full = tuple(prefix) + tuple(path)
    located = source.issue(tuple(line_path or prefix) + tuple(path), msg)
    if getattr(source, "overridden", None) and any(full[:len(o)] == o for o in source.overridden):
        return ConfigIssue("--set", None, yaml_source.format_path(full), msg)
    return ConfigIssue(located.file, located.line, yaml_source.format_path(full), msg)


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
    "string_pattern_mismatch": "must be a name of letters, digits and underscores",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
}


def _literal_choices(ctx: dict) -> list[str]:
    return [c.strip(" '\"") for c in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]


def _strip_tags(schema, loc) -> tuple[tuple, type | None]:
    """Drop pydantic's union-member tags from an error location; return the path and the model
    class that holds its last key (for "allowed keys")."""
    path: list[Any] = []
    types: list[Any] = [schema]
    holder = None
    for part in loc:
        members = [m for t in types for m in _members(t)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, pydantic.BaseModel)]
        tagged = [m for m in models if _tag_of(m) == part]
        if tagged:  # a discriminated-union tag: not part of the user's path
            types = tagged
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
    return tuple(path), holder if path and isinstance(path[-1], str) else None


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
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cnnctl config"
    return schema
