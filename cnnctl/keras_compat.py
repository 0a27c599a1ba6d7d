"""Every use of Keras internals in cnnctl, each with the upstream issue it works around.

Keras's public API has no way to do these things; each function below does one of them
through a private member or convention of Keras 3.15 (the version they were measured on), and
`tests/test_keras_compat.py` fails the day Keras changes what they rely on. pyproject.toml
caps Keras below the next minor release, and CI checks that the cap and TESTED_WITH agree, so
an upgrade is a decision: run the tests on it, then raise both.
"""

from __future__ import annotations

import contextlib
import os

from cnnctl.backend import keras

TESTED_WITH = "3.15"  # the Keras minor version these were measured on (pyproject.toml: <3.16)
SEED_STATE = "seed_generator_state"  # the path of a SeedGenerator's variable (Keras 3.15)


def keras_home() -> str:
    """The folder `keras.utils.get_file` (and so keras.datasets) uses: $KERAS_HOME as Keras read
    it when imported, else ~/.keras. Keras exposes no public getter for it
    (keras/src/backend/config.py `keras_home`); without that function, the same rule."""
    try:
        from keras.src.backend.config import keras_home as home
    except ImportError:
        return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return home()


@contextlib.contextmanager
def uncompiled(model: keras.Model):
    """`model` looks uncompiled while saving, so the .keras file holds no optimizer state and no
    compile config (`keras.saving.load_model` gives back an uncompiled model).

    Keras 3 has no option for it: `include_optimizer` is read for legacy .h5 files only
    (keras/src/saving/saving_api.py) and a .keras file saves whatever `model.optimizer` holds
    (tensorflow/tensorflow#84268, "keras model.save does not respect include_optimizer=False").
    """
    optimizer, compiled = model.optimizer, model.compiled
    model.optimizer, model.compiled = None, False
    try:
        yield
    finally:
        model.optimizer, model.compiled = optimizer, compiled


def seed_variables(model: keras.Model) -> list:
    """The state variables of the model's random generators (dropout, augmentation).

    A saved model gives them back reset (keras-team/keras#19796, "Dropout variables are
    inconsistent across save/load"), so a resumed run would draw other dropout masks and
    augmentations than the uninterrupted one; backups store them beside the model. They are
    found by their path, which Keras names `.../seed_generator_state`.
    """
    return [v for v in model.variables if SEED_STATE in v.path]


@contextlib.contextmanager
def drawing_from(layer: "keras.layers.Layer", seed_generator: "keras.random.SeedGenerator"):
    """A Keras image preprocessing layer draws its random transformation from `seed_generator`
    inside the block, not from its own generator.

    Keras has no public way to give a layer a seed per call: `get_random_transformation(seed=)`
    is ignored by RandAugment and RandomColorJitter, and `__call__` takes none (no upstream
    issue asks for one). Every image layer of Keras 3.15 asks its private
    `_get_seed_generator(backend)` for the generator (keras/src/layers/preprocessing/
    data_layer.py), which this shadows on the instance; `tests/model/test_strong_augmentation.py`
    checks that the layers cnnctl seeds this way still obey it.
    """
    object.__setattr__(layer, "_get_seed_generator", lambda backend=None: seed_generator)
    try:
        yield
    finally:
        object.__delattr__(layer, "_get_seed_generator")


@contextlib.contextmanager
def ema_weights(callback: "keras.callbacks.SwapEMAWeights"):
    """The model holds the optimizer's moving average of its weights inside the block, its own
    weights again after it.

    `SwapEMAWeights` swaps only around evaluation (or epochs, with swap_on_epoch) and has no
    public method to swap at another moment, such as around writing a checkpoint; this drives
    its private `_swap_variables` and `_ema_weights_in_model` (Keras 3.15,
    keras/src/callbacks/swap_ema_weights.py). No upstream issue asks for a public one.
    """
    callback._swap_variables()
    callback._ema_weights_in_model = True
    try:
        yield
    finally:
        callback._swap_variables()
        callback._ema_weights_in_model = False


def fix_multi_worker_trainer() -> None:
    """Two places where Keras's TensorFlow trainer mishandles MultiWorkerMirroredStrategy
    (keras-team/keras#20585, open; measured with Keras 3.15.1 and TensorFlow 2.21), mended
    where they are, for that strategy only (other strategies go through the original code):

    - before the first step `fit` builds the model's metrics on one input batch, which it gets
      by `strategy.reduce("MEAN", batch)`: a collective op on a per-replica value outside a
      tf.function, which this strategy refuses. The first local replica's batch has the shapes
      and dtypes wanted.
    - every step's logs are reduced with `strategy.reduce("MEAN", value, axis=0)`: axis 0 of a
      scalar. They are averaged over the replicas of all workers (axis=None) instead.

    Patches keras.src.backend.tensorflow.trainer's `reduce_per_replica` and
    `TensorFlowTrainer._maybe_symbolic_build`, once per process.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_cnnctl_multi_worker", False):
        return
    import tensorflow as tf

    multi_worker = trainer._collective_all_reduce_multi_worker
    reduce_per_replica = trainer.reduce_per_replica
    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def build(self, iterator=None, data_batch=None):
        if iterator is not None and multi_worker(self.distribute_strategy):
            local = self.distribute_strategy.experimental_local_results
            for _, _, it in iterator:
                data_batch = tree.map_structure(
                    lambda x: local(x)[0] if isinstance(x, tf.distribute.DistributedValues) else x,
                    next(it))
                break
            iterator = None
        return symbolic_build(self, iterator=iterator, data_batch=data_batch)

    trainer.reduce_per_replica = reduce
    trainer.TensorFlowTrainer._maybe_symbolic_build = build
    trainer._cnnctl_multi_worker = True
