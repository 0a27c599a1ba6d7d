"""The schema of one layer in `model.layers`: a discriminated union on `type`."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field,
                      NonNegativeFloat, NonNegativeInt, PositiveInt, Tag, WithJsonSchema, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# inside a block a layer's name follows the instance's (`stage1_1x1`): it may start with a digit
LAYER_NAME_PATTERN = r"^[A-Za-z0-9_]+$"

Activation = Literal["linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "swish",
                     "silu", "hard_swish", "hard_silu", "mish", "sigmoid", "hard_sigmoid", "tanh",
                     "hard_tanh", "softsign", "softmax", "softplus"]
InitializerName = Literal["glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
                          "lecun_uniform", "lecun_normal", "truncated_normal", "random_normal",
                          "random_uniform", "variance_scaling", "orthogonal", "constant", "zeros",
                          "ones"]
Padding = Literal["valid", "same"]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def keyed_error(key: str, message: str) -> PydanticCustomError:
    """A model validator's error about one key of its model: the error is reported at that key
    (`augmentation.layers[0].factor`), not at the model, even where the key is not in the file."""
    return PydanticCustomError("keyed_value_error", "{message}", {"key": key, "message": message})


def pair(value: Any) -> Any:
    """Accept `3` as shorthand for `[3, 3]` (kernel sizes, strides, pool sizes, ...)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError("must be a whole number or a list of two whole numbers [height, width] "
                         f"(got {value!r})")
    return tuple(value)


def _pair_schema(item: dict) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [item, {"type": "array", "items": item,
                                            "minItems": 2, "maxItems": 2}]})


IntPair = Annotated[tuple[PositiveInt, PositiveInt], BeforeValidator(pair),
                    _pair_schema({"type": "integer", "minimum": 1})]



class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    # strict: `filters: "32"` or `epochs: true` are mistakes, not values to coerce
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)


class InitializerSpec(Strict):
    """An initializer with arguments: `{name: variance_scaling, scale: 2.0, mode: fan_out}`."""

    # the arguments each initializer takes (Keras's own keyword names)
    ARGUMENTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "variance_scaling": ("scale", "mode", "distribution"), "constant": ("value",),
        "random_normal": ("mean", "stddev"), "truncated_normal": ("mean", "stddev"),
        "random_uniform": ("minval", "maxval"), "orthogonal": ("gain",)}

    name: InitializerName
    scale: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = Field(
        None, description="variance_scaling (default 1.0).")
    mode: Literal["fan_in", "fan_out", "fan_avg"] | None = Field(
        None, description="variance_scaling (default fan_in).")
    distribution: Literal["truncated_normal", "untruncated_normal", "uniform"] | None = Field(
        None, description="variance_scaling (default truncated_normal).")
    value: Finite | None = Field(None, description="constant (default 0).")
    mean: Finite | None = Field(None, description="random_normal, truncated_normal.")
    stddev: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = Field(
        None, description="random_normal, truncated_normal (default 0.05).")
    minval: Finite | None = Field(None, description="random_uniform (default -0.05).")
    maxval: Finite | None = Field(None, description="random_uniform (default 0.05).")
    gain: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = Field(
        None, description="orthogonal (default 1.0).")

    @model_validator(mode="after")
    def _own_arguments(self) -> "InitializerSpec":
        allowed = self.ARGUMENTS.get(self.name, ())
        given = [k for k in type(self).model_fields if k != "name" and getattr(self, k) is not None]
        wrong = [k for k in given if k not in allowed]
        if wrong:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no arguments"
            raise ValueError(f"initializer {self.name} {takes}, not {', '.join(wrong)}")
        if self.name == "random_uniform" and self.minval is not None and self.maxval is not None \
                and self.minval >= self.maxval:
            raise ValueError(f"minval must be below maxval (got {self.minval} and {self.maxval})")
        return self

    def arguments(self) -> dict[str, Any]:
        """The Keras keyword arguments given."""
        return {k: getattr(self, k) for k in self.ARGUMENTS.get(self.name, ())
                if getattr(self, k) is not None}


Initializer = Union[InitializerName, InitializerSpec]


class LayerBase(Strict):
    """Fields every layer has: its name, the layers it reads, and how often it repeats."""

    name: Annotated[str, Field(pattern=LAYER_NAME_PATTERN)] | None = Field(
        None, description="Layer name; other layers refer to it in `inputs`.")
    inputs: list[Annotated[str, Field(pattern=LAYER_NAME_PATTERN)]] | None = Field(
        None, description="Names of earlier layers (or `input`) this layer reads; "
        "default: the layer before it. Naming inputs makes the model a functional graph.")
    repeat: NonNegativeInt = Field(1, description="Stack this layer N times (0: leave it out).")
    when: bool = Field(True, description="false leaves the layer out (in a block: "
                       "`when: ${expression}`); a left-out layer's name refers to its input.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_input(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class ConvOptions(LayerBase):
    kernel_size: IntPair = 3
    strides: IntPair = 1
    padding: Padding = "valid"
    dilation_rate: IntPair = 1
    activation: Activation | None = None
    use_bias: bool = True
    initializer: Initializer = Field("glorot_uniform", description="Of the kernel: a name, or "
                                     "{name: variance_scaling, scale: 2.0, mode: fan_out, ...}.")
    bias_initializer: Initializer = "zeros"
    l2: NonNegativeFloat = Field(0.0, description="L2 regularization factor of the kernel.")

    @model_validator(mode="after")
    def _strides_or_dilation(self) -> "ConvOptions":
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise keyed_error("dilation_rate", f"a convolution cannot have both strides > 1 and "
                         f"dilation_rate > 1 (got strides {list(self.strides)}, dilation_rate "
                         f"{list(self.dilation_rate)}); set one of them to 1")
        return self


class Conv2D(ConvOptions):
    type: Literal["conv2d"] = "conv2d"
    filters: PositiveInt
    groups: PositiveInt = Field(1, description="Split the channels into this many groups, each "
                                "convolved on its own (ResNeXt, RegNet); divides filters and the "
                                "input channels.")

    @model_validator(mode="after")
    def _groups_divide_filters(self) -> "Conv2D":
        if self.filters % self.groups:
            raise keyed_error("groups", f"filters ({self.filters}) must be a multiple of groups "
                         f"({self.groups})")
        return self


class DepthwiseConv2D(ConvOptions):
    type: Literal["depthwise_conv2d"] = "depthwise_conv2d"
    depth_multiplier: PositiveInt = 1


class SeparableConv2D(ConvOptions):
    type: Literal["separable_conv2d"] = "separable_conv2d"
    filters: PositiveInt
    depth_multiplier: PositiveInt = 1


class Conv2DTranspose(ConvOptions):
    type: Literal["conv2d_transpose"] = "conv2d_transpose"
    filters: PositiveInt


class PoolOptions(LayerBase):
    pool_size: IntPair = 2
    strides: IntPair | None = Field(None, description="Default: pool_size.")
    padding: Padding = "valid"


class MaxPool2D(PoolOptions):
    type: Literal["max_pool2d"] = "max_pool2d"


class AvgPool2D(PoolOptions):
    type: Literal["avg_pool2d"] = "avg_pool2d"


class GlobalAvgPool2D(LayerBase):
    type: Literal["global_avg_pool2d"] = "global_avg_pool2d"
    keepdims: bool = False


class GlobalMaxPool2D(LayerBase):
    type: Literal["global_max_pool2d"] = "global_max_pool2d"
    keepdims: bool = False


class Dense(LayerBase):
    type: Literal["dense"] = "dense"
    units: PositiveInt
    activation: Activation | None = None
    use_bias: bool = True
    initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"
    l2: NonNegativeFloat = 0.0


class Dropout(LayerBase):
    type: Literal["dropout"] = "dropout"
    rate: float = Field(ge=0.0, lt=1.0)
    noise_shape: list[PositiveInt | None] | None = Field(
        None, min_length=1, description="Shape of the dropout mask, batch axis included: "
        "[null, 1, 1, null] drops whole channels, [null, 1, 1, 1] whole samples.")


class DropPath(LayerBase):
    """Stochastic depth: in training, the whole input of a sample is dropped with probability
    `rate` (the rest scaled by 1 / (1 - rate)); put it at the end of a residual branch."""

    type: Literal["drop_path"] = "drop_path"
    rate: float = Field(ge=0.0, lt=1.0)


class SpatialDropout2D(LayerBase):
    type: Literal["spatial_dropout2d"] = "spatial_dropout2d"
    rate: float = Field(ge=0.0, lt=1.0)


class BatchNorm(LayerBase):
    type: Literal["batch_norm"] = "batch_norm"
    momentum: float = Field(0.99, gt=0.0, lt=1.0)
    epsilon: float = Field(1e-3, gt=0.0)
    center: bool = True
    scale: bool = True
    axis: int = Field(-1, description="The features axis (-1: channels last).")


class LayerNorm(LayerBase):
    type: Literal["layer_norm"] = "layer_norm"
    epsilon: float = Field(1e-3, gt=0.0)
    axis: int = -1


class GroupNorm(LayerBase):
    type: Literal["group_norm"] = "group_norm"
    groups: PositiveInt = Field(32, description="Divides the channels.")
    epsilon: float = Field(1e-3, gt=0.0)
    axis: int = -1
    center: bool = True
    scale: bool = True


class Normalization(LayerBase):
    """(x - mean) / sqrt(variance) with fixed statistics (e.g. ImageNet's); without them, Keras's
    un-adapted Normalization layer, whose statistics are non-trainable weights."""

    type: Literal["normalization"] = "normalization"
    mean: Finite | list[Finite] | None = Field(None, description="Per channel, or one for all.")
    variance: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | \
        list[Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] | None = None
    axis: int | None = -1
    invert: bool = Field(False, description="Undo the normalization instead.")

    @model_validator(mode="after")
    def _both_statistics(self) -> "Normalization":
        if (self.mean is None) != (self.variance is None):
            given, missing = ("mean", "variance") if self.variance is None else ("variance", "mean")
            raise keyed_error(missing, f"normalization with {given} needs {missing} too")
        if isinstance(self.mean, list) and isinstance(self.variance, list) and \
                len(self.mean) != len(self.variance):
            raise keyed_error("variance", f"has {len(self.variance)} values but mean has "
                         f"{len(self.mean)}")
        return self


class LayerScale(LayerBase):
    """A learned scale per channel (of the last axis), starting at `init_value` (ConvNeXt)."""

    type: Literal["layer_scale"] = "layer_scale"
    init_value: Finite = 1e-6


class ActivationLayer(LayerBase):
    type: Literal["activation"] = "activation"
    activation: Activation
    negative_slope: float | None = Field(
        None, ge=0.0, description="Slope for x < 0; only with leaky_relu (default 0.3).")

    @model_validator(mode="after")
    def _slope_only_for_leaky(self) -> "ActivationLayer":
        if self.negative_slope is not None and self.activation != "leaky_relu":
            raise ValueError(f"negative_slope is only used with activation: leaky_relu "
                             f"(got activation {self.activation!r})")
        return self


class PReLU(LayerBase):
    type: Literal["prelu"] = "prelu"
    shared_axes: list[PositiveInt] | None = Field(
        None, description="Axes sharing one slope, e.g. [1, 2]: one per channel.")
    alpha_initializer: Initializer = "zeros"


class Flatten(LayerBase):
    type: Literal["flatten"] = "flatten"


class Reshape(LayerBase):
    type: Literal["reshape"] = "reshape"
    target_shape: list[int] = Field(min_length=1, description="Shape without the batch axis; one entry may be -1.")

    @field_validator("target_shape")
    @classmethod
    def _sizes(cls, shape: list[int]) -> list[int]:
        if shape.count(-1) > 1:
            raise ValueError(f"only one entry may be -1 (got {shape})")
        if any(d == 0 or d < -1 for d in shape):
            raise ValueError(f"entries must be > 0, or -1 for one of them (got {shape})")
        return shape


class UpSampling2D(LayerBase):
    type: Literal["upsampling2d"] = "upsampling2d"
    size: IntPair = 2
    interpolation: Literal["nearest", "bilinear"] = "nearest"


class ZeroPadding2D(LayerBase):
    type: Literal["zero_padding2d"] = "zero_padding2d"
    padding: Annotated[tuple[Union[Annotated[tuple[NonNegativeInt, NonNegativeInt],
                                             BeforeValidator(pair)]], ...],
                       Field(min_length=2, max_length=2), BeforeValidator(pair),
                       _pair_schema({"anyOf": [
                           {"type": "integer", "minimum": 0},
                           {"type": "array", "items": {"type": "integer", "minimum": 0},
                            "minItems": 2, "maxItems": 2}]})] = Field(
        (1, 1), description="int, [rows, cols] or [[top, bottom], [left, right]].")


class Cropping2D(LayerBase):
    type: Literal["cropping2d"] = "cropping2d"
    cropping: Annotated[tuple[Union[Annotated[tuple[NonNegativeInt, NonNegativeInt],
                                              BeforeValidator(pair)]], ...],
                        Field(min_length=2, max_length=2), BeforeValidator(pair),
                        _pair_schema({"anyOf": [
                            {"type": "integer", "minimum": 0},
                            {"type": "array", "items": {"type": "integer", "minimum": 0},
                             "minItems": 2, "maxItems": 2}]})] = Field(
        description="int, [rows, cols] or [[top, bottom], [left, right]].")


class Rescaling(LayerBase):
    type: Literal["rescaling"] = "rescaling"
    scale: Finite | list[Finite] = Field(description="One factor, or one per channel.")
    offset: Finite | list[Finite] = 0.0


class Resizing(LayerBase):
    type: Literal["resizing"] = "resizing"
    height: PositiveInt
    width: PositiveInt
    interpolation: Literal["bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5"] = "bilinear"
    crop_to_aspect_ratio: bool = False


class MergeBase(LayerBase):
    @model_validator(mode="after")
    def _needs_inputs(self) -> "MergeBase":
        if not self.inputs or len(self.inputs) < 2:
            raise ValueError(f"{self.type} needs `inputs:` naming at least two earlier layers "
                             f"(got {self.inputs!r})")
        return self


class Add(MergeBase):
    type: Literal["add"] = "add"


class Multiply(MergeBase):
    type: Literal["multiply"] = "multiply"


class Concatenate(MergeBase):
    type: Literal["concatenate"] = "concatenate"
    axis: int = -1

    @field_validator("axis")
    @classmethod
    def _not_batch(cls, axis: int) -> int:
        if axis == 0:
            raise ValueError("axis 0 is the batch axis; concatenate along the channels (-1) or "
                             "another image axis")
        return axis


class Subtract(MergeBase):
    type: Literal["subtract"] = "subtract"

    @model_validator(mode="after")
    def _two_inputs(self) -> "Subtract":
        if len(self.inputs) != 2:
            raise keyed_error("inputs", f"subtract takes exactly two inputs (got {len(self.inputs)})")
        return self


class Average(MergeBase):
    type: Literal["average"] = "average"


class Maximum(MergeBase):
    type: Literal["maximum"] = "maximum"


class Minimum(MergeBase):
    type: Literal["minimum"] = "minimum"


class BlockCall(BaseModel):
    """Use of a block template from `model.blocks`; other keys are the template's parameters."""

    model_config = ConfigDict(extra="allow", strict=True)
    block: str = Field(description="Name of a template in `model.blocks`.")
    name: Annotated[str, Field(pattern=LAYER_NAME_PATTERN)] | None = None
    inputs: list[Annotated[str, Field(pattern=LAYER_NAME_PATTERN)]] | None = None
    repeat: NonNegativeInt = Field(1, description="Use the block N times in a row (0: leave it out).")
    when: bool = True

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_input(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


LAYER_SPECS: dict[str, type[LayerBase]] = {
    cls.model_fields["type"].default: cls
    for cls in (Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, MaxPool2D, AvgPool2D,
                GlobalAvgPool2D, GlobalMaxPool2D, Dense, Dropout, DropPath, SpatialDropout2D,
                BatchNorm, LayerNorm, GroupNorm, Normalization, LayerScale, ActivationLayer,
                PReLU, Flatten, Reshape, UpSampling2D, ZeroPadding2D, Cropping2D, Rescaling,
                Resizing, Add, Multiply, Concatenate, Subtract, Average, Maximum, Minimum)
}


# The Keras class names (and Keras's aliases of them) of the layers each type builds, so that
# `type: MaxPooling2D` is answered with max_pool2d. Most spec classes carry a Keras name
# already (Conv2D, MaxPool2D, Dense, ...); tests/model/test_layers.py checks the map against Keras.
KERAS_LAYER_NAMES: dict[str, str] = {
    **{cls.__name__: tag for tag, cls in LAYER_SPECS.items() if cls is not ActivationLayer},
    "Convolution2D": "conv2d",
    "SeparableConvolution2D": "separable_conv2d",
    "Convolution2DTranspose": "conv2d_transpose",
    "MaxPooling2D": "max_pool2d",
    "AveragePooling2D": "avg_pool2d",
    "GlobalAveragePooling2D": "global_avg_pool2d",
    "GlobalMaxPooling2D": "global_max_pool2d",
    "BatchNormalization": "batch_norm",
    "LayerNormalization": "layer_norm",
    "GroupNormalization": "group_norm",
    "Activation": "activation",
    "LeakyReLU": "activation",
}


def _layer_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return "block" if "block" in value else value.get("type")
    return "block" if isinstance(value, BlockCall) else getattr(value, "type", None)


LayerSpec = Annotated[
    Union[tuple(Annotated[cls, Tag(tag)] for tag, cls in LAYER_SPECS.items())
          + (Annotated[BlockCall, Tag("block")],)],
    Discriminator(_layer_tag),
]
