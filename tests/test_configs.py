"""Every shipped config in configs/ passes `cnnctl check` and builds the model it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnctl.config import load as config_lib
from cnnctl.model import build as model_lib
from cnnctl.backend import keras
from cnnctl.cli import app

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ALL = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
# configs that need something else to build without network or data
OVERRIDES = {"mobilenetv2_transfer": ["--set", "model.backbone.weights=null"]}

MNIST_CNN = 93_322
CIFAR_CNN = 7_384_970
PARAMS = {
    "mnist": MNIST_CNN,
    "fashion_mnist": MNIST_CNN,
    "tune_fashion_mnist": MNIST_CNN,  # at the width it starts from (32)
    "quickstart": MNIST_CNN,
    "csv_example": MNIST_CNN,
    "cifar10": CIFAR_CNN,
    "cifar10_folders": CIFAR_CNN,
    # the cifar10_folders CNN of 8 classes up to its 1,024-unit dense layer, and a 2-class head
    "finetune_from_run": CIFAR_CNN - (1024 * 10 + 10) + (1024 * 2 + 2),
    "fashion_mnist_small": 83_344,
    "mnist_best": 83_344,
    "fashion_mnist_best": 1_167_776,
    "cats_vs_dogs": 97_569,
    "resnet20_cifar10": 274_042,
    "unet": 482_067,
    "cifar10_fast": 1_975_072,
    # RegNetX002 as keras.applications had it before Keras 3 (which has no RegNet); its
    # layer-by-layer equality is in tests/model/test_applications.py
    "regnetx_002": 2_705_640,
}
# configs that rebuild a keras.applications network, and how Keras builds it
APPLICATIONS = {
    "vgg16": lambda: keras.applications.VGG16(weights=None),
    "resnet50": lambda: keras.applications.ResNet50(weights=None),
    "mobilenet": lambda: keras.applications.MobileNet(weights=None),
    "efficientnet_b0": lambda: keras.applications.EfficientNetB0(weights=None),
    "convnext_tiny": lambda: keras.applications.ConvNeXtTiny(weights=None),
    "mobilenet_v3_small": lambda: keras.applications.MobileNetV3Small(weights=None),
}
L = keras.layers


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory) -> Path:
    """The run configs/finetune_from_run.yaml starts from, as its header says to train it
    (configs/cifar10_folders.yaml with 8 classes), untrained: `cnnctl check` reads its config
    and model, not its weights."""
    from cnnctl import runs

    loaded = config_lib.load(CONFIGS / "cifar10_folders.yaml", ["model.layers[6].units=8"])
    run = runs.create(loaded, tmp_path_factory.mktemp("cifar8") / "run")
    model_lib.assemble(loaded).save(run / runs.CHECKPOINTS / runs.BEST)
    return run


@pytest.fixture(scope="module")
def checked(previous_run):
    """`cnnctl check CONFIG --json`, run once per config: name -> parsed JSON."""
    runner, results = CliRunner(), {}
    overrides = {**OVERRIDES, "finetune_from_run": ["--set", f"model.backbone.run={previous_run}"]}

    def check(name: str) -> dict:
        if name not in results:
            result = runner.invoke(app, ["check", str(CONFIGS / f"{name}.yaml"), "--json",
                                         *overrides.get(name, [])])
            assert result.exit_code == 0, result.output
            results[name] = json.loads(result.stdout)
        return results[name]

    return check


def test_the_configs_are_all_there():
    assert set(PARAMS) | set(APPLICATIONS) | {"mobilenetv2_transfer"} == set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_config_header_says_what_and_how(name):
    text = (CONFIGS / f"{name}.yaml").read_text(encoding="utf-8")
    header = text[:text.index("\nmodel:")]
    assert all(line.startswith("#") for line in header.splitlines()), "header comment first"
    assert f"cnnctl check configs/{name}.yaml" in header or f"cnnctl train configs/{name}.yaml" in header
    assert "accura" in header  # what accuracy to expect (or why there is none)


@pytest.mark.parametrize("name", ALL)
def test_check_json(checked, name):
    info = checked(name)
    assert set(info) >= {"params", "trainable_params", "flops", "input_shape", "output_shape", "layers"}
    loaded = config_lib.load(CONFIGS / f"{name}.yaml")
    assert info["input_shape"] == loaded.config.model.input_shape
    assert info["layers"] and all(set(layer) >= {"name", "type", "output_shape", "params"}
                                  for layer in info["layers"])
    assert info["output_shape"] == info["layers"][-1]["output_shape"]
    assert sum(layer["params"] for layer in info["layers"]) == info["params"]
    assert len({layer["name"] for layer in info["layers"]}) == len(info["layers"])
    assert 0 < info["flops"] and 0 < info["trainable_params"] <= info["params"]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_counts(checked, name):
    assert checked(name)["params"] == PARAMS[name]


def test_classifier_outputs(checked):
    for name in ALL:
        if name != "unet":
            classes = 1 if name == "cats_vs_dogs" else 2 if name == "finetune_from_run" else \
                1000 if name in APPLICATIONS or name == "regnetx_002" else 10
            assert checked(name)["output_shape"] == [classes], name
    assert checked("unet")["output_shape"] == [128, 128, 3]  # a class distribution per pixel


def test_mnist_flops(checked):
    assert checked("mnist")["flops"] == 5_588_480


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_same_as_keras_applications(checked, name):
    reference = APPLICATIONS[name]()
    info = checked(name)
    assert info["params"] == reference.count_params()
    trainable = sum(w.numpy().size for w in reference.trainable_weights)
    assert info["trainable_params"] == trainable
    assert info["output_shape"] == list(reference.output.shape[1:])


def test_transfer_backbone_is_frozen(checked):
    info = checked("mobilenetv2_transfer")
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None,
                                              input_shape=(96, 96, 3), pooling="avg")
    head = 1280 * 10 + 10
    assert info["params"] == backbone.count_params() + head
    assert info["trainable_params"] == head
    assert info["layers"][0]["type"] == "backbone MobileNetV2"


HAND_WRITTEN = {
    "mnist": ((28, 28, 1), lambda: [
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.Flatten(),
        L.Dense(64, activation="relu"), L.Dense(10, activation="softmax")]),
    "cifar10": ((32, 32, 3), lambda: [
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2), L.Dropout(0.25), L.Flatten(),
        L.Dense(1024, activation="relu"), L.Dropout(0.5), L.Dense(10, activation="softmax")]),
    "cats_vs_dogs": ((300, 300, 3), lambda: [
        *[layer for filters in (16, 32, 64, 128)
          for layer in (L.Conv2D(filters, 3, padding="same", activation="relu"), L.MaxPooling2D(2))],
        L.GlobalAveragePooling2D(), L.Dense(1, activation="sigmoid")]),
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_same_as_hand_written_keras(name):
    built = model_lib.build(config_lib.load(CONFIGS / f"{name}.yaml"))
    shape, layers = HAND_WRITTEN[name]
    hand = keras.Sequential([keras.Input(shape), *layers()])
    assert built.count_params() == hand.count_params()

    def per_layer(model):
        return [(type(layer), tuple(layer.output.shape), layer.count_params(),
                 getattr(layer, "activation", None)) for layer in model.layers]

    assert per_layer(built) == per_layer(hand)
