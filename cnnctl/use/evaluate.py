"""Score a trained model on labelled data: accuracy, loss, per-class metrics, confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cnnctl import runs
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError, ConfigValueError
from cnnctl.data.splits import SPLITS
from cnnctl.model import build as model_lib
from cnnctl.train import class_metrics
from cnnctl.use import trained

FULL_MATRIX_MAX_CLASSES = 20  # above this the text report lists the most confused pairs
MOST_CONFUSED = 10


# --- scoring ---------------------------------------------------------------------------------

def evaluate(model: keras.Model, dataset, class_names: list[str],
             from_logits: bool | None = None) -> dict:
    """Predict every batch of `dataset` and score the predictions against its labels.

    Images and labels are taken from the same pass over the data, so a dataset that reshuffles
    on every iteration is scored correctly.

    Args:
        model: a classifier ending in softmax (C units) or sigmoid (1 unit, two classes).
        dataset: batches of (images, labels); labels are class indices [B], one-hot [B, C]
            or, for a 1-unit model, 0/1 values [B] or [B, 1].
        class_names: the names of the model's classes, in output order.
        from_logits: whether the model outputs logits; None: see `report_from_predictions`.

    Returns:
        See `report_from_predictions`.

    Raises:
        CnnctlError: the data set is empty, or labels and model do not fit the class names.
    """
    batches = dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") else dataset
    labels, outputs = [], []
    for batch in batches:
        images, batch_labels = batch[0], batch[1]
        outputs.append(np.asarray(model.predict_on_batch(images)))
        labels.append(np.asarray(batch_labels))
    if not outputs:
        raise CnnctlError("no images to evaluate: point the data section at a split with images")
    return report_from_predictions(np.concatenate(labels), np.concatenate(outputs), class_names,
                                   from_logits)


def report_from_predictions(labels: np.ndarray, outputs: np.ndarray,
                            class_names: list[str], from_logits: bool | None = None) -> dict:
    """Score model outputs against labels.

    Args:
        labels: class indices [N], one-hot [N, C], or 0/1 [N] / [N, 1] for a 1-unit output.
        outputs: probabilities [N, C] (softmax) or [N, 1] (sigmoid), or logits.
        class_names: C names (two for a 1-unit output).
        from_logits: whether `outputs` are logits (softmax / sigmoid turns them into
            probabilities); None, for a model whose training is not known (a bare .keras file):
            logits are recognised by values outside [0, 1] (or rows not summing to 1).

    Returns:
        {"accuracy", "loss" (mean cross-entropy, without label smoothing or weight
        regularization, so it can differ from the training loss), "num_samples", "class_names",
        "per_class": {name: {"precision", "recall", "f1", "support"}}, "macro_f1" (the mean F1
        of all classes), "balanced_accuracy" (the mean recall of the classes that have images),
        "confusion_matrix" (rows true, columns predicted, lists of ints)}.

    Raises:
        CnnctlError: labels, outputs and class names do not agree.
    """
    outputs = np.asarray(outputs, dtype=np.float32)
    labels = np.asarray(labels)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    n, units = outputs.shape
    binary = units == 1
    num_classes = 2 if binary else units
    if len(class_names) != num_classes:
        raise CnnctlError(f"the model predicts {num_classes} classes "
                          f"({'1 sigmoid unit' if binary else f'{units} units'}) but "
                          f"{len(class_names)} class names were given: use the class_names.json "
                          "of the run that trained this model")
    if len(set(class_names)) != len(class_names):
        raise CnnctlError(f"class names repeat: {class_names}; each class needs its own name")
    if n == 0:
        raise CnnctlError("no images to evaluate: point the data section at a split with images")
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} predictions")

    if from_logits is None:
        # float16 softmax rows (mixed precision) can miss 1 by ~1e-3, hence the loose tolerance
        from_logits = bool(outputs.min() < 0 or outputs.max() > 1 or (
            not binary and np.abs(outputs.sum(axis=1) - 1).max() > 1e-2))
    probs = keras.ops.convert_to_numpy(
        keras.ops.sigmoid(outputs) if binary else keras.ops.softmax(outputs, axis=-1)
    ) if from_logits else outputs

    if binary:
        targets = labels.reshape(n, 1).astype(np.float32)
        true = np.rint(targets[:, 0]).astype(np.int64)
        cross_entropy = keras.losses.binary_crossentropy
    elif labels.ndim == 2 and labels.shape[1] == units:
        targets = labels.astype(np.float32)
        true = labels.argmax(axis=1)
        cross_entropy = keras.losses.categorical_crossentropy
    else:
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise CnnctlError(f"labels of shape {labels.shape[1:]} do not fit a model with "
                              f"{units} outputs: give class indices or one-hot vectors of "
                              f"length {units}")
        targets = true = labels.astype(np.int64)
        cross_entropy = keras.losses.sparse_categorical_crossentropy
    if true.min() < 0 or true.max() >= num_classes:
        raise CnnctlError(f"labels run from {true.min()} to {true.max()} but the model has "
                          f"{num_classes} classes: the data and the model do not belong together")
    # 0.5 is Keras's binary_accuracy threshold, so the accuracies agree
    predicted = (probs[:, 0] > 0.5).astype(np.int64) if binary else probs.argmax(axis=1)
    losses = keras.ops.convert_to_numpy(cross_entropy(targets, outputs, from_logits=from_logits))

    matrix = confusion_counts(true, predicted, num_classes)
    per_class = per_class_metrics(matrix, class_names)
    return {
        "accuracy": float(np.trace(matrix) / n),
        "loss": float(np.mean(losses, dtype=np.float64)),
        "num_samples": int(n),
        "class_names": list(class_names),
        "per_class": per_class,
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])),
        "balanced_accuracy": class_metrics.balanced_accuracy(matrix),
        "confusion_matrix": matrix.tolist(),
    }


def confusion_counts(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Count (true, predicted) pairs: entry [i, j] is how many of class i were predicted j."""
    pairs = np.asarray(true, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes,
                                                                           num_classes)


def per_class_metrics(matrix: np.ndarray, class_names: list[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support of each class from a confusion matrix.

    A ratio with nothing to divide by (no images of a class, or none predicted as it) is 0.
    """
    matrix = np.asarray(matrix)
    hits = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)

    def ratio(a, b):
        return np.divide(a, b, out=np.zeros(len(a)), where=b > 0)

    precision = ratio(hits, predicted)
    recall = ratio(hits, support)
    f1 = ratio(2 * precision * recall, precision + recall)
    return {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)}


# --- text and files --------------------------------------------------------------------------

def _short(name: str, width: int) -> str:
    """Cut the middle out of a long name: class names often differ only at the end."""
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return name[:width - 1 - tail] + "~" + name[len(name) - tail:]


def format_report(report: dict, class_names: list[str]) -> str:
    """The report as text: totals, a per-class table, and the confusion matrix.

    Above 20 classes the matrix would not fit a terminal, so the most confused
    (true, predicted) pairs are listed instead.
    """
    matrix = np.asarray(report["confusion_matrix"])
    lines = [
        f"accuracy  {report['accuracy']:.4f}  ({int(np.trace(matrix))} of "
        f"{report['num_samples']} images)",
        f"loss      {report['loss']:.4f}",
        f"macro F1  {report['macro_f1']:.4f}",
        f"balanced accuracy  {report['balanced_accuracy']:.4f}",
        "",
        *_class_table(report["per_class"], class_names),
        "",
    ]
    if len(class_names) <= FULL_MATRIX_MAX_CLASSES:
        lines += _matrix_table(matrix, class_names)
    else:
        lines += _most_confused(matrix, class_names)
    return "\n".join(lines)


def _class_table(per_class: dict, class_names: list[str]) -> list[str]:
    width = min(max(len("class"), *(len(c) for c in class_names)), 24)
    lines = [f"{'class':<{width}}  precision  recall      f1  support"]
    for name in class_names:
        m = per_class[name]
        lines.append(f"{_short(name, width):<{width}}  {m['precision']:9.4f}  "
                     f"{m['recall']:6.4f}  {m['f1']:6.4f}  {m['support']:7d}")
    return lines


def _matrix_table(matrix: np.ndarray, class_names: list[str]) -> list[str]:
    width = max(6, len(str(matrix.max())))
    heads = [c if len(c) <= width else c[:width - 1] + "~" for c in class_names]
    rows = list(class_names)
    if len(set(heads)) < len(heads):  # abbreviations collide: number the columns instead
        heads = [str(i) for i in range(len(class_names))]
        rows = [f"{i:>2} {name}" for i, name in enumerate(class_names)]
    row_width = min(max(len(r) for r in rows), 18)
    lines = ["confusion matrix (rows: true class, columns: predicted class)",
             " " * row_width + "".join(f" {h:>{width}}" for h in heads)]
    for name, counts in zip(rows, matrix):
        lines.append(f"{_short(name, row_width):<{row_width}}"
                     + "".join(f" {v:>{width}}" for v in counts))
    return lines


def _most_confused(matrix: np.ndarray, class_names: list[str]) -> list[str]:
    mistakes = matrix.copy()
    np.fill_diagonal(mistakes, 0)
    # most frequent first; ties in class order
    order = np.argsort(-mistakes, axis=None, kind="stable")[:MOST_CONFUSED]
    pairs = [np.unravel_index(k, mistakes.shape) for k in order if mistakes.flat[k] > 0]
    lines = [f"most confused pairs ({len(class_names)} classes: the full matrix is in the JSON "
             "report and confusion_matrix.png)"]
    if not pairs:
        return lines + ["  none: every image was classified correctly"]
    names = {k: _short(class_names[k], 24) for pair in pairs for k in pair}
    true_width = max(len(names[i]) for i, _ in pairs)
    predicted_width = max(len(names[j]) for _, j in pairs)
    support = matrix.sum(axis=1)
    for i, j in pairs:
        lines.append(f"  {names[i]:>{true_width}} -> {names[j]:<{predicted_width}} "
                     f"{mistakes[i, j]:6d}  ({mistakes[i, j] / support[i]:.1%} of {names[i]})")
    return lines


def output_files(path: Path, split: str, data_dir: Path | None = None) -> dict[str, Path]:
    """Where `cnnctl eval` writes: `eval_<split>.json` and `confusion_matrix_<split>.png` in a
    run directory, or beside a .keras file with its name in front (`last.eval_test.json`);
    `--data DIR` evaluations are tagged `data-<folder name>` instead of the split."""
    path = Path(path)
    tag = split if data_dir is None else f"data-{Path(data_dir).resolve().name}"
    folder, prefix = (path, "") if path.is_dir() else (path.parent, f"{path.stem}.")
    return runs.eval_files(folder, tag, prefix)


def check_outputs(files: dict[str, Path]) -> None:
    """Refuse files in the way of `output_files` that earlier evaluations did not write.

    Raises:
        CnnctlError: names the file.
    """
    from cnnctl import outputs

    advice = "move it away first, or evaluate a copy of the model in another folder"
    outputs.check_file(files["json"], "", "eval", outputs.is_eval_json,
                       what="an evaluation report", advice=advice)
    outputs.check_file(files["confusion_matrix"], "", "eval",
                       lambda p: outputs.is_png_of(p, "eval"), what="a confusion matrix",
                       advice=advice)


def write_report(report: dict, class_names: list[str], files: dict[str, Path]) -> dict[str, Path]:
    """Write the report as JSON and its confusion matrix as PNG to `files` (see
    `output_files`), each renamed into place once complete.

    Returns:
        `files`.
    """
    from cnnctl import outputs, plots

    outputs.write_text(files["json"], json.dumps(report, indent=2) + "\n")
    plots.confusion_matrix(np.asarray(report["confusion_matrix"]), list(class_names),
                           files["confusion_matrix"])
    return files


def run(path: Path, *, split: str = "test", data_dir: Path | None = None,
        tta: str | None = None) -> tuple[dict, list[str], dict]:
    """`cnnctl eval`: score a run's checkpoint (or a .keras file) on a split or a folder.

    `tta`: "flip" or "none"; None takes the run's train.test_time_augmentation ("none" for a
    .keras file).

    Returns:
        (report, class names, files written).
    Raises:
        CnnctlError: no such split, no data to evaluate on, classes that do not match.
    """
    from cnnctl.config import load as config_lib
    from cnnctl.config import schema as schema_lib
    from cnnctl.data import load as data_lib
    from cnnctl import runs

    path = Path(path)
    if split not in SPLITS:
        raise CnnctlError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    if tta not in (None, "none", "flip"):
        raise CnnctlError(f"--tta {tta!r}: choose none or flip")
    files = output_files(path, split, data_dir)
    if path.exists():
        check_outputs(files)  # before minutes of loading and predicting
    opened = trained.open_model(path)  # a model it cannot open says so first
    if data_dir is None:
        runs.check_run_dir(path)
    model, class_names = opened.model, opened.class_names
    input_shape = opened.input_shape
    label_mode = "binary" if model.output_shape[-1] == 1 else "int"
    if data_dir is not None:
        # a folder of class subfolders, read like a test folder of the run's data
        config = schema_lib.Config.model_validate({
            "model": {"input_shape": list(input_shape)},
            "data": {"source": "folder", "train_dir": str(data_dir), "test_dir": str(data_dir)}})
        split = "test"
    elif path.is_dir():
        loaded = runs.load_config(path)
        config = loaded.config
    else:
        raise CnnctlError(f"{path}: a .keras file has no data attached; give --data DIR (a folder "
                          "with one subfolder per class) or evaluate its run directory")
    try:
        with config_lib.located(config if data_dir is not None else loaded):
            splits = data_lib.load(config, input_shape=input_shape, label_mode=label_mode,
                                   splits=(split,))
    except ConfigValueError as e:  # --data: the config is cnnctl's own, not a file
        raise CnnctlError(f"--data: {e.detail}") from None
    if class_names is None:
        class_names = splits.class_names
    elif data_dir is not None and splits.class_names != class_names:
        raise CnnctlError(f"{data_dir}: its class folders ({', '.join(splits.class_names)}) are not "
                          f"the model's classes ({', '.join(class_names)}); give a folder with "
                          "one subfolder per model class")
    if tta is None:
        tta = config.train.test_time_augmentation if path.is_dir() else "none"
    if tta == "flip":
        model = model_lib.with_flip_tta(model)
    dataset = getattr(splits, split)
    if dataset is None:
        raise CnnctlError(f"{path}: the run has no {split} split (set data.validation_split or "
                          "data.val_dir / data.test_dir when training); try --split test")
    # a run's model gives probabilities (open_model adds the softmax of a from_logits run)
    report = evaluate(model, dataset, class_names,
                      from_logits=False if opened.gives_probabilities else None)
    report["test_time_augmentation"] = tta
    return report, class_names, write_report(report, class_names, files)
