"""cnnctl.use.evaluate against Keras's own model.evaluate on real Fashion-MNIST images; its
report, text and files counted by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnctl.use import evaluate as ev
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]

# every test is skipped without the real IDX files (../shared/data/fashion-mnist)
pytestmark = pytest.mark.usefixtures("fashion_mnist_idx")


def batches(images, labels, batch_size=64, shuffle=False):
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        data = data.shuffle(len(images), seed=1, reshuffle_each_iteration=True)
    return data.batch(batch_size)


@pytest.fixture(scope="module")
def data(fashion_mnist_arrays):
    """(x, y) of the first 2,000 training and the first 500 test images."""
    return fashion_mnist_arrays


@pytest.fixture(scope="module")
def model(fashion_mnist_cnn):
    """A small CNN trained one epoch on `data`'s training images."""
    return fashion_mnist_cnn


@pytest.fixture(scope="module")
def binary(data, fashion_mnist_idx, tiny_cnn):
    """A 1-unit sigmoid model telling T-shirts (0) from shirts (6): hard enough to make mistakes."""
    keras.utils.set_random_seed(0)
    x, y = fashion_mnist_idx("train", 8000)
    keep = np.isin(y, [0, 6])
    model = tiny_cnn(1, "sigmoid")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[keep], (y[keep] == 6).astype(np.float32), batch_size=32, epochs=1, verbose=0)
    tx, ty = fashion_mnist_idx("t10k", 1500)
    keep = np.isin(ty, [0, 6])
    return model, tx[keep], (ty[keep] == 6).astype(np.float32)[:, None]


def keras_scores(model, dataset, loss) -> tuple[float, float]:
    model.compile(loss=loss, metrics=["accuracy"])
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    return result["accuracy"], result["loss"]


def check_counts(report: dict, labels: np.ndarray, num_classes: int) -> None:
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.shape == (num_classes, num_classes)
    assert matrix.sum() == report["num_samples"] == len(labels)
    assert np.trace(matrix) / matrix.sum() == pytest.approx(report["accuracy"], abs=1e-12)
    assert matrix.sum(axis=1).tolist() == np.bincount(labels, minlength=num_classes).tolist()
    assert [m["support"] for m in report["per_class"].values()] == matrix.sum(axis=1).tolist()


# --- evaluate against model.evaluate -----------------------------------------------------------


@pytest.mark.slow
def test_sparse_labels_match_model_evaluate(model, data):
    _, (x, y) = data
    report = ev.evaluate(model, batches(x, y), CLASSES)
    accuracy, loss = keras_scores(model, batches(x, y), "sparse_categorical_crossentropy")
    assert report["accuracy"] > 0.6  # learned something in one epoch (chance is 0.1)
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["loss"] == pytest.approx(loss, abs=1e-4)
    check_counts(report, y, 10)
    assert list(report["per_class"]) == CLASSES
    f1s = [m["f1"] for m in report["per_class"].values()]
    assert report["macro_f1"] == pytest.approx(np.mean(f1s))


@pytest.mark.slow
def test_one_hot_labels_match_model_evaluate(model, data):
    _, (x, y) = data
    one_hot = np.eye(10, dtype=np.float32)[y]
    report = ev.evaluate(model, batches(x, one_hot), CLASSES)
    accuracy, loss = keras_scores(model, batches(x, one_hot), "categorical_crossentropy")
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["loss"] == pytest.approx(loss, abs=1e-4)
    check_counts(report, y, 10)
    sparse = ev.evaluate(model, batches(x, y), CLASSES)
    assert report["confusion_matrix"] == sparse["confusion_matrix"]


@pytest.mark.slow
def test_binary_sigmoid_model_matches_model_evaluate(binary):
    model, x, y = binary
    report = ev.evaluate(model, batches(x, y), ["T-shirt/top", "Shirt"])
    accuracy, loss = keras_scores(model, batches(x, y), "binary_crossentropy")
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["loss"] == pytest.approx(loss, abs=1e-4)
    check_counts(report, y[:, 0].astype(np.int64), 2)
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix[0, 1] + matrix[1, 0] > 0  # a real test of the matrix: there are mistakes
    # Labels as a flat [B] vector of 0/1 score the same.
    flat = ev.evaluate(model, batches(x, y[:, 0]), ["T-shirt/top", "Shirt"])
    assert flat["confusion_matrix"] == report["confusion_matrix"]


@pytest.mark.slow
def test_reshuffling_dataset_keeps_images_and_labels_together(model, data):
    _, (x, y) = data
    report = ev.evaluate(model, batches(x, y, shuffle=True), CLASSES)
    in_order = ev.evaluate(model, batches(x, y), CLASSES)
    assert report["confusion_matrix"] == in_order["confusion_matrix"]
    assert report["loss"] == pytest.approx(in_order["loss"], abs=1e-5)


@pytest.mark.slow
def test_logits_model_scores_like_its_softmax_twin(model, data):
    _, (x, y) = data
    head = model.layers[-1]
    logits = keras.Sequential([keras.Input((28, 28, 1)), *model.layers[:-1],
                               keras.layers.Dense(10)])
    logits.layers[-1].set_weights(head.get_weights())
    report = ev.evaluate(logits, batches(x, y), CLASSES)
    accuracy, loss = keras_scores(
        logits, batches(x, y), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["loss"] == pytest.approx(loss, abs=1e-4)


def test_class_names_must_fit_the_model(model, data):
    _, (x, y) = data
    with pytest.raises(CnnctlError) as e:
        ev.evaluate(model, batches(x[:10], y[:10]), CLASSES[:3])
    assert str(e.value) == ("the model predicts 10 classes (10 units) but 3 class names were "
                            "given: use the class_names.json of the run that trained this model")
    with pytest.raises(CnnctlError, match="labels run from 0 to 12 but the model has 10"):
        ev.report_from_predictions(np.array([0, 12]), np.full((2, 10), 0.1), CLASSES)


# --- counting by hand --------------------------------------------------------------------------


def hand_made() -> dict:
    """Six images of three classes; predicted 0 0 1 | 1 1 | 0."""
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = [0, 0, 1, 1, 1, 0]
    outputs = np.full((6, 3), 0.1)
    outputs[np.arange(6), predicted] = 0.8
    return ev.report_from_predictions(labels, outputs, ["cat", "dog", "bird"])


def test_per_class_metrics_by_hand():
    report = hand_made()
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["loss"] == pytest.approx((4 * -np.log(0.8) + 2 * -np.log(0.1)) / 6, rel=1e-5)
    cat, dog, bird = (report["per_class"][c] for c in ["cat", "dog", "bird"])
    # cat: 2 right of 3 predicted as cat, 2 found of 3 cats
    assert (cat["precision"], cat["recall"], cat["f1"], cat["support"]) == pytest.approx(
        (2 / 3, 2 / 3, 2 / 3, 3))
    # dog: 2 right of 3 predicted as dog, both dogs found
    assert (dog["precision"], dog["recall"], dog["support"]) == pytest.approx((2 / 3, 1, 2))
    assert dog["f1"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    # bird: never predicted, its one image missed: 0, not a division by zero
    assert (bird["precision"], bird["recall"], bird["f1"], bird["support"]) == (0, 0, 0, 1)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)


def test_format_report_shows_the_numbers():
    report = hand_made()
    text = ev.format_report(report, ["cat", "dog", "bird"])
    assert "accuracy  0.6667  (4 of 6 images)" in text
    assert "loss      " + f"{report['loss']:.4f}" in text
    assert "class  precision  recall      f1  support" in text
    assert "cat       0.6667  0.6667  0.6667        3" in text
    assert "dog       0.6667  1.0000  0.8000        2" in text
    assert "bird      0.0000  0.0000  0.0000        1" in text
    matrix = text.split("confusion matrix (rows: true class, columns: predicted class)\n")[1]
    assert matrix.splitlines() == [
        "        cat    dog   bird",
        "cat       2      1      0",
        "dog       0      2      0",
        "bird      1      0      0",
    ]


def test_format_report_abbreviates_long_class_names():
    names = [f"a_rather_long_class_name_{i}" for i in range(3)]
    report = ev.report_from_predictions(np.array([0, 1, 2, 2]), np.eye(3)[[0, 1, 2, 1]], names)
    text = ev.format_report(report, names)
    # Cut from the middle, as these names differ only at the end.
    assert "a_rather_lon~lass_name_2     1.0000  0.5000  0.6667        2" in text
    # Column heads would all read "a_rat~", so the columns are numbered and rows say which is which.
    matrix = text.split("predicted class)\n")[1].splitlines()
    assert matrix[0].split() == ["0", "1", "2"]
    assert matrix[3] == " 2 a_rath~s_name_2      0      1      1"


def test_format_report_lists_most_confused_pairs_for_many_classes():
    names = [f"class_{i:02d}" for i in range(25)]
    labels = np.repeat(np.arange(25), 4)
    predicted = labels.copy()
    predicted[[0, 1, 2]] = 7  # three of class_00 taken for class_07
    predicted[4] = 9  # one of class_01 for class_09
    outputs = np.eye(25)[predicted]
    text = ev.format_report(ev.report_from_predictions(labels, outputs, names), names)
    assert "confusion matrix" not in text
    pairs = text.split("most confused pairs")[1].splitlines()[1:]
    assert [p.split() for p in pairs] == [
        ["class_00", "->", "class_07", "3", "(75.0%", "of", "class_00)"],
        ["class_01", "->", "class_09", "1", "(25.0%", "of", "class_01)"],
    ]


def test_write_report_writes_json_and_png(tmp_path):
    report = hand_made()
    (tmp_path / "run").mkdir()
    files = ev.output_files(tmp_path / "run", "test")
    paths = ev.write_report(report, ["cat", "dog", "bird"], files)
    assert paths == {"json": tmp_path / "run" / "eval_test.json",
                     "confusion_matrix": tmp_path / "run" / "confusion_matrix_test.png"}
    assert json.loads(paths["json"].read_text()) == report
    with Image.open(paths["confusion_matrix"]) as png:
        assert png.format == "PNG"
        assert 300 <= png.width <= 3000 and 300 <= png.height <= 3000
        assert np.asarray(png.convert("L")).std() > 0
