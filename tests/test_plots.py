"""plots.py: every function writes a real, non-blank PNG; colours and text checked on the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from cnnctl import plots
from cnnctl.errors import CnnctlError

HISTORY = """epoch,accuracy,learning_rate,loss,val_accuracy,val_loss
0,0.71,0.001,0.82,0.78,0.61
1,0.80,0.001,0.55,0.82,0.50
2,0.84,0.0005,0.45,0.83,0.47
"""


def png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_real_png(path: Path, min_size=(300, 200), max_size=(4000, 8000)) -> np.ndarray:
    pixels = png_pixels(path)
    height, width = pixels.shape[:2]
    assert min_size[0] <= width <= max_size[0] and min_size[1] <= height <= max_size[1]
    assert pixels.std() > 0  # not a blank canvas
    return pixels


def lines_by_label(ax) -> dict[str, list[float]]:
    return {line.get_label(): list(line.get_xdata()) for line in ax.get_lines()}


# --- curves ----------------------------------------------------------------------------------

def test_curves_with_validation(tmp_path):
    csv = tmp_path / "history.csv"
    csv.write_text(HISTORY)
    out = plots.curves(csv, tmp_path / "curves.png")
    assert out == tmp_path / "curves.png"
    assert_real_png(out)

    loss_ax, accuracy_ax = plots.curves_figure(csv).axes
    assert loss_ax.get_title() == "loss" and accuracy_ax.get_title() == "accuracy"
    # Epochs count from 1 on the x axis, and only whole epochs get ticks.
    assert lines_by_label(loss_ax) == {"train loss": [1, 2, 3], "validation loss": [1, 2, 3],
                                       "best epoch 3 (val_loss): best.keras": [3, 3]}
    assert list(accuracy_ax.get_lines()[1].get_ydata()) == [0.78, 0.82, 0.83]
    assert all(float(t).is_integer() for t in loss_ax.get_xticks())


def test_curves_without_validation_or_accuracy(tmp_path):
    csv = tmp_path / "history.csv"
    csv.write_text("epoch,accuracy,loss\n0,0.5,1.3\n1,0.6,1.1\n")
    loss_ax, accuracy_ax = plots.curves_figure(csv).axes
    # No validation split: best.keras was picked by the training loss, as training does.
    assert list(lines_by_label(loss_ax)) == ["train loss", "best epoch 2 (loss): best.keras"]
    assert list(lines_by_label(accuracy_ax)) == ["train accuracy", "best epoch 2 (loss): best.keras"]
    assert_real_png(plots.curves(csv, tmp_path / "curves.png"))

    csv.write_text("epoch,loss\n1,1.3\n")  # one epoch, no metrics
    loss_ax, empty_ax = plots.curves_figure(csv).axes
    assert [t.get_text() for t in empty_ax.texts] == ["no metric logged besides loss"]
    assert_real_png(plots.curves(csv, tmp_path / "one_epoch.png"))


def test_curves_errors(tmp_path):
    with pytest.raises(CnnctlError) as e:
        plots.curves(tmp_path / "history.csv", tmp_path / "curves.png")
    assert str(e.value) == (f"no training history at {tmp_path}/history.csv: train first, or "
                            "pass a run directory whose history.csv exists")
    (tmp_path / "history.csv").write_text("epoch,accuracy,loss\n")
    with pytest.raises(CnnctlError, match="has no epochs with a loss column"):
        plots.curves(tmp_path / "history.csv", tmp_path / "curves.png")


# --- confusion matrix --------------------------------------------------------------------------

def confusion(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.integers(0, 5, (n, n))
    matrix[np.diag_indices(n)] += 40
    return matrix


@pytest.mark.parametrize("n", [2, 10, 100])
def test_confusion_matrix_png(tmp_path, n):
    names = [f"class_{i}" for i in range(n)]
    out = plots.confusion_matrix(confusion(n), names, tmp_path / "cm.png")
    pixels = assert_real_png(out)
    if n == 100:
        assert min(pixels.shape[:2]) >= 1500  # room for 100 readable labels


def test_confusion_matrix_cells_text_only_when_it_fits():
    small = plots.confusion_matrix_figure(np.array([[8, 2], [1, 9]]), ["cat", "dog"])
    ax = small.axes[0]
    assert [t.get_text() for t in ax.texts] == ["80%\n8", "20%\n2", "10%\n1", "90%\n9"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]
    assert ax.get_title() == "20 images, 85.0% correct"

    counts = plots.confusion_matrix_figure(np.array([[8, 2], [1, 9]]), ["cat", "dog"],
                                           normalize=False)
    assert [t.get_text() for t in counts.axes[0].texts] == ["8", "2", "1", "9"]

    big = plots.confusion_matrix_figure(confusion(100), [f"c{i}" for i in range(100)]).axes[0]
    assert len(big.texts) == 0
    assert len(big.get_yticklabels()) == 100
    assert all(t.get_rotation() == 90 for t in big.get_xticklabels())


def test_confusion_matrix_with_an_empty_class_and_bad_shape(tmp_path):
    matrix = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 3]])  # no images of the middle class
    fig = plots.confusion_matrix_figure(matrix, ["a", "b", "c"])
    assert [t.get_text().split("\n")[0] for t in fig.axes[0].texts[3:6]] == ["0%", "0%", "0%"]
    with pytest.raises(ValueError, match="does not match 2 class names"):
        plots.confusion_matrix(matrix, ["a", "b"], tmp_path / "cm.png")


# --- predictions -------------------------------------------------------------------------------

def item(name, true_label, top, image=None) -> dict:
    if image is None:
        image = np.random.default_rng(len(name)).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    return {"path": f"/data/test/{name}", "image": image, "true_label": true_label,
            "top": [{"label": label, "prob": p} for label, p in top]}


def test_prediction_bars_coloured_by_correctness(tmp_path):
    items = [
        item("right.png", "cat", [("cat", 0.7), ("dog", 0.2), ("bird", 0.1)]),
        item("wrong.png", "cat", [("dog", 0.6), ("cat", 0.3), ("bird", 0.1)]),
        item("unknown.jpg", None, [("bird", 0.5), ("cat", 0.4), ("dog", 0.1)],
             image=np.random.default_rng(1).uniform(0, 255, (32, 32, 3))),
    ]
    fig = plots.predictions_figure(items)
    image_axes, bar_axes = fig.axes[0::2], fig.axes[1::2]
    top_colours = [ax.patches[0].get_facecolor() for ax in bar_axes]
    assert top_colours == [to_rgba("tab:blue"), to_rgba("tab:red"), to_rgba("tab:gray")]
    for ax in bar_axes:
        assert all(p.get_facecolor() == to_rgba("lightgray") for p in ax.patches[1:])
    assert [ax.get_title() for ax in image_axes] == [
        "right.png\ntrue: cat", "wrong.png\ntrue: cat", "unknown.jpg"]
    assert [t.get_text() for t in bar_axes[1].get_yticklabels()] == ["dog", "cat", "bird"]
    assert [p.get_width() for p in bar_axes[1].patches] == [0.6, 0.3, 0.1]
    assert fig.get_suptitle() == ""

    out = plots.predictions(items, tmp_path / "predictions.png")
    pixels = assert_real_png(out)
    assert pixels.shape[0] > pixels.shape[1] / 2  # three rows, one under the other


def test_predictions_show_at_most_32_rows_and_say_so(tmp_path):
    items = [item(f"{i}.png", "cat", [("cat", 0.9), ("dog", 0.1)]) for i in range(40)]
    fig = plots.predictions_figure(items)
    assert len(fig.axes) == 2 * plots.MAX_PREDICTION_ROWS
    assert fig.get_suptitle() == "showing the first 32 of 40 images"
    assert_real_png(plots.predictions(items[:2], tmp_path / "two.png"))


def test_curves_of_history_from_before_epochs_counted_from_1(tmp_path):
    csv = tmp_path / "history.csv"
    csv.write_text(HISTORY.replace("\n0,", "\nx,").replace("\n2,", "\n3,").replace("\n1,", "\n2,")
                   .replace("\nx,", "\n1,"))
    new_loss_ax = plots.curves_figure(csv).axes[0]
    csv.write_text(HISTORY)  # epochs 0, 1, 2: a run of an older cnnctl
    old_loss_ax = plots.curves_figure(csv).axes[0]
    assert lines_by_label(new_loss_ax) == lines_by_label(old_loss_ax)
    assert lines_by_label(new_loss_ax)["train loss"] == [1, 2, 3]


def test_curves_best_epoch_of_a_maximised_monitor(tmp_path):
    csv = tmp_path / "history.csv"
    csv.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n"
                   "1,0.5,1.0,0.60,0.9\n2,0.6,0.8,0.70,0.7\n3,0.7,0.6,0.65,0.8\n")
    loss_ax = plots.curves_figure(csv, monitor="val_accuracy").axes[0]
    assert "best epoch 2 (val_accuracy): best.keras" in lines_by_label(loss_ax)
    assert "best epoch 2 (val_loss): best.keras" in lines_by_label(plots.curves_figure(csv).axes[0])


def test_curves_leave_out_empty_columns(tmp_path):
    # A run without a validation split, as older files recorded it: val_ columns with no value.
    csv = tmp_path / "history.csv"
    csv.write_text("epoch,accuracy,epoch_seconds,loss,val_accuracy,val_epoch_seconds,val_loss\n"
                   "1,0.5,3.1,1.3,,,\n2,0.6,3.0,1.1,,,\n")
    loss_ax, accuracy_ax = plots.curves_figure(csv).axes
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == [
        "train loss", "best epoch 2 (loss): best.keras"]
    assert [t.get_text() for t in accuracy_ax.get_legend().get_texts()] == [
        "train accuracy", "best epoch 2 (loss): best.keras"]


def test_curves_of_one_epoch_read_well(tmp_path):
    csv = tmp_path / "history.csv"
    csv.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n1,0.8125,0.55,0.84,0.47\n")
    loss_ax, accuracy_ax = plots.curves_figure(csv).axes
    # one dot in a unit-wide axis around epoch 1, values from 0; accuracy up to 1
    assert loss_ax.get_xlim() == (0.5, 1.5) and accuracy_ax.get_xlim() == (0.5, 1.5)
    assert list(loss_ax.get_xticks()) == [1] and list(accuracy_ax.get_xticks()) == [1]
    assert loss_ax.get_ylim() == (0, 0.55 * 1.25)
    assert accuracy_ax.get_ylim() == (0, 1.05)
    # the figures are written beside their points
    assert [t.get_text() for t in accuracy_ax.texts] == ["0.8125", "0.84"]
    assert [t.get_text() for t in loss_ax.texts] == ["0.55", "0.47"]
    assert_real_png(plots.curves(csv, tmp_path / "curves.png"))
