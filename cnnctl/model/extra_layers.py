"""The layers cnnctl adds to Keras's own (layer scale, stochastic depth), registered so that a
saved model reloads with them."""

from __future__ import annotations

from cnnctl.backend import keras


@keras.saving.register_keras_serializable(package="cnnctl")
class LayerScale(keras.layers.Layer):
    """Multiply each channel (the last axis) by a learned factor that starts at `init_value`
    (ConvNeXt's layer scale: a residual branch starts near zero)."""

    def __init__(self, init_value: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_value = init_value

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma", shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value), trainable=True)

    def call(self, inputs):
        return inputs * keras.ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@keras.saving.register_keras_serializable(package="cnnctl")
class DropPath(keras.layers.Layer):
    """Stochastic depth: in training, each sample's input is dropped whole with probability
    `rate` and the kept ones are scaled by 1 / (1 - rate); at inference it is the identity."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        keep = 1.0 - self.rate
        shape = (keras.ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        mask = keras.ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator,
                                                           dtype=inputs.dtype))
        return inputs / keep * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
