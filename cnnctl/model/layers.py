"""The layer registry: YAML layer type -> function that builds the Keras layer from its spec."""

from __future__ import annotations

from collections.abc import Callable

from cnnctl.backend import keras

from cnnctl.config import layer_specs as s


def _regularizer(l2: float):
    return keras.regularizers.L2(l2) if l2 else None


def _activation(name: str | None):
    # Keras spells it "linear"; YAML may also leave it out.
    return None if name in (None, "linear") else name


def conv2d(spec: s.Conv2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.Conv2D(
        filters=spec.filters, kernel_size=spec.kernel_size, strides=spec.strides,
        padding=spec.padding, dilation_rate=spec.dilation_rate,
        activation=_activation(spec.activation), use_bias=spec.use_bias,
        kernel_initializer=spec.initializer, kernel_regularizer=_regularizer(spec.l2), name=name)


def depthwise_conv2d(spec: s.DepthwiseConv2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.DepthwiseConv2D(
        kernel_size=spec.kernel_size, strides=spec.strides, padding=spec.padding,
        depth_multiplier=spec.depth_multiplier, dilation_rate=spec.dilation_rate,
        activation=_activation(spec.activation), use_bias=spec.use_bias,
        depthwise_initializer=spec.initializer,
        depthwise_regularizer=_regularizer(spec.l2), name=name)


def separable_conv2d(spec: s.SeparableConv2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.SeparableConv2D(
        filters=spec.filters, kernel_size=spec.kernel_size, strides=spec.strides,
        padding=spec.padding, depth_multiplier=spec.depth_multiplier,
        dilation_rate=spec.dilation_rate, activation=_activation(spec.activation),
        use_bias=spec.use_bias, depthwise_initializer=spec.initializer,
        pointwise_initializer=spec.initializer, depthwise_regularizer=_regularizer(spec.l2),
        pointwise_regularizer=_regularizer(spec.l2), name=name)


def conv2d_transpose(spec: s.Conv2DTranspose, name: str | None) -> keras.layers.Layer:
    return keras.layers.Conv2DTranspose(
        filters=spec.filters, kernel_size=spec.kernel_size, strides=spec.strides,
        padding=spec.padding, dilation_rate=spec.dilation_rate,
        activation=_activation(spec.activation), use_bias=spec.use_bias,
        kernel_initializer=spec.initializer, kernel_regularizer=_regularizer(spec.l2), name=name)


def max_pool2d(spec: s.MaxPool2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.MaxPooling2D(pool_size=spec.pool_size, strides=spec.strides,
                                     padding=spec.padding, name=name)


def avg_pool2d(spec: s.AvgPool2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.AveragePooling2D(pool_size=spec.pool_size, strides=spec.strides,
                                         padding=spec.padding, name=name)


def global_avg_pool2d(spec: s.GlobalAvgPool2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.GlobalAveragePooling2D(keepdims=spec.keepdims, name=name)


def global_max_pool2d(spec: s.GlobalMaxPool2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.GlobalMaxPooling2D(keepdims=spec.keepdims, name=name)


def dense(spec: s.Dense, name: str | None) -> keras.layers.Layer:
    return keras.layers.Dense(units=spec.units, activation=_activation(spec.activation),
                              use_bias=spec.use_bias, kernel_initializer=spec.initializer,
                              kernel_regularizer=_regularizer(spec.l2), name=name)


def dropout(spec: s.Dropout, name: str | None) -> keras.layers.Layer:
    return keras.layers.Dropout(rate=spec.rate, name=name)


def spatial_dropout2d(spec: s.SpatialDropout2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.SpatialDropout2D(rate=spec.rate, name=name)


def batch_norm(spec: s.BatchNorm, name: str | None) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(momentum=spec.momentum, epsilon=spec.epsilon,
                                           center=spec.center, scale=spec.scale, name=name)


def layer_norm(spec: s.LayerNorm, name: str | None) -> keras.layers.Layer:
    return keras.layers.LayerNormalization(axis=spec.axis, epsilon=spec.epsilon, name=name)


def activation(spec: s.ActivationLayer, name: str | None) -> keras.layers.Layer:
    if spec.activation == "leaky_relu":
        slope = 0.3 if spec.negative_slope is None else spec.negative_slope
        return keras.layers.LeakyReLU(negative_slope=slope, name=name)
    return keras.layers.Activation(spec.activation, name=name)


def flatten(spec: s.Flatten, name: str | None) -> keras.layers.Layer:
    return keras.layers.Flatten(name=name)


def reshape(spec: s.Reshape, name: str | None) -> keras.layers.Layer:
    return keras.layers.Reshape(tuple(spec.target_shape), name=name)


def upsampling2d(spec: s.UpSampling2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.UpSampling2D(size=spec.size, interpolation=spec.interpolation, name=name)


def zero_padding2d(spec: s.ZeroPadding2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.ZeroPadding2D(padding=spec.padding, name=name)


def rescaling(spec: s.Rescaling, name: str | None) -> keras.layers.Layer:
    return keras.layers.Rescaling(scale=spec.scale, offset=spec.offset, name=name)


def resizing(spec: s.Resizing, name: str | None) -> keras.layers.Layer:
    return keras.layers.Resizing(spec.height, spec.width, interpolation=spec.interpolation,
                                 crop_to_aspect_ratio=spec.crop_to_aspect_ratio, name=name)


def add(spec: s.Add, name: str | None) -> keras.layers.Layer:
    return keras.layers.Add(name=name)


def multiply(spec: s.Multiply, name: str | None) -> keras.layers.Layer:
    return keras.layers.Multiply(name=name)


def concatenate(spec: s.Concatenate, name: str | None) -> keras.layers.Layer:
    return keras.layers.Concatenate(axis=spec.axis, name=name)


LAYERS: dict[str, Callable[..., keras.layers.Layer]] = {
    "conv2d": conv2d,
    "depthwise_conv2d": depthwise_conv2d,
    "separable_conv2d": separable_conv2d,
    "conv2d_transpose": conv2d_transpose,
    "max_pool2d": max_pool2d,
    "avg_pool2d": avg_pool2d,
    "global_avg_pool2d": global_avg_pool2d,
    "global_max_pool2d": global_max_pool2d,
    "dense": dense,
    "dropout": dropout,
    "spatial_dropout2d": spatial_dropout2d,
    "batch_norm": batch_norm,
    "layer_norm": layer_norm,
    "activation": activation,
    "flatten": flatten,
    "reshape": reshape,
    "upsampling2d": upsampling2d,
    "zero_padding2d": zero_padding2d,
    "rescaling": rescaling,
    "resizing": resizing,
    "add": add,
    "multiply": multiply,
    "concatenate": concatenate,
}
