"""The layer registry: YAML layer type -> function that builds the Keras layer from its spec."""

from __future__ import annotations

from collections.abc import Callable

from cnnctl.backend import keras

from cnnctl.config import layer_specs as s
from cnnctl.model import extra_layers


def _regularizer(l2: float):
    return keras.regularizers.L2(l2) if l2 else None


def _initializer(spec: s.Initializer):
    """A Keras initializer: a name as it is, or a name with arguments as the Keras object."""
    if isinstance(spec, str):
        return spec
    # variance_scaling -> keras.initializers.VarianceScaling
    cls = getattr(keras.initializers, "".join(w.title() for w in spec.name.split("_")))
    return cls(**spec.arguments())


def _activation(name: str | None):
    # Keras spells it "linear"; YAML may also leave it out.
    return None if name in (None, "linear") else name


def conv2d(spec: s.Conv2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.Conv2D(
        filters=spec.filters, kernel_size=spec.kernel_size, strides=spec.strides,
        padding=spec.padding, dilation_rate=spec.dilation_rate, groups=spec.groups,
        activation=_activation(spec.activation), use_bias=spec.use_bias,
        kernel_initializer=_initializer(spec.initializer),
        bias_initializer=_initializer(spec.bias_initializer),
        kernel_regularizer=_regularizer(spec.l2), name=name)


def depthwise_conv2d(spec: s.DepthwiseConv2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.DepthwiseConv2D(
        kernel_size=spec.kernel_size, strides=spec.strides, padding=spec.padding,
        depth_multiplier=spec.depth_multiplier, dilation_rate=spec.dilation_rate,
        activation=_activation(spec.activation), use_bias=spec.use_bias,
        depthwise_initializer=_initializer(spec.initializer),
        bias_initializer=_initializer(spec.bias_initializer),
        depthwise_regularizer=_regularizer(spec.l2), name=name)


def separable_conv2d(spec: s.SeparableConv2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.SeparableConv2D(
        filters=spec.filters, kernel_size=spec.kernel_size, strides=spec.strides,
        padding=spec.padding, depth_multiplier=spec.depth_multiplier,
        dilation_rate=spec.dilation_rate, activation=_activation(spec.activation),
        use_bias=spec.use_bias, depthwise_initializer=_initializer(spec.initializer),
        bias_initializer=_initializer(spec.bias_initializer),
        pointwise_initializer=_initializer(spec.initializer), depthwise_regularizer=_regularizer(spec.l2),
        pointwise_regularizer=_regularizer(spec.l2), name=name)


def conv2d_transpose(spec: s.Conv2DTranspose, name: str | None) -> keras.layers.Layer:
    return keras.layers.Conv2DTranspose(
        filters=spec.filters, kernel_size=spec.kernel_size, strides=spec.strides,
        padding=spec.padding, dilation_rate=spec.dilation_rate,
        activation=_activation(spec.activation), use_bias=spec.use_bias,
        kernel_initializer=_initializer(spec.initializer),
        bias_initializer=_initializer(spec.bias_initializer),
        kernel_regularizer=_regularizer(spec.l2), name=name)


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
                              use_bias=spec.use_bias,
                              kernel_initializer=_initializer(spec.initializer),
                              bias_initializer=_initializer(spec.bias_initializer),
                              kernel_regularizer=_regularizer(spec.l2), name=name)


def dropout(spec: s.Dropout, name: str | None) -> keras.layers.Layer:
    noise_shape = None if spec.noise_shape is None else tuple(spec.noise_shape)
    return keras.layers.Dropout(rate=spec.rate, noise_shape=noise_shape, name=name)


def drop_path(spec: s.DropPath, name: str | None) -> keras.layers.Layer:
    return extra_layers.DropPath(spec.rate, name=name)


def spatial_dropout2d(spec: s.SpatialDropout2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.SpatialDropout2D(rate=spec.rate, name=name)


def batch_norm(spec: s.BatchNorm, name: str | None) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(axis=spec.axis, momentum=spec.momentum,
                                           epsilon=spec.epsilon, center=spec.center,
                                           scale=spec.scale, name=name)


def layer_norm(spec: s.LayerNorm, name: str | None) -> keras.layers.Layer:
    return keras.layers.LayerNormalization(axis=spec.axis, epsilon=spec.epsilon, name=name)


def group_norm(spec: s.GroupNorm, name: str | None) -> keras.layers.Layer:
    return keras.layers.GroupNormalization(groups=spec.groups, axis=spec.axis,
                                           epsilon=spec.epsilon, center=spec.center,
                                           scale=spec.scale, name=name)


def normalization(spec: s.Normalization, name: str | None) -> keras.layers.Layer:
    return keras.layers.Normalization(axis=spec.axis, mean=spec.mean, variance=spec.variance,
                                      invert=spec.invert, name=name)


def layer_scale(spec: s.LayerScale, name: str | None) -> keras.layers.Layer:
    return extra_layers.LayerScale(spec.init_value, name=name)


def activation(spec: s.ActivationLayer, name: str | None) -> keras.layers.Layer:
    if spec.activation == "leaky_relu":
        slope = 0.3 if spec.negative_slope is None else spec.negative_slope
        return keras.layers.LeakyReLU(negative_slope=slope, name=name)
    return keras.layers.Activation(spec.activation, name=name)


def prelu(spec: s.PReLU, name: str | None) -> keras.layers.Layer:
    return keras.layers.PReLU(alpha_initializer=_initializer(spec.alpha_initializer),
                              shared_axes=spec.shared_axes, name=name)


def flatten(spec: s.Flatten, name: str | None) -> keras.layers.Layer:
    return keras.layers.Flatten(name=name)


def reshape(spec: s.Reshape, name: str | None) -> keras.layers.Layer:
    return keras.layers.Reshape(tuple(spec.target_shape), name=name)


def upsampling2d(spec: s.UpSampling2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.UpSampling2D(size=spec.size, interpolation=spec.interpolation, name=name)


def zero_padding2d(spec: s.ZeroPadding2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.ZeroPadding2D(padding=spec.padding, name=name)


def cropping2d(spec: s.Cropping2D, name: str | None) -> keras.layers.Layer:
    return keras.layers.Cropping2D(cropping=spec.cropping, name=name)


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


def subtract(spec: s.Subtract, name: str | None) -> keras.layers.Layer:
    return keras.layers.Subtract(name=name)


def average(spec: s.Average, name: str | None) -> keras.layers.Layer:
    return keras.layers.Average(name=name)


def maximum(spec: s.Maximum, name: str | None) -> keras.layers.Layer:
    return keras.layers.Maximum(name=name)


def minimum(spec: s.Minimum, name: str | None) -> keras.layers.Layer:
    return keras.layers.Minimum(name=name)


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
    "drop_path": drop_path,
    "spatial_dropout2d": spatial_dropout2d,
    "batch_norm": batch_norm,
    "layer_norm": layer_norm,
    "group_norm": group_norm,
    "normalization": normalization,
    "layer_scale": layer_scale,
    "activation": activation,
    "prelu": prelu,
    "flatten": flatten,
    "reshape": reshape,
    "upsampling2d": upsampling2d,
    "zero_padding2d": zero_padding2d,
    "cropping2d": cropping2d,
    "rescaling": rescaling,
    "resizing": resizing,
    "add": add,
    "multiply": multiply,
    "concatenate": concatenate,
    "subtract": subtract,
    "average": average,
    "maximum": maximum,
    "minimum": minimum,
}
