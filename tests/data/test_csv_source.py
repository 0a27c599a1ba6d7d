"""cnnctl.data.csv_source (`data.source: csv`): label files of real Fashion-MNIST PNGs, the exact
error of each kind of bad row (file and line), training through the CLI, and `data check`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHIPPED = Path(__file__).resolve().parents[2] / "cnnctl" / "data" / "fashion_mnist_small.npz"
CLASSES = {1: "Trouser", 7: "Sneaker", 8: "Bag"}  # Fashion-MNIST label -> name, 3 classes


@pytest.fixture(scope="module")
def shipped():
    with np.load(SHIPPED) as f:
        return {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}


@pytest.fixture
def images(tmp_path, shipped):
    """root/img/train_N.png, root/img/test_N.png: the first 12 training and 4 test images of
    each of CLASSES; returns (root, {split: [(file name, class name, pixels)]})."""
    root = tmp_path / "set"
    (root / "img").mkdir(parents=True)
    made = {}
    for split in ("train", "test"):
        x, y = shipped[f"x_{split}"], shipped[f"y_{split}"]
        keep = 12 if split == "train" else 4
        picked = [i for i in range(len(y)) if y[i] in CLASSES
                  and (y[:i] == y[i]).sum() < keep]
        made[split] = []
        for i in picked:
            name = f"{split}_{i}.png"
            Image.fromarray(x[i]).save(root / "img" / name)
            made[split].append((name, CLASSES[int(y[i])], x[i]))
    return root, made


def csv_text(rows, header="path,label", sep=","):
    return "\n".join([header, *(r if isinstance(r, str) else sep.join(r) for r in rows)]) + "\n"


def config_text(train_csv, test_csv=None, extra=""):
    test = f"  test_csv: {test_csv}\n" if test_csv else ""
    return (
        "model:\n"
        "  input_shape: [28, 28, 1]\n"
        "  layers:\n"
        "    - {type: conv2d, filters: 8, kernel_size: 3, activation: relu}\n"
        "    - {type: max_pool2d, pool_size: 2}\n"
        "    - {type: flatten}\n"
        "    - {type: dense, units: 3, activation: softmax}\n"
        "data:\n"
        "  source: csv\n"
        f"  train_csv: {train_csv}\n"  # line 10
        f"{test}{extra}"
        "optimizer: {name: adam, learning_rate: 0.003}\n"
        "loss: sparse_categorical_crossentropy\n"
        "metrics: [accuracy]\n"
        "train: {epochs: 1, batch_size: 16, seed: 0, tensorboard: false}\n")


@pytest.fixture
def good(images):
    """(root, made, config): train.csv and test.csv over `images` with class names, and a
    config that lists the classes in Fashion-MNIST's order."""
    root, made = images
    for split in ("train", "test"):
        (root / f"{split}.csv").write_text(csv_text(
            [(f"img/{name}", label) for name, label, _ in made[split]]))
    config = root / "config.yaml"
    config.write_text(config_text(root / "train.csv", root / "test.csv",
                                  "  class_names: [Trouser, Sneaker, Bag]\n"))
    return root, made, config


# --------------------------------------------------------------------------- bad rows
BAD_ROWS = {
    "missing file": (["img/nope.png,Bag"], 3,
                     "image file img/nope.png not found ({root}/img/nope.png); fix the path "
                     "(relative to {root}) or remove the row"),
    "unknown label": (["{first},Cat"], 3,
                      "unknown label 'Cat': not one of data.class_names (Trouser, Sneaker, Bag) "
                      "nor a class index below 3; fix the row"),
    "empty label": (["{first}, "], 3, "empty 'label'; fill it in or remove the row"),
    "empty path": ([",Bag"], 3, "empty 'path'; fill it in or remove the row"),
    "duplicate": (["{first},Bag", "./{first},Bag"], 4,
                  "./{first} is listed twice (first on line 3); remove one of the rows"),
    "escape": (["img/../../outside.png,Bag"], 3,
               "img/../../outside.png leads out of {root}, the file's folder; give a path inside "
               "it, or an absolute path"),
    "field count": (["{first},Bag,extra"], 3,
                    "3 fields, the header has 2; quote a field that holds the delimiter ','"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_each_bad_row_is_named_by_file_and_line(kind, images, cnnctl):
    root, made = images
    (root.parent / "outside.png").write_bytes((root / "img" / made["train"][0][0]).read_bytes())
    rows, line, message = BAD_ROWS[kind]
    train = root / "train.csv"
    first = f"img/{made['train'][0][0]}"
    # line 2 is a good row, the bad ones follow it
    train.write_text(csv_text([f"img/{made['train'][1][0]},Sneaker",
                               *(row.format(first=first) for row in rows)]))
    config = root / "config.yaml"
    config.write_text(config_text(train, extra="  class_names: [Trouser, Sneaker, Bag]\n"))
    expected = (f"{config}:10: data.train_csv: {train}:{line}: "
                f"{message.format(root=root, first=first)}")
    for command in (["data", "check"], ["train"]):
        result = cnnctl(*command, config, "--run-dir", root / "run") if command == ["train"] \
            else cnnctl(*command, config)
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [expected]
    assert not (root / "run").exists()  # refused before training


@pytest.mark.parametrize("text, line, message", [
    ("", 1, "the file is empty; it needs a header row (path,label) and one row per image"),
    ("path,label\n", 2, "no rows after the header; add one row per image (path,label)"),
    ("file,label\nimg/a.png,Bag\n", 1, "no column 'path' in the header (columns: file, label); "
     "name it 'path' or set data.path_column to the header of that column"),
    ("path,class\nimg/a.png,Bag\n", 1, "no column 'label' in the header (columns: path, class); "
     "name it 'label' or set data.label_column to the header of that column"),
])
def test_empty_files_and_missing_columns(text, line, message, tmp_path, cnnctl):
    train = tmp_path / "train.csv"
    train.write_text(text)
    config = tmp_path / "config.yaml"
    config.write_text(config_text(train))
    result = cnnctl("data", "check", config)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{config}:10: data.train_csv: {train}:{line}: {message}"]


def test_every_problem_is_counted_and_the_others_lines_named(images, cnnctl):
    root, made = images
    train = root / "train.csv"
    train.write_text(csv_text([(f"img/{made['train'][0][0]}", "Bag"), ("img/a.png", "Bag"),
                               ("", "Bag"), ("img/b.png", "Bag")]))
    config = root / "config.yaml"
    config.write_text(config_text(train))
    result = cnnctl("data", "check", config)
    assert result.stderr.splitlines() == [
        f"{config}:10: data.train_csv: {train}:3: image file img/a.png not found "
        f"({root}/img/a.png); fix the path (relative to {root}) or remove the row "
        "(2 more problems in this file, on lines 4, 5)"]


def test_test_labels_must_be_train_classes_and_val_csv_excludes_a_split(good, cnnctl):
    root, made, config = good
    (root / "test.csv").write_text(csv_text([(f"img/{made['test'][0][0]}", "Trouser"),
                                             (f"img/{made['test'][1][0]}", "Shirt")]))
    config.write_text(config_text(root / "train.csv", root / "test.csv"))  # sorted classes
    result = cnnctl("data", "check", config)
    assert result.stderr.splitlines() == [
        f"{config}:11: data.test_csv: {root / 'test.csv'}:3: unknown label 'Shirt': not one of "
        "the labels of data.train_csv (Bag, Sneaker, Trouser) nor a class index below 3; fix "
        "the row or list every class in data.class_names"]
    result = cnnctl("data", "check", config, "--set", f"data.val_csv={root / 'test.csv'}",
                    "--set", "data.validation_split=0.2")
    assert result.stderr.splitlines() == [
        "--set: data.val_csv: set either val_csv or validation_split, not both"]


# --------------------------------------------------------------------------- good files
def test_tsv_integer_labels_absolute_paths_and_other_columns(images, load_splits, collect):
    root, made = images
    index = {name: i for i, name in enumerate(CLASSES.values())}  # Trouser 0, Sneaker 1, Bag 2
    train = root / "train.tsv"
    train.write_text(csv_text([(str(root / "img" / name), str(index[label]), "x")
                               for name, label, _ in made["train"]],
                              header="image\tclass\tnote", sep="\t"))
    splits = load_splits({"source": "csv", "train_csv": str(train), "path_column": "image",
                          "label_column": "class"}, splits=("train",), batch_size=36)
    assert splits.class_names == ["0", "1", "2"]  # integer labels: the class indices
    assert splits.counts["train"] == 36 and splits.class_counts["train"] == {"0": 12, "1": 12,
                                                                           "2": 12}
    assert splits.files["train"] == [str(root / "img" / name) for name, _, _ in made["train"]]
    x, y = next(iter(splits.train))  # one shuffled epoch of all 36: the same images and labels
    expected = {made["train"][i][2].tobytes(): index[made["train"][i][1]] for i in range(36)}
    got = {x.numpy()[i, ..., 0].astype(np.uint8).tobytes(): int(y[i]) for i in range(36)}
    assert got == expected


def test_sorted_class_names_max_samples_and_validation_split(good, load_splits, collect):
    root, made, _ = good
    splits = load_splits({"source": "csv", "train_csv": str(root / "train.csv"),
                          "test_csv": str(root / "test.csv"), "max_train_samples": 30,
                          "validation_split": 0.2})
    assert splits.class_names == ["Bag", "Sneaker", "Trouser"]
    assert splits.counts == {"train": 24, "val": 6, "test": 12}
    # the rows in the file's order: the first 30, then 6 of them carved off as validation
    first = [str(root / "img" / name) for name, _, _ in made["train"][:30]]
    assert sorted(splits.files["train"] + splits.files["val"]) == sorted(first)
    test_x, test_y = collect(splits.test)
    np.testing.assert_array_equal(test_x[..., 0], np.stack([p for _, _, p in made["test"]]))
    assert [splits.class_names[i] for i in test_y] == [label for _, label, _ in made["test"]]


def test_trains_one_epoch_through_the_cli(good, cnnctl):
    root, made, config = good
    result = cnnctl("train", config, "--run-dir", root / "run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0 <= metrics["test"]["accuracy"] <= 1
    assert json.loads((root / "run" / "class_names.json").read_text()) == ["Trouser", "Sneaker",
                                                                             "Bag"]
    evaluated = cnnctl("eval", root / "run", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_check_knows_the_classes_without_reading_images(good, cnnctl):
    root, made, config = good
    config.write_text(config.read_text().replace("units: 3", "units: 5"))
    result = cnnctl("check", config)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{config}:7: model.layers[3].units: the model outputs 5 values but the data has 3 "
        "classes (Trouser, Sneaker, Bag); give the last layer units: 3"]


def test_data_check_lists_a_bad_image_and_training_skips_it(good, cnnctl, load_splits):
    root, made, config = good
    (root / "img" / made["train"][0][0]).write_bytes(b"not a png")
    result = cnnctl("data", "check", config, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    bad = str(root / "img" / made["train"][0][0])
    assert [u["path"] for u in report["unreadable"]] == [bad]
    assert report["source"] == "csv"
    assert report["splits"]["train"]["count"] == 35
    assert made["train"][0][1] == "Sneaker"
    assert report["splits"]["train"]["classes"] == {"Trouser": 12, "Sneaker": 11, "Bag": 12}
    assert report["splits"]["test"]["count"] == 12
    text = cnnctl("data", "check", config)
    assert f"  {bad}: {report['unreadable'][0]['reason']}" in text.stdout.splitlines()
    splits = load_splits({"source": "csv", "train_csv": str(root / "train.csv")},
                         splits=("train",))
    assert [path for path, _ in splits.skipped] == [bad] and splits.counts["train"] == 35


def test_delimiter_byte_order_mark_blank_lines_and_labels_by_index(images, load_splits):
    root, made = images
    rows = [(f"img/{name}", label if i % 2 else str(["Trouser", "Sneaker", "Bag"].index(label)))
            for i, (name, label, _) in enumerate(made["train"])]  # every other label an index
    text = csv_text(rows, header="path;label", sep=";").replace("\n", "\n\n", 1)  # a blank line
    (root / "labels.txt").write_text("\ufeff" + text, encoding="utf-8")
    splits = load_splits({"source": "csv", "train_csv": str(root / "labels.txt"),
                          "delimiter": ";", "class_names": ["Trouser", "Sneaker", "Bag"]},
                         splits=("train",))
    assert splits.class_names == ["Trouser", "Sneaker", "Bag"]
    assert splits.class_counts["train"] == {"Trouser": 12, "Sneaker": 12, "Bag": 12}


def test_class_names_are_distinct(config_errors, small_model_yaml):
    assert config_errors(small_model_yaml + "data: {source: csv, train_csv: t.csv, "
                         "class_names: [cat, dog, cat]}\n") == [
        "7: data.class_names: class 'cat' is named twice; give each class once"]
    assert config_errors(small_model_yaml + "data: {source: csv}\n") == [
        "7: data: source 'csv' needs `train_csv`"]


def test_files_decoded_per_epoch_at_another_size_and_colour(good, load_splits):
    root, made, _ = good
    splits = load_splits({"source": "csv", "train_csv": str(root / "train.csv"), "cache": False,
                          "image_size": [32, 32], "color_mode": "grayscale"},
                         input_shape=(32, 32, 3), splits=("train",), batch_size=36)
    x, y = next(iter(splits.train))
    assert x.shape == (36, 32, 32, 3)  # resized by tf.data, grey repeated into RGB
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert sorted(np.bincount(y.numpy()).tolist()) == [12, 12, 12]
