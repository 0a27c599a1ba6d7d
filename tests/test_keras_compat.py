"""cnnctl.keras_compat: each use of Keras internals still does what cnnctl relies on. A failure
here after a Keras upgrade names the workaround to revisit (see its docstring)."""

import inspect
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnctl import keras_compat
from cnnctl.backend import keras

ROOT = Path(__file__).resolve().parents[1]


def small_model(*layers):
    model = keras.Sequential([keras.Input((4,)), *layers, keras.layers.Dense(2)])
    return model


def test_the_keras_cap_in_pyproject_is_the_version_these_were_tested_with():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        pytest.skip("tomllib needs Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    keras_pin, = [d for d in project["dependencies"] if re.match(r"keras\b", d)]
    cap = re.search(r"<\s*([\d.]+)", keras_pin)
    assert cap, f"pyproject.toml pins {keras_pin!r} with no upper bound"
    major, minor = (int(p) for p in keras_compat.TESTED_WITH.split("."))
    assert cap[1] == f"{major}.{minor + 1}", (
        f"pyproject.toml caps Keras at <{cap[1]} but keras_compat.TESTED_WITH is "
        f"{keras_compat.TESTED_WITH}: raise both together, after these tests pass")
    installed = tuple(int(p) for p in keras.__version__.split(".")[:2])
    assert installed <= (major, minor), f"Keras {keras.__version__} is above the cap"


def test_uncompiled_saves_no_optimizer_and_restores_the_model(tmp_path):
    model = small_model()
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0)
    optimizer = model.optimizer
    with keras_compat.uncompiled(model):
        model.save(tmp_path / "plain.keras")
    assert model.optimizer is optimizer and model.compiled
    model.save(tmp_path / "full.keras")
    plain = keras.saving.load_model(tmp_path / "plain.keras")
    full = keras.saving.load_model(tmp_path / "full.keras")
    assert not plain.compiled and getattr(plain, "optimizer", None) is None
    assert full.compiled  # Keras still saves the optimizer otherwise: the workaround is needed
    assert (tmp_path / "plain.keras").stat().st_size < (tmp_path / "full.keras").stat().st_size


def test_seed_variables_are_the_generators_state_and_a_load_still_resets_them(tmp_path):
    model = small_model(keras.layers.Dropout(0.5, seed=1), keras.layers.GaussianNoise(0.1, seed=2))
    found = keras_compat.seed_variables(model)
    assert len(found) == 2
    assert all(v.path.endswith(keras_compat.SEED_STATE) for v in found)
    model(np.ones((2, 4)), training=True)  # draws: the states move on
    moved = [keras.ops.convert_to_numpy(v).tolist() for v in found]
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    again = [keras.ops.convert_to_numpy(v).tolist() for v in keras_compat.seed_variables(loaded)]
    # keras-team/keras#19796: if this starts to fail, Keras saves the states itself and the
    # backups' seed_states can go
    assert again != moved


def test_ema_weights_swaps_in_the_average_and_back():
    model = small_model()
    model.compile(optimizer=keras.optimizers.SGD(0.5, use_ema=True, ema_momentum=0.5), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 2))
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)  # ends with the average in the model
    for _ in range(3):
        model.train_on_batch(x[:4], y[:4])  # raw weights move away from it
    swap = keras.callbacks.SwapEMAWeights()
    swap.set_model(model)
    raw = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    with keras_compat.ema_weights(swap):
        average = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        assert swap._ema_weights_in_model
    after = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert not swap._ema_weights_in_model
    assert any(not np.allclose(a, r) for a, r in zip(average, raw))
    for a, r in zip(after, raw):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)


def test_the_tensorflow_trainer_still_has_what_the_multi_worker_fix_patches():
    pytest.importorskip("tensorflow")
    from keras.src.backend.tensorflow import trainer

    assert callable(trainer._collective_all_reduce_multi_worker)
    assert list(inspect.signature(trainer.reduce_per_replica).parameters) == [
        "values", "strategy", "reduction"]
    assert list(inspect.signature(trainer.TensorFlowTrainer._maybe_symbolic_build).parameters) == [
        "self", "iterator", "data_batch"]
