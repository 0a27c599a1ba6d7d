"""`train.distribute`: the same config on several devices, through the engines Keras and
TensorFlow provide (tf.distribute on the TensorFlow backend, keras.distribution on JAX).

`train.batch_size` is the batch of one replica: a step takes batch_size x replicas images, and
`train.scale_lr_with_replicas` multiplies the learning rates by the number of replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses

from cnnctl.backend import keras
from cnnctl.errors import ConfigValueError

# Why `multi_worker` is refused, measured with Keras 3.15.1 and TensorFlow 2.21.0: a cluster of
# two workers forms, then `model.fit` under MultiWorkerMirroredStrategy fails in Keras's
# TensorFlow trainer (`strategy.reduce` of a per-replica input batch in `_maybe_symbolic_build`,
# then of the scalar step logs in `_reduce`); reported upstream as keras-team/keras#20585.
MULTI_WORKER_REFUSAL = (
    "multi_worker (tf.distribute.MultiWorkerMirroredStrategy) cannot train with Keras "
    "{keras}: model.fit fails on the per-replica values of that strategy (keras-team/keras"
    "#20585); use mirrored for the GPUs of one machine, or data_parallel on the jax backend")


@dataclasses.dataclass
class Plan:
    """How a run is spread: `replicas` copies of the model, built and compiled in `scope()`."""

    kind: str
    replicas: int
    devices: list[str]
    scope: contextlib.AbstractContextManager

    def effective(self, config):
        """The config as one replica sees it scaled up: the global batch size and, with
        train.scale_lr_with_replicas, the scaled learning rates. The run keeps the given one."""
        if self.replicas == 1:
            return config
        train = config.train.model_copy(update={"batch_size": config.train.batch_size * self.replicas})
        optimizer = config.optimizer
        if config.train.scale_lr_with_replicas:
            schedule = optimizer.schedule.model_copy(update={
                "min_learning_rate": optimizer.schedule.min_learning_rate * self.replicas})
            optimizer = optimizer.model_copy(update={
                "learning_rate": optimizer.learning_rate * self.replicas, "schedule": schedule})
        return config.model_copy(update={"train": train, "optimizer": optimizer})


def plan(train, optimizer_reference: int | None = None) -> Plan:
    """The devices and scope of `train.distribute`.

    Raises:
        ConfigValueError: the strategy does not exist on this backend (`train.distribute`).
    """
    backend = keras.backend.backend()
    kind = train.distribute
    if kind != "none" and train.scale_lr_with_replicas and optimizer_reference:
        raise ConfigValueError("train.scale_lr_with_replicas", "optimizer.reference_batch_size "
                               "already scales the learning rates by the global batch size "
                               "(batch_size x replicas); set only one of the two")
    if kind == "none":
        return Plan(kind, 1, [], contextlib.nullcontext())
    if kind == "multi_worker":
        raise ConfigValueError("train.distribute", MULTI_WORKER_REFUSAL.format(keras=keras.__version__))
    if kind == "mirrored":
        if backend != "tensorflow":
            raise ConfigValueError("train.distribute", f"mirrored is tf.distribute.MirroredStrategy "
                                   f"and needs the tensorflow backend (this is {backend}); use "
                                   "data_parallel on jax, or KERAS_BACKEND=tensorflow")
        import tensorflow as tf

        # every local GPU; without one, every logical CPU device (one, unless configured)
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
            [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Plan(kind, strategy.num_replicas_in_sync, devices, strategy.scope())
    if backend != "jax":
        raise ConfigValueError("train.distribute", f"data_parallel is keras.distribution.DataParallel "
                               f"and needs the jax backend (this is {backend}); use mirrored on "
                               "tensorflow, or KERAS_BACKEND=jax")
    devices = keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    return Plan(kind, len(devices), [str(d) for d in devices], distribution.scope())
