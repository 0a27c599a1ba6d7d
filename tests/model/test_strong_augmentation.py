"""cnnctl.model.strong_augment: Keras 3's RandAugment, AugMix, MixUp, CutMix, RandomErasing,
RandomGrayscale and RandomColorJitter from the config, their options mapped, the labels mixed by
mix_up and cut_mix (one-hot, into a categorical loss), their draws a function of the step in the
pipeline (so a resumed run draws what it would have), on TensorFlow, JAX and PyTorch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnnctl import keras_compat
from cnnctl.backend import keras
from cnnctl.config import load as config_lib
from cnnctl.config.schema import AugmentationConfig
from cnnctl.data import arrays, sources
from cnnctl.model import inputs, strong_augment
from cnnctl.train import fit, optim

ROOT = Path(__file__).resolve().parents[2]

# every new type with every one of its keys
FULL = {
    "rand_augment": {"num_ops": 3, "factor": 0.4, "interpolation": "nearest"},
    "aug_mix": {"num_chains": 2, "chain_depth": 2, "factor": 0.2, "alpha": 0.5, "all_ops": False,
                "interpolation": "nearest"},
    "mix_up": {"alpha": 0.4},
    "cut_mix": {"factor": [0.2, 0.8]},
    "random_erasing": {"factor": 0.5, "scale": [0.1, 0.2], "fill_value": 0.0},
    "random_grayscale": {"factor": 0.3},
    "random_color_jitter": {"brightness_factor": 0.2, "contrast_factor": 0.3,
                            "saturation_factor": [0.3, 0.7], "hue_factor": 0.1},
}
# what each becomes in Keras: class and the config values the keys set
KERAS = {
    "rand_augment": ("RandAugment", {"num_ops": 3, "factor": (0, 0.4), "interpolation": "nearest",
                                     "value_range": (0, 255)}),
    "aug_mix": ("AugMix", {"num_chains": 2, "chain_depth": 2, "factor": (0, 0.2), "alpha": 0.5,
                           "all_ops": False, "interpolation": "nearest", "value_range": (0, 255)}),
    "mix_up": ("MixUp", {"alpha": 0.4}),
    "cut_mix": ("CutMix", {"factor": (0.2, 0.8)}),
    "random_erasing": ("RandomErasing", {"factor": (0, 0.5), "scale": (0.1, 0.2), "fill_value": 0.0,
                                         "value_range": (0, 255)}),
    "random_grayscale": ("RandomGrayscale", {"factor": 0.3}),
    "random_color_jitter": ("RandomColorJitter", {
        "brightness_factor": 0.2, "contrast_factor": 0.3, "saturation_factor": (0.3, 0.7),
        "hue_factor": 0.1, "value_range": (0, 255)}),
}
IMAGE_ONLY = ["rand_augment", "aug_mix", "random_erasing", "random_grayscale", "random_color_jitter"]
MIXING = ["mix_up", "cut_mix"]


def layers_of(*items, placement="pipeline", seed=3) -> list:
    config = AugmentationConfig.model_validate({"placement": placement, "layers": list(items)})
    return inputs.augmentation_layers(config, seed=seed)


def batch(n=8, size=16, channels=3, classes=4):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, size, size, channels)).astype(np.float32)
    return x, np.eye(classes, dtype=np.float32)[np.arange(n) % classes]


def numpy(t) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t))


# --------------------------------------------------------------------------- the layers
def test_the_builders_are_the_schema_types():
    from cnnctl.config.schema import AUGMENT_SPECS, LABEL_MIXING

    assert set(strong_augment.BUILDERS) == set(FULL) <= set(AUGMENT_SPECS)
    assert LABEL_MIXING == set(MIXING)


@pytest.mark.parametrize("tag", list(FULL))
def test_each_key_reaches_its_keras_argument(tag):
    layer, = layers_of({"type": tag, **FULL[tag]}, seed=11)
    name, expected = KERAS[tag]
    assert type(layer) is getattr(keras.layers, name)
    config = layer.get_config()
    assert layer.seed == 11
    for key, value in expected.items():
        got = tuple(config[key]) if isinstance(config[key], list) else config[key]
        assert got == value, (key, config[key])


def test_keys_left_out_keep_the_keras_defaults():
    layer, = layers_of({"type": "rand_augment"})
    default = keras.layers.RandAugment()
    assert (layer.num_ops, layer.factor, layer.interpolation) == (
        default.num_ops, default.factor, default.interpolation) == (2, (0, 0.5), "bilinear")
    assert layers_of({"type": "mix_up"})[0].alpha == 0.2


@pytest.mark.parametrize("tag", IMAGE_ONLY)
def test_image_layers_change_training_images_only_and_keep_0_255(tag):
    layer, = layers_of({"type": tag, **FULL[tag]}, placement="model")
    x, _ = batch()
    assert np.array_equal(numpy(layer(x, training=False)), x)
    out, _ = strong_augment.augment_batch([layer], x, None, step=4)
    out = numpy(out)
    assert out.shape == x.shape and not np.array_equal(out, x)
    assert out.min() >= 0 and out.max() <= 255


def test_mix_up_blends_images_and_labels_by_the_same_weight():
    """Each image is constant c_k (class k): a mixed image's value is the label-weighted mean of
    the class values, so the label weights say exactly how much of each image it holds."""
    classes = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    values = np.array([10.0, 60.0, 130.0, 250.0])
    x = np.broadcast_to(values[classes][:, None, None, None], (8, 6, 6, 3)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[classes]
    mixed_x, mixed_y = (numpy(t) for t in strong_augment.augment_batch(
        layers_of({"type": "mix_up", "alpha": 1.0}), x, y, step=0))
    np.testing.assert_allclose(mixed_y.sum(1), 1.0, rtol=1e-6)
    assert (mixed_y.max(1) < 0.999).sum() >= 4  # soft labels, not one-hot
    np.testing.assert_allclose(mixed_x[:, 0, 0, 0], mixed_y @ values, rtol=1e-4)
    assert np.ptp(mixed_x, axis=(1, 2, 3)).max() < 1e-3  # a blend of constants stays constant


def test_cut_mix_labels_are_the_pasted_area():
    """Keras weighs the labels by the drawn box, before it is clipped at the image border: the
    pasted share is that weight (to a pixel row), or less where the box was clipped."""
    classes = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    values = np.array([10.0, 60.0, 130.0, 250.0])
    x = np.broadcast_to(values[classes][:, None, None, None], (8, 16, 16, 3)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[classes]
    mixed_x, mixed_y = (numpy(t) for t in strong_augment.augment_batch(
        layers_of({"type": "cut_mix"}), x, y, step=0))
    np.testing.assert_allclose(mixed_y.sum(1), 1.0, rtol=1e-5)
    exact = 0
    for own, image, label in zip(classes, mixed_x[..., 0], mixed_y):
        share = np.array([(np.abs(image - v) < 1e-3).mean() for v in values])
        assert share.sum() == 1.0 and np.all(share[label == 0] == 0)  # only the two images
        pasted = np.arange(4) != own
        # rounding the box to pixels moves it by up to a row and a column; clipping shrinks it
        assert np.all(share[pasted] <= label[pasted] + 2 / 16)
        exact += bool(np.allclose(share, label, atol=2 / 16))
    assert exact >= 4
    assert (mixed_y.max(1) < 0.999).any()


# --------------------------------------------------------------------------- draws of the step
@pytest.mark.parametrize("tag", list(FULL))
def test_pipeline_draws_depend_on_the_step_only(tag):
    layer, = layers_of({"type": tag, **FULL[tag]})
    x, y = batch()
    state = numpy(layer.generator.state).copy()
    a = [numpy(t) for t in strong_augment.augment_batch([layer], x, y, step=7)]
    b = [numpy(t) for t in strong_augment.augment_batch([layer], x, y, step=7)]
    c = [numpy(t) for t in strong_augment.augment_batch([layer], x, y, step=8)]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    # the layer's own generator was not drawn from (keras_compat.drawing_from still works)
    np.testing.assert_array_equal(numpy(layer.generator.state), state)


def test_drawing_from_is_undone_after_the_block():
    layer = keras.layers.MixUp(seed=1)
    own = layer._get_seed_generator()
    with keras_compat.drawing_from(layer, strong_augment.StepSeed(lambda k: None)) :
        assert isinstance(layer._get_seed_generator(), strong_augment.StepSeed)
    assert layer._get_seed_generator() is own


def test_tf_data_stream_resumed_at_any_step_gives_the_same_batches(tmp_path, colour_npz):
    """The tf.data train stream with rand_augment, mix_up and cut_mix: the stream rebuilt at
    (epoch 1, step 2) gives batch for batch what the stream from the start gave there."""
    from cnnctl.data import images, tfdata

    data = np.load(colour_npz(tmp_path / "c.npz", 40, 3))
    part = sources.Part(data["y_train"].astype(np.int64), images=data["x_train"])
    augment = layers_of({"type": "rand_augment"}, {"type": "mix_up"}, {"type": "cut_mix"})
    train = type("Train", (), {"batch_size": 8, "seed": 5})()
    spec = images.image_spec((16, 16, 3), None, "rgb")
    train_from = tfdata.train_stream(part, spec, 3, "categorical", train, augment)
    straight = list(train_from(0, 0).take(12).as_numpy_iterator())  # 5 steps an epoch
    resumed = list(train_from(1, 2).take(5).as_numpy_iterator())
    for (x, y), (rx, ry) in zip(straight[7:12], resumed):
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)
    assert (straight[7][1].max(1) < 0.999).any()  # the labels were mixed
    assert not np.array_equal(straight[0][0], straight[5][0])  # epochs draw anew


def test_in_memory_stream_resumed_at_any_step_gives_the_same_batches():
    """The NumPy batches of the JAX / PyTorch backends (`arrays.Stream`), likewise."""
    rng = np.random.default_rng(1)
    part = sources.Part(np.arange(40) % 3, images=rng.integers(0, 255, (40, 16, 16, 3), np.uint8))
    augment = layers_of({"type": "rand_augment"}, {"type": "aug_mix"}, {"type": "mix_up"},
                        {"type": "cut_mix"})
    train = type("Train", (), {"batch_size": 8, "seed": 5})()
    train_from = arrays.train_stream(part, 3, "categorical", train, augment)
    straight = train_from(0, 0)
    resumed = train_from(1, 2)
    for k in range(5):
        for a, b in zip(straight[7 + k], resumed[k]):
            np.testing.assert_array_equal(a, b)
    assert isinstance(straight[0][1], np.ndarray) and (straight[7][1].max(1) < 0.999).any()


# --------------------------------------------------------------------------- config errors
def test_label_mixing_in_the_model_is_an_error_at_placement(config_errors):
    text = ("model: {input_shape: [16, 16, 3], layers: [{type: flatten}, {type: dense, units: 3}]}\n"
            "augmentation:\n  placement: model\n  layers:\n    - {type: random_erasing}\n"
            "    - {type: cut_mix}\n")
    assert config_errors(text) == [
        "3: augmentation.placement: cut_mix (layers[1]) mixes the labels of a batch, which layers "
        "in the model never see; set augmentation.placement: pipeline (all augmentation then "
        "runs on the training batches, before the model)"]


def test_colour_jitter_needs_a_factor(config_errors):
    text = ("model: {input_shape: [16, 16, 3], layers: [{type: flatten}, {type: dense, units: 3}]}\n"
            "augmentation:\n  layers:\n    - {type: random_color_jitter}\n")
    assert config_errors(text) == [
        "4: augmentation.layers[0].brightness_factor: random_color_jitter needs "
        "`brightness_factor` or `contrast_factor` or `saturation_factor` or `hue_factor`"]


def test_a_keras_range_error_is_located(config_errors):
    text = ("model: {input_shape: [16, 16, 3], layers: [{type: flatten}, {type: dense, units: 3}]}\n"
            "augmentation:\n  layers:\n    - {type: random_erasing, scale: [0.5, 1.5]}\n")
    assert config_errors(text) == [
        "4: augmentation.layers[0].scale[1]: must be <= 1.0 (got 1.5)"]


def test_hue_of_grayscale_images_is_refused_at_its_key(tmp_path, cnn_yaml, cnnctl):
    config = tmp_path / "gray.yaml"
    config.write_text(cnn_yaml(
        augmentation="{placement: pipeline, layers: [{type: random_color_jitter, hue_factor: 0.1}]}"))
    done = cnnctl("check", config)
    assert done.exit_code == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        "augmentation.layers[0].hue_factor: random_color_jitter works on colour (3-channel) "
        "images and model.input_shape has 1 channel(s); remove it, or train on RGB images "
        "(data.color_mode: rgb and 3 channels in model.input_shape)")


def test_binary_crossentropy_with_mix_up_is_refused(tmp_path, colour_cnn_yaml, colour_npz):
    from cnnctl.errors import ConfigValueError

    path = colour_npz(tmp_path / "c.npz", 30, 6)
    config = tmp_path / "bin.yaml"
    config.write_text(colour_cnn_yaml(
        data=f'{{source: npz, path: "{path}"}}', loss="binary_crossentropy",
        layers=["{type: flatten}", "{type: dense, units: 1, activation: sigmoid}"],
        augmentation="{placement: pipeline, layers: [{type: mix_up}]}"))
    with pytest.raises(ConfigValueError, match=r"^loss: mix_up mixes one-hot labels of several "
                       r"classes, and binary_crossentropy trains one 0/1 output; use "
                       r"categorical_crossentropy \(or sparse_categorical_crossentropy\) with a "
                       r"2-unit softmax output$"):
        from cnnctl.data import load as data_lib

        data_lib.load(config_lib.load(config).config, input_shape=(16, 16, 3), label_mode="binary")


def test_sparse_loss_becomes_categorical_with_mixing():
    """mix_up's labels are one-hot: sparse cross-entropy becomes the same loss on one-hot
    labels, keeping from_logits and label_smoothing; top-k reads one-hot labels."""
    from cnnctl.config.schema import Config

    config = Config.model_validate({
        "model": {"input_shape": [16, 16, 3], "layers": [{"type": "flatten"}]},
        "loss": {"name": "sparse_categorical_crossentropy", "from_logits": True,
                 "label_smoothing": 0.1},
        "metrics": ["accuracy", {"name": "top_k_accuracy", "k": 2}],
        "augmentation": {"placement": "pipeline", "layers": [{"type": "mix_up"}]}})
    assert optim.label_mode(config) == "categorical"
    loss = optim.loss(config)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy)
    assert loss.get_config()["from_logits"] is True and loss.get_config()["label_smoothing"] == 0.1
    assert isinstance(optim.metrics(config)[1], keras.metrics.TopKCategoricalAccuracy)
    plain = config.model_copy(update={"augmentation": AugmentationConfig()})
    assert optim.label_mode(plain.model_copy(update={"loss": plain.loss.model_copy(
        update={"label_smoothing": 0.0})})) == "int"


# --------------------------------------------------------------------------- training
def colour_config(colour_cnn_yaml, path, augmentation, **changes) -> str:
    return colour_cnn_yaml(data=f'{{source: npz, path: "{path}", max_test_samples: 30}}',
                           augmentation=augmentation, metrics="[accuracy]", **changes)


def item(tag) -> str:
    return "{" + ", ".join([f"type: {tag}"] + [
        f"{k}: {json.dumps(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else v}"
        for k, v in FULL[tag].items()]) + "}"


@pytest.mark.slow
@pytest.mark.parametrize("placement, tag", [("model", t) for t in IMAGE_ONLY]
                         + [("pipeline", t) for t in FULL])
def test_each_type_trains_on_tensorflow(tmp_path, colour_cnn_yaml, colour_npz, train_yaml,
                                        placement, tag):
    path = colour_npz(tmp_path / "c.npz", 96, 30)
    text = colour_config(colour_cnn_yaml, path, f"{{placement: {placement}, layers: [{item(tag)}]}}")
    result = train_yaml(text, tmp_path / "c.yaml", tmp_path / "run")
    metrics = json.loads((result["run_dir"] / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and np.isfinite(metrics["history"]["loss"][0])
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and np.isfinite(metrics["test"]["loss"])
    model = keras.saving.load_model(result["run_dir"] / "checkpoints" / "best.keras", compile=False)
    names = [type(layer).__name__ for layer in model.layers]
    assert (KERAS[tag][0] in names) == (placement == "model")  # pipeline layers are not saved


@pytest.mark.slow
def test_mix_up_with_label_smoothing_and_logits_trains(tmp_path, colour_cnn_yaml, colour_npz,
                                                       train_yaml):
    path = colour_npz(tmp_path / "c.npz", 96, 30)
    text = colour_config(
        colour_cnn_yaml, path, "{placement: pipeline, layers: [{type: mix_up}, {type: cut_mix}]}",
        layers=["{type: conv2d, filters: 4, kernel_size: 3, activation: relu}",
                "{type: global_avg_pool2d}", "{type: dense, units: 3}"],
        loss="{name: sparse_categorical_crossentropy, from_logits: true, label_smoothing: 0.1}")
    metrics = train_yaml(text, tmp_path / "c.yaml", tmp_path / "run")["metrics"]
    assert np.isfinite(metrics["test"]["loss"]) and np.isfinite(metrics["history"]["loss"][0])


@pytest.mark.slow
def test_mix_up_and_cut_mix_train_in_mixed_precision(tmp_path, colour_cnn_yaml, colour_npz,
                                                     train_yaml):
    """Under bfloat16 the mixing layers stay float32, like the one-hot labels they mix."""
    path = colour_npz(tmp_path / "c.npz", 96, 30)
    text = colour_config(
        colour_cnn_yaml, path, "{placement: pipeline, layers: [{type: mix_up}, {type: cut_mix}]}",
        train="{epochs: 1, batch_size: 32, seed: 0, tensorboard: false, mixed_precision: bfloat16}")
    metrics = train_yaml(text, tmp_path / "c.yaml", tmp_path / "run")["metrics"]
    assert np.isfinite(metrics["test"]["loss"]) and np.isfinite(metrics["history"]["loss"][0])


class _SigtermAt(keras.callbacks.Callback):
    """Sends this process SIGTERM after global step `at` (cnnctl backs up and stops there)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_tf_data_resume_mid_epoch_equals_the_uninterrupted_run(tmp_path, colour_cnn_yaml,
                                                               colour_npz):
    """rand_augment, mix_up and cut_mix in the pipeline (tf.data): stopped by SIGTERM in the
    middle of epoch 2 and resumed, the run ends with the weights of the run never stopped."""
    path = colour_npz(tmp_path / "c.npz", 80, 30)
    config = tmp_path / "c.yaml"
    # best.keras is picked by val_loss: a resumed epoch's training loss covers its last steps only
    config.write_text(colour_cnn_yaml(
        data=f'{{source: npz, path: "{path}", validation_split: 0.2}}', metrics="[accuracy]",
        augmentation="{placement: pipeline, layers: [{type: rand_augment}, {type: mix_up}, "
        "{type: cut_mix}]}",
        train="{epochs: 2, batch_size: 16, seed: 4, deterministic: true, tensorboard: false}",
        run="{keep: [last]}"))
    loaded = config_lib.load(config)
    straight = fit.train(loaded, tmp_path / "straight", verbose=0)
    with pytest.raises(fit.Interrupted):
        fit.train(loaded, tmp_path / "killed", verbose=0, extra_callbacks=[_SigtermAt(6)])
    state = json.loads(sorted((tmp_path / "killed" / "backup").glob("state-*.json"))[-1].read_text())
    assert state["epoch"] == 1 and 0 < state["step"] < 4  # 4 steps an epoch: stopped in epoch 2
    resumed = fit.train(loaded, resume=tmp_path / "killed", verbose=0)
    for name in ("last.keras", "best.keras"):
        a = keras.saving.load_model(straight["run_dir"] / "checkpoints" / name, compile=False)
        b = keras.saving.load_model(resumed["run_dir"] / "checkpoints" / name, compile=False)
        for u, v in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(u, v)
    assert resumed["metrics"]["test"] == straight["metrics"]["test"]


def test_model_placement_generators_are_in_the_backup():
    """In the model, the layers draw from their own generators; backups store those states
    (`checkpoints.seed_states`), which is what makes the model placement resume exactly."""
    model = keras.Sequential([keras.Input((16, 16, 3)),
                              *layers_of({"type": "rand_augment"}, {"type": "random_erasing"},
                                         placement="model"),
                              keras.layers.Flatten()])
    saved = [id(v) for v in keras_compat.seed_variables(model)]
    for layer in model.layers[:2]:
        assert id(layer.generator.state) in saved, type(layer).__name__


BACKEND_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from cnnctl.config import load as config_lib
    from cnnctl.backend import keras
    from cnnctl.data import arrays, sources
    from cnnctl.model import inputs
    from cnnctl.config.schema import AugmentationConfig
    from cnnctl.train import fit

    out = {"backend": keras.backend.backend()}
    for name in ("pipeline", "model"):
        result = fit.train(config_lib.load(Path(sys.argv[1]) / f"{name}.yaml"),
                           Path(sys.argv[1]) / f"run_{name}", verbose=0)
        out[name] = result["metrics"]
    part = sources.Part(np.arange(40) % 3, images=np.random.default_rng(1).integers(
        0, 255, (40, 16, 16, 3), np.uint8))
    augment = inputs.augmentation_layers(AugmentationConfig.model_validate(
        {"placement": "pipeline", "layers": json.loads(sys.argv[2])}), seed=3)
    train = type("Train", (), {"batch_size": 8, "seed": 5})()
    straight, resumed = (arrays.train_stream(part, 3, "categorical", train, augment)(*at)
                         for at in ((0, 0), (1, 2)))
    out["same_batches"] = all(np.array_equal(np.asarray(a), np.asarray(b))
                              for k in range(3) for a, b in zip(straight[7 + k], resumed[k]))
    out["mixed"] = bool((np.asarray(straight[7][1]).max(1) < 0.999).any())
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_every_type_trains_on_jax_and_torch(backend, tmp_path, colour_cnn_yaml, colour_npz):
    """Every type in the pipeline (the in-memory batches of these backends, mixing labels too)
    and every image-only type in the model, 1 epoch each; and the batches of a stream rebuilt
    mid-epoch are those of the stream from the start."""
    pytest.importorskip(backend)
    path = colour_npz(tmp_path / "c.npz", 64, 30)
    everything = ", ".join(item(t) for t in FULL)
    images_only = ", ".join(item(t) for t in IMAGE_ONLY)
    (tmp_path / "pipeline.yaml").write_text(colour_config(
        colour_cnn_yaml, path, f"{{placement: pipeline, layers: [{everything}]}}"))
    (tmp_path / "model.yaml").write_text(colour_config(
        colour_cnn_yaml, path, f"{{placement: model, layers: [{images_only}]}}"))
    done = subprocess.run(
        [sys.executable, "-c", BACKEND_SCRIPT, str(tmp_path),
         json.dumps([{"type": t, **FULL[t]} for t in ("rand_augment", "mix_up", "cut_mix")])],
        env={**os.environ, "KERAS_BACKEND": backend}, cwd=ROOT, capture_output=True, text=True,
        timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert out["backend"] == backend
    for name in ("pipeline", "model"):
        assert out[name]["epochs"] == 1 and np.isfinite(out[name]["test"]["loss"])
        assert np.isfinite(out[name]["history"]["loss"][0])
    assert out["same_batches"] and out["mixed"]
