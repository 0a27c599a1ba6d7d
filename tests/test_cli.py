"""The `cnnctl` command line: exit codes, error lines on stderr, `check`, `schema`, a fast --help."""

import json
import subprocess
import sys
import textwrap
import time

import pytest

from cnnctl.config.schema import TrainConfig
from cnnctl.config.layer_specs import LAYER_SPECS

@pytest.fixture
def mnist(tmp_path, mnist_cnn_yaml):
    path = tmp_path / "mnist.yaml"
    path.write_text(mnist_cnn_yaml)
    return path


# --------------------------------------------------------------------------- check: good configs
def test_check_prints_the_layer_table(mnist, cnnctl):
    result = cnnctl("check", str(mnist))
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    for name in ("conv2d", "max_pool2d", "conv2d_1", "max_pool2d_1", "conv2d_2", "flatten", "dense", "dense_1"):
        assert any(line.split()[:1] == [name] for line in table), name
    assert "params: 93,322" in result.stdout
    assert "(3, 3, 64)" in result.stdout  # the last conv's output shape
    assert result.stderr == ""


def test_check_json(mnist, cnnctl):
    result = cnnctl("check", str(mnist), "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert {"params", "trainable_params", "flops", "input_shape", "output_shape", "layers"} <= set(info)
    assert info["params"] == info["trainable_params"] == 93_322
    assert info["input_shape"] == [28, 28, 1]
    assert info["output_shape"] == [10]
    assert [layer["params"] for layer in info["layers"]] == [320, 0, 18_496, 0, 36_928, 0, 36_928, 650]
    assert info["layers"][4]["output_shape"] == [3, 3, 64]
    # 2 FLOPs per multiply-accumulate: first conv 26*26 positions * 3*3*1*32 weights
    assert info["layers"][0]["flops"] == 2 * 26 * 26 * 3 * 3 * 32
    assert info["flops"] == sum(layer["flops"] for layer in info["layers"])


def test_check_applies_set(mnist, cnnctl):
    result = cnnctl("check", str(mnist), "--json", "--set", "model.layers[6].units=32")
    assert result.exit_code == 0, result.output
    # dense 576*32+32 and dense_1 32*10+10 instead of 36,928 and 650
    assert json.loads(result.stdout)["params"] == 93_322 - 36_928 - 650 + 18_464 + 330


# --------------------------------------------------------------------------- check: bad configs
BAD = {
    "unknown key": (
        "    - {type: conv2d, filters: 32, kernel_size: 3, activation: relu}",
        "    - {type: conv2d, filters: 32, kernel_size: 3, activaton: relu}",
        "6: model.layers[0].activaton: unknown key 'activaton' (did you mean 'activation'?); "
        "allowed keys: activation, bias_initializer, dilation_rate, filters, groups, initializer, "
        "inputs, kernel_size, l2, name, padding, repeat, strides, type, use_bias, when"),
    "misspelt layer type": (
        "{type: dense, units: 64", "{type: Dense, units: 64",
        "12: model.layers[6].type: unknown layer type 'Dense' (did you mean 'dense'?)"),
    "bad value": (
        "units: 10, activation: softmax}", "units: 0, activation: softmax}",
        "13: model.layers[7].units: must be > 0 (got 0)"),
    "impossible shape": (
        "input_shape: [28, 28, 1]", "input_shape: [6, 6, 1]",
        "8: model.layers[2]: conv2d 'conv2d_1' does not fit its input of shape (2, 2, 32): "
        "output height (W - K + 2P) / S + 1 = (2 - 3 + 2*0) / 1 + 1 = 0 < 1 (K = 3, padding valid); "
        "use padding: same, a smaller window, or fewer downsampling layers before it"),
    "duplicate key": (
        "train: {epochs: 5, batch_size: 128}", "train: {epochs: 5, batch_size: 128, epochs: 2}",
        "18: train.epochs: duplicate key 'epochs' (first given on line 18); keep only one"),
    "normalize of the wrong length": (
        "data: {source: keras, name: mnist}",
        "data:\n  source: keras\n  name: mnist\n  preprocessing:\n    normalize:\n"
        "      mean: [0.49, 0.48, 0.45]\n      std: [0.25]",
        "19: data.preprocessing.normalize.mean: needs 1 value (the model's input has 1 channel), got 3"),
    "augmentation field its type does not take": (
        "data: {source: keras, name: mnist}",
        "data: {source: keras, name: mnist}\naugmentation:\n  placement: pipeline\n  layers:\n"
        "    - {type: random_flip, mode: horizontal}\n    - {type: random_flip, factor: 0.2}",
        "19: augmentation.layers[1].factor: random_flip does not use `factor`; it takes mode"),
    "augmentation missing its field": (
        "data: {source: keras, name: mnist}",
        "data: {source: keras, name: mnist}\naugmentation:\n  layers:\n"
        "    - {type: random_rotation}",
        "17: augmentation.layers[0].factor: random_rotation needs `factor`"),
    "crop smaller than the image": (
        "data: {source: keras, name: mnist}",
        "data: {source: keras, name: mnist}\naugmentation:\n  layers:\n"
        "    - {type: random_crop, height: 32, width: 20}",
        "17: augmentation.layers[0].width: 20 is smaller than the image width 28; it is the "
        "padded size a random 28-pixel window is cut from (e.g. 36 for 4 pixels of padding)"),
    "python tag": (
        "  name: mnist_cnn", "  name: !!python/object/apply:os.system ['touch pwned']",
        "3: model.name: YAML tag '!!python/object/apply:os.system' is not allowed: configs are "
        "plain YAML (no python objects or custom tags); remove the tag"),
    "output that does not fit the classes": (
        "units: 10, activation: softmax}", "units: 5, activation: softmax}",
        "13: model.layers[7].units: the model outputs 5 values but the data has 10 classes "
        "(0, 1, 2, 3, 4, 5, 6, 7, 8, 9); give the last layer units: 10"),
    "binary loss for ten classes": (
        "loss: sparse_categorical_crossentropy", "loss: binary_crossentropy",
        "16: loss: binary_crossentropy needs 2 classes but the data has 10 (0, 1, 2, 3, 4, 5, 6, "
        "7, 8, 9); use categorical_crossentropy or sparse_categorical_crossentropy"),
    "input without channels": (
        "input_shape: [28, 28, 1]", "input_shape: [28, 28]",
        "4: model.input_shape: images need a channel axis: [28, 28, 1] for grayscale or "
        "[28, 28, 3] for RGB (got [28, 28])"),
    "keras class name as layer type": (
        "{type: flatten}", "{type: GlobalAveragePooling2D}",
        "11: model.layers[5].type: unknown layer type 'GlobalAveragePooling2D' (did you mean "
        "'global_avg_pool2d'?)"),
    "activation in another case": (
        "units: 64, activation: relu}", "units: 64, activation: Relu}",
        "12: model.layers[6].activation: must be one of 'linear', 'relu', 'relu6', 'leaky_relu', "
        "'elu', 'selu', 'gelu', 'swish', 'silu', 'hard_swish', 'hard_silu', 'mish', 'sigmoid', "
        "'hard_sigmoid', 'tanh', 'hard_tanh', 'softsign', 'softmax' or 'softplus' (did you mean "
        "'relu'?) (got 'Relu')"),
    "parentheses for a list": (
        "{type: conv2d, filters: 32, kernel_size: 3,", "{type: conv2d, filters: 32, kernel_size: (3, 3),",
        "6: model.layers[0].kernel_size: (3, 3) is not a YAML list; write [3, 3]"),
}


@pytest.mark.parametrize("kind", BAD)
def test_check_bad_config_exits_2_with_the_error_on_stderr(tmp_path, monkeypatch, kind,
                                                           mnist_cnn_yaml, cnnctl):
    monkeypatch.chdir(tmp_path)  # where `touch pwned` would write if the python tag ran
    old, new, error = BAD[kind]
    assert mnist_cnn_yaml.count(old) == 1
    path = tmp_path / "bad.yaml"
    path.write_text(mnist_cnn_yaml.replace(old, new))
    result = cnnctl("check", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{path}:{error}"]
    assert result.stdout == ""
    assert "Traceback" not in result.output
    assert not (tmp_path / "pwned").exists()


def test_check_many_errors_one_line_each(tmp_path, mnist, mnist_cnn_yaml, cnnctl):
    path = tmp_path / "bad.yaml"
    path.write_text(mnist_cnn_yaml.replace("batch_size: 128", "batch_size: 0").replace(
        "learning_rate: 1e-3", "lr: 1e-3").replace("{type: flatten}", "{type: flaten}"))
    result = cnnctl("check", str(path))
    assert result.exit_code == 2
    assert [line.split(":")[1:3] for line in result.stderr.splitlines()] == [
        ["11", " model.layers[5].type"], ["15", " optimizer.lr"], ["18", " train.batch_size"]]


def test_check_bad_set(mnist, cnnctl):
    result = cnnctl("check", str(mnist), "--set", "train.epochs=0", "--set", "train.epoch=1")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "--set: train.epoch: unknown key 'epoch' (did you mean 'epochs'?); allowed keys: " + \
        ", ".join(sorted(TrainConfig.model_fields))
    assert lines[1:] == ["--set: train.epochs: must be > 0 (got 0)"]


def test_check_malformed_set(mnist, cnnctl):
    result = cnnctl("check", str(mnist), "--set", "foo")
    assert result.exit_code == 2
    assert result.stderr == ("--set 'foo': expected path.to.key=value, e.g. --set train.epochs=1 "
                             "or --set model.layers[0].filters=16\n")


def test_check_missing_file(tmp_path, cnnctl):
    result = cnnctl("check", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert result.stderr == f"{tmp_path / 'nope.yaml'}: config file not found; check the path\n"
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- schema
@pytest.fixture(scope="module")
def schema(cnnctl):
    result = cnnctl("schema")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_schema_structure(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False  # unknown sections are flagged in the editor
    assert {"model", "data", "augmentation", "optimizer", "loss", "metrics", "train", "run", "tune"} == set(
        schema["properties"])
    assert schema["required"] == ["model"]
    model = schema["$defs"]["ModelConfig"]
    assert model["additionalProperties"] is False
    union = model["properties"]["layers"]["items"]["oneOf"]
    types = {schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]["properties"].get("type", {}).get("const")
             for ref in union}
    assert {"conv2d", "max_pool2d", "dense", "flatten", "dropout", "batch_norm"} <= types
    assert set(LAYER_SPECS) <= types
    conv = schema["$defs"]["Conv2D"]
    assert conv["required"] == ["filters"] and conv["additionalProperties"] is False
    assert "relu" in conv["properties"]["activation"]["anyOf"][0]["enum"]


def _accepts_a_string(prop: dict, schema: dict) -> bool:
    if "$ref" in prop:
        prop = schema["$defs"][prop["$ref"].rsplit("/", 1)[-1]]
    options = prop.get("anyOf", prop.get("oneOf", [prop]))
    return any(o.get("type") == "string" or "enum" in o or "const" in o for o in options
               if "$ref" not in o)


def test_schema_allows_the_short_loss_and_metric_forms(schema):
    assert _accepts_a_string(schema["properties"]["loss"], schema)
    assert _accepts_a_string(schema["properties"]["metrics"]["items"], schema)


def test_schema_validates_a_config(schema, mnist_cnn_yaml):
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    data = yaml.safe_load(mnist_cnn_yaml)
    data["optimizer"]["learning_rate"] = 0.001  # plain YAML 1.1 reads 1e-3 as a string
    assert list(validator.iter_errors(data)) == []
    data["model"]["layers"][0]["filtres"] = 3
    assert list(validator.iter_errors(data))


# --------------------------------------------------------------------------- as a real program
def test_real_process_bad_config_exit_2_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        model:
          input_shape: [28, 28, 1]
          layers:
            - {type: dense, units: 10, activation: softmaxx}
        """))
    proc = subprocess.run([sys.executable, "-m", "cnnctl", "check", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"{path}:4: model.layers[0].activation: must be one of 'linear', 'relu', 'relu6', "
        "'leaky_relu', 'elu', 'selu', 'gelu', 'swish', 'silu', 'hard_swish', 'hard_silu', 'mish', "
        "'sigmoid', 'hard_sigmoid', 'tanh', 'hard_tanh', 'softsign', 'softmax' or 'softplus' (did "
        "you mean 'softmax'?) (got 'softmaxx')"]
    assert "Traceback" not in proc.stderr


def test_help_is_fast_and_does_not_load_keras():
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cnnctl", "--help"], capture_output=True,
                          text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "check" in proc.stdout and "schema" in proc.stdout
    assert elapsed < 1.5
    code = ("import sys, cnnctl.cli, cnnctl.config.load; "
            "heavy = [m for m in ('keras', 'tensorflow') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- first-hour mistakes
def test_check_accepts_the_short_optimizer_form(mnist, mnist_cnn_yaml, cnnctl):
    mnist.write_text(mnist_cnn_yaml.replace("optimizer: {name: adam, learning_rate: 1e-3}", "optimizer: sgd"))
    result = cnnctl("check", str(mnist))
    assert result.exit_code == 0, result.output


def test_schema_accepts_the_short_optimizer_form(schema, mnist_cnn_yaml):
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    validator = jsonschema.Draft202012Validator(schema)
    data = yaml.safe_load(mnist_cnn_yaml)
    data["optimizer"] = "sgd"
    assert list(validator.iter_errors(data)) == []
    data["optimizer"] = "sgdd"
    assert list(validator.iter_errors(data))


@pytest.mark.parametrize("command", [["check"], ["train"], ["data", "check"]])
@pytest.mark.parametrize("order", ["config first", "set first", "--set=KEY"])
def test_set_without_equals_says_how_to_write_it(mnist, command, order, cnnctl):
    args = {"config first": [str(mnist), "--set", "train.epochs", "1"],
            "set first": ["--set", "train.epochs", "1", str(mnist)],
            "--set=KEY": [str(mnist), "--set=train.epochs", "1"]}[order]
    result = cnnctl(*command, *args)
    assert result.exit_code == 2
    assert result.stderr == "--set train.epochs 1: write --set train.epochs=1\n"
    assert result.stdout == ""


def test_other_extra_arguments_are_still_refused(mnist, cnnctl):
    result = cnnctl("check", str(mnist), "other.yaml")
    assert result.exit_code == 2
    assert "Got unexpected extra argument(s) (other.yaml)" in result.stderr


def test_train_refuses_an_output_that_does_not_fit_the_classes_at_its_line(tmp_path, mnist_cnn_yaml,
                                                                           cnnctl):
    config = tmp_path / "five.yaml"
    # the packaged npz: `check` knows its classes too, `train` finds them when the data is loaded
    config.write_text(mnist_cnn_yaml.replace("units: 10", "units: 5").replace(
        "data: {source: keras, name: mnist}", "data: {source: npz, path: cnnctl://fashion_mnist_small.npz}"))
    expected = (f"{config}:13: model.layers[7].units: the model outputs 5 values but the data has "
                "10 classes (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, "
                "Bag, Ankle boot); give the last layer units: 10")
    checked = cnnctl("check", str(config))
    assert checked.exit_code == 2 and checked.stderr.splitlines() == [expected]
    trained = cnnctl("train", str(config), "--run-dir", str(tmp_path / "run"))
    assert trained.exit_code == 2
    assert trained.stderr.splitlines() == [expected]
    assert not (tmp_path / "run").exists()
