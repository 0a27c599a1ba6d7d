"""`loss.from_logits`: a model ending in a plain `Dense(10)` (the tutorials' way) trains as well
as its softmax twin, its metrics are computed on probabilities, every command that uses the run
gives probabilities, and a last layer that does not fit the loss is refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnctl.backend import keras
from cnnctl.config import schema as schema_lib
from cnnctl.train import optim
from cnnctl.use import trained

METRICS = "[accuracy, {name: top_k_accuracy, k: 3}, precision, recall, auc]"
LOGITS_LOSS = "{name: categorical_crossentropy, from_logits: true}"


def _twin_yaml(cnn_yaml, logits: bool) -> str:
    """The small CNN on 1,000 of the shipped Fashion-MNIST images, ending in Dense(10) with
    from_logits (`logits`) or in Dense(10, softmax); everything else the same."""
    return cnn_yaml(
        name="logits" if logits else "softmax",
        layers=["{type: conv2d, filters: 8, kernel_size: 3, activation: relu}",
                "{type: max_pool2d, pool_size: 2}",
                "{type: flatten}",
                "{type: dense, units: 10}" if logits else
                "{type: dense, units: 10, activation: softmax}"],
        data='{source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 1000, '
             'max_test_samples: 300, validation_split: 0.1}',
        optimizer="{name: adam, learning_rate: 0.003}",
        loss=LOGITS_LOSS if logits else "categorical_crossentropy", metrics=METRICS,
        train="{epochs: 2, batch_size: 64, seed: 5, tensorboard: false}")


@pytest.fixture(scope="module")
def twins(tmp_path_factory, cnn_yaml, train_yaml) -> dict[str, dict]:
    """{"logits": result, "softmax": result}: the twins trained with the same seed and data."""
    root = tmp_path_factory.mktemp("logits")
    return {kind: train_yaml(_twin_yaml(cnn_yaml, kind == "logits"), root / f"{kind}.yaml",
                             root / kind)
            for kind in ("logits", "softmax")}


@pytest.mark.slow
def test_logits_model_trains_like_its_softmax_twin(twins):
    logits, softmax = twins["logits"]["metrics"], twins["softmax"]["metrics"]
    # Same initial weights, same batches, and the same loss function: with the tensorflow
    # backend Keras even computes softmax + cross-entropy from the logits under the softmax, so
    # the twins come out identical (measured: test accuracy 0.7567, loss 0.6983, every figure
    # of metrics.json equal to the last digit). Other backends compute the log of the softmax,
    # which differs by rounding: hence the tolerances.
    assert logits["test"]["accuracy"] > 0.6  # 10 classes: chance is 0.1
    assert logits["test"]["accuracy"] == pytest.approx(softmax["test"]["accuracy"], abs=0.01)
    assert logits["test"]["loss"] == pytest.approx(softmax["test"]["loss"], rel=0.01)


@pytest.mark.slow
def test_metrics_of_logits_are_those_of_its_probabilities(twins):
    # the trained logits network with its softmax is the softmax twin's architecture: Keras's
    # own metrics of those probabilities are what the logits metrics must give
    run = twins["logits"]["run_dir"]
    logits_model = keras.saving.load_model(run / "checkpoints" / "best.keras", compile=False)
    test = trained.test_arrays(run, (28, 28, 1))
    onehot = np.eye(10, dtype=np.float32)[test.y]
    figures = {}
    for kind, model in (("logits", logits_model),
                        ("softmax", trained.with_probabilities(logits_model, "softmax"))):
        config = schema_lib.Config.model_validate({
            "model": {"input_shape": [28, 28, 1]}, "metrics": yaml_metrics(),
            "loss": {"name": "categorical_crossentropy", "from_logits": kind == "logits"}})
        model.compile(loss=optim.loss(config), metrics=optim.metrics(config))
        figures[kind] = model.evaluate(test.x, onehot, verbose=0, return_dict=True)
    assert set(figures["logits"]) == {"loss", "accuracy", "top3_accuracy", "precision", "recall",
                                      "auc"}
    for name, value in figures["softmax"].items():
        assert figures["logits"][name] == pytest.approx(value, abs=1e-5), name
    # and the twins' own figures, from training: close, as their weights are
    logits, softmax = twins["logits"]["metrics"]["test"], twins["softmax"]["metrics"]["test"]
    for name in ("top3_accuracy", "precision", "recall", "auc"):
        assert logits[name] == pytest.approx(softmax[name], abs=0.02), name
    assert 0.2 < logits["precision"] <= 1 and logits["auc"] > 0.9  # probabilities, not logits


def yaml_metrics() -> list:
    return [{"name": "accuracy"}, {"name": "top_k_accuracy", "k": 3}, {"name": "precision"},
            {"name": "recall"}, {"name": "auc"}]


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "binary_crossentropy"])
def test_each_metric_of_logits_equals_it_on_probabilities(loss):
    rng = np.random.default_rng(0)
    binary = loss == "binary_crossentropy"
    units = 1 if binary else 5
    logits = (2 * rng.normal(size=(200, units))).astype(np.float32)
    y = rng.integers(0, 2 if binary else units, 200)
    labels = y[:, None].astype(np.float32) if binary else np.eye(units, dtype=np.float32)[y]
    probs = keras.ops.convert_to_numpy(keras.ops.sigmoid(logits) if binary
                                       else keras.ops.softmax(logits))
    names = [m for m in yaml_metrics() if not (binary and m["name"] == "top_k_accuracy")]
    results = {}
    for from_logits, outputs in ((False, probs), (True, logits)):
        config = schema_lib.Config.model_validate({
            "model": {"input_shape": [8, 8, 1]}, "metrics": names,
            "loss": {"name": loss, "from_logits": from_logits}})
        model = keras.Sequential([keras.Input((units,)), keras.layers.Identity()])
        model.compile(loss=optim.loss(config), metrics=optim.metrics(config))
        results[from_logits] = model.evaluate(outputs, labels, verbose=0, return_dict=True)
    assert len(results[True]) == len(names) + 1  # and the loss
    for name, value in results[False].items():
        assert results[True][name] == pytest.approx(value, abs=1e-5), name


@pytest.mark.slow
def test_every_command_gives_probabilities_for_a_logits_run(twins, cnnctl, tmp_path):
    run = twins["logits"]["run_dir"]
    data = np.load(Path(__file__).parents[2] / "cnnctl" / "data" / "fashion_mnist_small.npz")
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(data["x_test"][i]).save(files[-1])

    predicted = cnnctl("predict", run, *files, "--top-k", "10", "--json")
    assert predicted.exit_code == 0, predicted.output
    for row in json.loads(predicted.stdout):
        probs = [t["prob"] for t in row["top"]]
        assert min(probs) >= 0 and sum(probs) == pytest.approx(1, abs=1e-5)

    opened = trained.open_model(run)
    assert opened.gives_probabilities
    assert opened.model.layers[-1].get_config()["activation"] == "softmax"
    # the checkpoint itself stays the trained logits model (resume goes on from it exactly)
    saved = keras.saving.load_model(run / "checkpoints" / "best.keras", compile=False)
    x = np.asarray(data["x_test"][:8, ..., None], np.float32)
    logits = saved.predict(x, verbose=0)
    assert logits.min() < 0
    np.testing.assert_allclose(opened.model.predict(x, verbose=0),
                               keras.ops.convert_to_numpy(keras.ops.softmax(logits)), atol=1e-6)

    evaluated = cnnctl("eval", run, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((run / "eval_test.json").read_text())
    # eval scores the probabilities: the same figures as training's, on best.keras
    assert report["accuracy"] == pytest.approx(twins["logits"]["metrics"]["test"]["accuracy"],
                                               abs=1e-6)
    assert report["loss"] == pytest.approx(twins["logits"]["metrics"]["test"]["loss"], rel=1e-4)

    exported = cnnctl("export", run, "--format", "savedmodel", "--out", tmp_path / "sm",
                      "--images", "8")
    assert exported.exit_code == 0, exported.output
    from cnnctl.use import export

    x = np.stack([np.asarray(Image.open(f), np.float32)[..., None] for f in files])
    got = export.predict_exported("savedmodel", tmp_path / "sm", x)
    np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)
    assert got.min() >= 0


@pytest.mark.slow
def test_explain_titles_a_probability(twins, tmp_path):
    from cnnctl.use import explain

    run = twins["logits"]["run_dir"]
    data = np.load(Path(__file__).parents[2] / "cnnctl" / "data" / "fashion_mnist_small.npz")
    Image.fromarray(data["x_test"][0]).save(tmp_path / "boot.png")
    [result] = explain.run(run, [str(tmp_path / "boot.png")], out=tmp_path / "explain")
    assert 0.1 <= result["probability"] <= 1  # the softmax of the logits, not a logit
    heat, probs = explain.gradcam(trained.open_model(run).model,
                                  np.asarray(data["x_test"][:4, ..., None], np.float32))
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert heat.shape == (4, 13, 13)  # the max-pooled maps, the last ones of the network


# --------------------------------------------------------------------------- refusals
LINEAR = ("model.layers[3].activation: the output layer (dense 'dense') has no activation, so "
          "the model outputs logits, which categorical_crossentropy would read as probabilities "
          "(it then learns little or nothing); add activation: softmax, or set loss: "
          "{name: categorical_crossentropy, from_logits: true}")


@pytest.mark.parametrize("command", ["check", "train"])
def test_linear_last_layer_without_from_logits_is_refused(command, cnn_yaml, cnnctl, tmp_path):
    text = _twin_yaml(cnn_yaml, logits=True).replace(LOGITS_LOSS, "categorical_crossentropy")
    config = tmp_path / "linear.yaml"
    config.write_text(text)
    line = text.splitlines().index("    - {type: dense, units: 10}") + 1
    args = ["--run-dir", tmp_path / "run"] if command == "train" else []
    result = cnnctl(command, config, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"{config}:{line}: {LINEAR}"]
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before any data is read


def test_softmax_with_from_logits_is_refused(cnn_yaml, cnnctl, tmp_path):
    text = _twin_yaml(cnn_yaml, logits=False).replace("loss: categorical_crossentropy",
                                                      f"loss: {LOGITS_LOSS}")
    config = tmp_path / "twice.yaml"
    config.write_text(text)
    line = text.splitlines().index("    - {type: dense, units: 10, activation: softmax}") + 1
    result = cnnctl("check", config)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"{config}:{line}: model.layers[3].activation: the output layer (dense 'dense') has "
        "activation: softmax but loss.from_logits is true, so categorical_crossentropy would "
        "apply softmax to its probabilities a second time; remove activation: softmax (the "
        "model then outputs logits), or set from_logits: false"]


def test_refusal_looks_back_through_dropout_and_into_block_templates(write_yaml, cnnctl):
    config = write_yaml("""
        model:
          input_shape: [28, 28, 1]
          blocks:
            head:
              params: {classes: 10}
              layers:
                - {type: conv2d, filters: "${in_channels * 2}", kernel_size: 3, activation: relu}
                - {type: global_avg_pool2d}
                - {type: dense, units: $classes, activation: linear}
                - {type: dropout, rate: 0.1}
          layers:
            - {type: conv2d, filters: 8, kernel_size: 3, activation: relu}
            - {block: head, classes: 10}
        loss: binary_crossentropy
        """)
    result = cnnctl("check", config)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"{config}:9: model.blocks.head.layers[2].activation: the output layer (dense "
        "'head1_dense') has activation: linear, so the model outputs logits, which "
        "binary_crossentropy would read as probabilities (it then learns little or nothing); "
        "make it activation: sigmoid, or set loss: {name: binary_crossentropy, from_logits: "
        "true} [block used at model.layers[1]]"]


@pytest.mark.parametrize("layers, loss", [
    (["{type: dense, units: 10}"], LOGITS_LOSS),  # logits, and the loss knows
    (["{type: dense, units: 10, activation: relu}"], "categorical_crossentropy"),  # not definite
    (["{type: dense, units: 10}", "{type: batch_norm}"], "categorical_crossentropy"),
    (["{type: dense, units: 10}", "{type: activation, activation: softmax}"],
     "categorical_crossentropy"),
])
def test_outputs_that_fit_or_are_not_definite_pass(layers, loss, cnn_yaml, cnnctl, tmp_path):
    config = tmp_path / "fine.yaml"
    config.write_text(cnn_yaml(layers=["{type: flatten}", *layers], loss=loss))
    result = cnnctl("check", config)
    assert result.exit_code == 0, result.output


def test_backbone_only_model_is_not_refused(write_yaml, cnnctl):
    config = write_yaml("""
        model:
          input_shape: [32, 32, 3]
          backbone: {name: MobileNetV2, weights: null, pooling: avg}
        loss: categorical_crossentropy
        """)
    result = cnnctl("check", config)
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_flip_tta_of_a_logits_run_averages_probabilities_as_eval_does(cnn_yaml, train_yaml,
                                                                       tmp_path, cnnctl):
    result = train_yaml(_twin_yaml(cnn_yaml, logits=True), tmp_path / "tta.yaml", tmp_path / "run",
                        "train.test_time_augmentation=flip", "train.epochs=1")
    evaluated = cnnctl("eval", result["run_dir"], "--json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["test_time_augmentation"] == "flip"
    assert report["accuracy"] == pytest.approx(result["metrics"]["test"]["accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(result["metrics"]["test"]["loss"], rel=1e-4)
