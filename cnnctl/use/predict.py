"""Classify image files with a trained model: top-k labels per image, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import glob
import io
import os

import numpy as np

from cnnctl.data import images
from cnnctl.errors import CnnctlError


def run(path, inputs: list[str], *, top_k: int = 3, plot=None, batch_size: int = 64) -> list[dict]:
    """`cnnctl predict`: classify images with a run's model (or a .keras file).

    Args:
        path: a run directory or a .keras file; class names come from class_names.json beside
            it (else "0", "1", ...), and `data.color_mode` from the run's config when there is one.
        inputs: image files, folders or globs (see `predict`).
        top_k: labels per image.
        plot: a PNG to draw the readable images (at most the first 32) with their top-k bars
            into; the true label is taken from each image's folder name when it is a class.
            An existing file there is replaced only when it is a previous prediction sheet.

    Returns:
        The results of `predict`.

    Raises:
        CnnctlError: the model cannot be loaded, or there is nothing readable to plot.
    """
    from pathlib import Path

    from cnnctl import outputs
    from cnnctl.use import trained

    if plot is not None:  # before the model loads: a refusal costs nothing
        outputs.check_file(Path(plot), "--plot", "predict",
                           lambda p: outputs.is_png_of(p, "predict"), what="a prediction sheet (PNG)")
    opened = trained.open_model(path)
    model, class_names, color_mode = opened.model, opened.class_names, opened.color_mode
    results = predict(model, class_names, inputs, top_k, batch_size, color_mode,
                      input_shape=opened.input_shape)
    if plot is not None:
        from cnnctl import plots

        shown = [r for r in results if "top" in r][:plots.MAX_PREDICTION_ROWS]
        if not shown:
            raise CnnctlError(f"--plot {plot}: none of the images could be read; nothing to plot")
        pixels, _ = opened.load_images([r["path"] for r in shown])
        outputs = int(model.output_shape[-1])
        names = class_names or [str(i) for i in range(2 if outputs == 1 else outputs)]
        plots.predictions([{**r, "image": image, "true_label": true_label(r["path"], names)}
                           for r, image in zip(shown, pixels)], Path(plot))
    return results


def predict(model, class_names: list[str] | None, inputs: list[str], top_k: int = 3,
            batch_size: int = 64, color_mode: str | None = None,
            input_shape: tuple | None = None) -> list[dict]:
    """Predict the class of every image the inputs name.

    Args:
        model: a Keras classifier on images; softmax outputs (or a single sigmoid unit, read as
            two classes with probabilities [1 - p, p]). Outputs that are not probabilities
            (logits) go through softmax / sigmoid first.
        class_names: one per output (two for a sigmoid model); None: "0", "1", ...
        inputs: image files, folders (all images inside, recursively) or glob patterns.
        top_k: how many labels to give per image (at most the number of classes).
        batch_size: images decoded and run through the model at a time.
        color_mode: `data.color_mode` of the training config, if set.
        input_shape: [height, width, channels] to load images at; default: the model's
            (`TrainedModel.input_shape` gives it for a model of any size).

    Returns:
        One dict per image, in input order: {"path", "top": [{"label", "prob"}, ...]} with the
        most likely label first, or {"path", "error"} for a file that cannot be read or an input
        that names no image.

    Raises:
        CnnctlError: the model is not an image classifier or class_names do not fit it.
    """
    if input_shape is None:
        input_shape = (tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list)
                       else ())
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or None in input_shape:
        raise CnnctlError(f"the model takes inputs of shape {model.input_shape}; predict needs "
                          "a model with one fixed-size image input [height, width, channels]")
    outputs = int(model.output_shape[-1])
    classes = 2 if outputs == 1 else outputs
    names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
    if len(names) != classes:
        raise CnnctlError(f"the model predicts {classes} classes but there are {len(names)} class "
                          f"names ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    top_k = max(1, min(top_k, classes))

    results: list[dict] = []
    pending: list[str] = []  # files waiting for the next batch

    def flush():
        batch, status = images.load_images(pending, input_shape, color_mode)
        probs = probabilities(model.predict_on_batch(batch)) if len(batch) else []
        rows = iter(probs)
        for path, error in status:
            if error is not None:
                results.append({"path": path, "error": error})
                continue
            results.append({"path": path, "top": top_labels(next(rows), names, top_k)})
        pending.clear()

    for item in inputs:
        files, error = expand(item)
        if error:
            if pending:
                flush()
            results.append({"path": item, "error": error})
        for file in files:
            pending.append(file)
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return results


def expand(item: str) -> tuple[list[str], str | None]:
    """The image files an input names (a file, a folder, a glob), or why there are none."""
    if os.path.isdir(item):
        files = images.list_images(item)
        kinds = ", ".join(images.IMAGE_EXTENSIONS)
        return files, None if files else f"no image files ({kinds}) in this folder"
    if os.path.exists(item):
        return [item], None
    if glob.has_magic(item):
        files = []
        for match in sorted(glob.glob(item, recursive=True)):
            if os.path.isdir(match):
                files.extend(images.list_images(match))
            elif images.is_image_file(match):
                files.append(match)
        return files, None if files else "no image files match this pattern"
    return [], "no such file or folder"


def top_labels(p: np.ndarray, names: list[str], k: int) -> list[dict]:
    """The `k` most likely classes of one image's probabilities, best first (ties in class
    order): [{"label", "prob"}, ...]."""
    probs = p.tolist()  # Python floats: sorting a few classes is faster than NumPy's dispatch
    best = sorted(range(len(probs)), key=lambda i: -probs[i])[:k]  # stable: ties in class order
    return [{"label": names[i], "prob": probs[i]} for i in best]


def probabilities(outputs) -> np.ndarray:
    """[N, classes] probabilities from softmax or sigmoid outputs, or from logits."""
    out = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    if out.shape[1] == 1:
        p = out[:, 0] if np.all((out >= 0) & (out <= 1)) else 1 / (1 + np.exp(-out[:, 0]))
        return np.stack([1 - p, p], axis=1)
    if np.all(out >= 0) and np.allclose(out.sum(axis=1), 1, atol=1e-3):
        return out
    shifted = np.exp(out - out.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def true_label(path: str, class_names: list[str]) -> str | None:
    """The class an image's folder name says it is (data/test/cat/1.jpg: cat), or None."""
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return parent if parent in class_names else None


def format_table(results: list[dict]) -> str:
    """One line per image: path, then each top label with its probability, best first."""
    if not results:
        return "no images"
    width = max(len("path"), *(len(r["path"]) for r in results))
    k = max((len(r.get("top", [])) for r in results), default=0)
    header = f"{'path':<{width}}  " + "  ".join(f"{f'top{i + 1}':<16} {'prob':>5}"
                                                 for i in range(k))
    lines = [header.rstrip()]
    for r in results:
        if "error" in r:
            lines.append(f"{r['path']:<{width}}  error: {r['error']}")
        else:
            lines.append(f"{r['path']:<{width}}  " + "  ".join(
                f"{t['label']:<16} {t['prob']:>5.3f}" for t in r["top"]))
    return "\n".join(lines)


def to_csv(results: list[dict]) -> str:
    """CSV with one row per image: path, top1_label, top1_prob, ..., topK_label, topK_prob,
    error (empty unless the image could not be read; then the label columns are empty)."""
    k = max((len(r.get("top", [])) for r in results), default=0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", *[f"top{i + 1}_{col}" for i in range(k) for col in ("label", "prob")],
                     "error"])
    for r in results:
        cells = []
        for t in r.get("top", []):
            cells += [t["label"], f"{t['prob']:.6f}"]
        cells += [""] * (2 * k - len(cells))
        writer.writerow([r["path"], *cells, r.get("error", "")])
    return out.getvalue()
