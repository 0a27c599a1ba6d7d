"""cnnctl.model.classes: the output layer and loss of a model against the classes of its data
set, where they are known without loading it."""

import pytest

from cnnctl.config import load as config_lib
from cnnctl.model import summary
from cnnctl.errors import ConfigError



# --------------------------------------------------------------------------- output and classes
def check_error(write_yaml, text: str) -> tuple[str, str]:
    path = write_yaml(text)
    with pytest.raises(ConfigError) as e:
        summary.describe(config_lib.load(path))
    return str(path), str(e.value)


FASHION = ("T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot")


def test_check_compares_the_output_with_the_packaged_npz(write_yaml):
    path, message = check_error(write_yaml, """\
    model:
      input_shape: [28, 28, 1]
      layers:
        - {type: flatten}
        - {type: dense, units: 5}
        - {type: activation, activation: softmax}
        - {type: dropout, rate: 0.1}
    data: {source: npz, path: "cnnctl://fashion_mnist_small.npz"}
    """)
    assert message == (f"{path}:5: model.layers[1].units: the model outputs 5 values but the data "
                       f"has 10 classes ({FASHION}); give the last layer units: 10")


def test_check_compares_the_output_with_the_labels_of_an_npz(write_yaml, tmp_path, colour_npz):
    colour_npz(tmp_path / "colours.npz", train=6, test=3)
    path, message = check_error(write_yaml, f"""\
    model:
      input_shape: [16, 16, 3]
      layers:
        - {{type: conv2d, filters: 4}}
        - {{type: global_avg_pool2d}}
    data: {{source: npz, path: {tmp_path / 'colours.npz'}}}
    """)
    assert message == (f"{path}:4: model.layers[0].filters: the model outputs 4 values but the "
                       "data has 3 classes (0, 1, 2); give the last layer filters: 3")


def test_check_compares_the_output_and_loss_with_class_folders(write_yaml, tmp_path):
    for name in ("cat", "dog", ".hidden"):
        (tmp_path / "train" / name).mkdir(parents=True)  # no image is read
    text = f"""\
    model:
      input_shape: [8, 8, 3]
      layers:
        - {{type: flatten}}
        - {{type: dense, units: UNITS, activation: sigmoid}}
    data: {{source: folder, train_dir: {tmp_path / 'train'}}}
    loss: LOSS
    """
    fits = [("1", "binary_crossentropy"), ("2", "binary_crossentropy"), ("2", "categorical_crossentropy")]
    for units, loss in fits:
        summary.describe(config_lib.load(write_yaml(text.replace("UNITS", units).replace("LOSS", loss))))
    path, message = check_error(write_yaml, text.replace("UNITS", "1").replace("LOSS", "categorical_crossentropy"))
    assert message == (f"{path}:5: model.layers[1].units: the model outputs 1 value but the data has "
                       "2 classes (cat, dog); give the last layer units: 2, or units: 1 with "
                       "activation: sigmoid and loss: binary_crossentropy")


def test_check_refuses_binary_crossentropy_for_ten_classes(write_yaml):
    path, message = check_error(write_yaml, """\
    model:
      input_shape: [28, 28, 1]
      layers:
        - {type: flatten}
        - {type: dense, units: 1, activation: sigmoid}
    data: {source: keras, name: cifar100}
    loss: binary_crossentropy
    """)
    lines = message.splitlines()  # the class names: from Keras's cache where it has CIFAR-100
    assert lines[0].startswith(f"{path}:5: model.layers[1].units: the model outputs 1 value but "
                               "the data has 100 classes (")
    assert lines[0].endswith(", ...); give the last layer units: 100")
    assert lines[1].startswith(f"{path}:7: loss: binary_crossentropy needs 2 classes but the data has 100 (")
    assert lines[1].endswith("); use categorical_crossentropy or sparse_categorical_crossentropy")
    assert len(lines) == 2


@pytest.mark.parametrize("data", [
    "{source: npz, path: missing.npz}",
    "{source: folder, train_dir: no/such/folder}",
    "{source: tfds, name: imagenet2012}",
])
def test_check_says_nothing_where_the_classes_are_not_known_cheaply(write_yaml, data, model_yaml):
    info = summary.describe(config_lib.load(write_yaml(
        model_yaml([8, 8, 1], ["{type: flatten}", "{type: dense, units: 7, activation: softmax}"])
        + f"data: {data}\n")))
    assert info["output_shape"] == [7]
