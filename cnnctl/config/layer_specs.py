"""The schema of one layer in `model.layers`: a discriminated union on `type`."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field,
                      NonNegativeFloat, NonNegativeInt, PositiveInt, Tag, WithJsonSchema, field_validator,
                      model_validator)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

Activation = Literal["linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "swish",
                     "silu", "hard_swish", "sigmoid", "hard_sigmoid", "tanh", "softmax",
                     "softplus"]
Initializer = Literal["glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
                      "lecun_uniform", "lecun_normal", "truncated_normal", "random_normal",
                      "zeros", "ones"]
Padding = Literal["valid", "same"]


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


class LayerBase(Strict):
    """Fields every layer has: its name, the layers it reads, and how often it repeats."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = Field(
        None, description="Layer name; other layers refer to it in `inputs`.")
    inputs: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = Field(
        None, description="Names of earlier layers (or `input`) this layer reads; "
        "default: the layer before it. Naming inputs makes the model a functional graph.")
    repeat: PositiveInt = Field(1, description="Stack this layer N times.")

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
    initializer: Initializer = "glorot_uniform"
    l2: NonNegativeFloat = Field(0.0, description="L2 regularization factor of the kernel.")


class Conv2D(ConvOptions):
    type: Literal["conv2d"] = "conv2d"
    filters: PositiveInt


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
    l2: NonNegativeFloat = 0.0


class Dropout(LayerBase):
    type: Literal["dropout"] = "dropout"
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


class LayerNorm(LayerBase):
    type: Literal["layer_norm"] = "layer_norm"
    epsilon: float = Field(1e-3, gt=0.0)
    axis: int = -1


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


class Flatten(LayerBase):
    type: Literal["flatten"] = "flatten"


class Reshape(LayerBase):
    type: Literal["reshape"] = "reshape"
    target_shape: list[int] = Field(min_length=1, description="Shape without the batch axis; one entry may be -1.")


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


class Rescaling(LayerBase):
    type: Literal["rescaling"] = "rescaling"
    scale: float
    offset: float = 0.0


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


class BlockCall(BaseModel):
    """Use of a block template from `model.blocks`; other keys are the template's parameters."""

    model_config = ConfigDict(extra="allow", strict=True)
    block: str = Field(description="Name of a template in `model.blocks`.")
    name: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    inputs: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = None
    repeat: PositiveInt = 1

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_input(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


LAYER_SPECS: dict[str, type[LayerBase]] = {
    cls.model_fields["type"].default: cls
    for cls in (Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, MaxPool2D, AvgPool2D,
                GlobalAvgPool2D, GlobalMaxPool2D, Dense, Dropout, SpatialDropout2D, BatchNorm,
                LayerNorm, ActivationLayer, Flatten, Reshape, UpSampling2D, ZeroPadding2D,
                Rescaling, Resizing, Add, Multiply, Concatenate)
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
