"""Training curves, confusion matrices and prediction sheets as PNG files (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

MAX_PREDICTION_ROWS = 32  # beyond this a prediction sheet gets too tall to read or open
CELL_TEXT_MAX_CLASSES = 30  # above this, confusion-matrix cells are too small for numbers

RIGHT_COLOUR = "tab:blue"
WRONG_COLOUR = "tab:red"
UNKNOWN_COLOUR = "tab:gray"
OTHER_COLOUR = "lightgray"

_NOT_METRICS = {"epoch", "loss", "learning_rate", "lr", "epoch_seconds", "phase"}


# --- user text ------------------------------------------------------------------------------

MAX_LABEL_CHARS = 40  # a class name on an axis or a bar
MAX_TITLE_CHARS = 80  # a file name in a title

# Fonts that carry CJK glyphs, tried as fallbacks after the default font when installed.
_CJK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
              "Noto Sans CJK", "Source Han Sans", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
              "Droid Sans Fallback", "IPAGothic", "Unifont")
_fonts_set = False
_charmap: set[int] | None = None
_warned_under: object = None  # the message handler of the command that was warned


def _use_fallback_fonts() -> None:
    """Once: append an installed CJK font to font.family (matplotlib >= 3.6 falls back to it
    for glyphs the first font lacks)."""
    global _fonts_set
    import warnings

    # `literal` says it once per command; matplotlib would say it for every glyph and figure
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
    if _fonts_set:
        return
    _fonts_set = True
    import matplotlib
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    found = [name for name in _CJK_FONTS if name in installed]
    family = list(matplotlib.rcParams["font.family"])
    if found and found[0] not in family:
        matplotlib.rcParams["font.family"] = [*family, found[0]]


def _drawable() -> set[int]:
    """The code points the plot fonts (font.family, fallbacks included) have glyphs for."""
    global _charmap
    if _charmap is None:
        import matplotlib
        from matplotlib import font_manager
        from matplotlib.ft2font import FT2Font

        points: set[int] = set()
        for family in matplotlib.rcParams["font.family"]:
            try:
                path = font_manager.findfont(font_manager.FontProperties(family=family),
                                             fallback_to_default=False)
                points |= set(FT2Font(path).get_charmap())
            except Exception:  # noqa: BLE001  a font that cannot be read draws nothing
                continue
        if not points:  # no family resolved on its own: matplotlib draws with its default font
            points = set(FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap())
        _charmap = points | set(range(32, 127))  # printable ASCII: every font has it
    return _charmap


def _check_glyphs(text: str) -> None:
    """Warn once per command (one line) about characters no plot font can draw."""
    global _warned_under
    from cnnctl import messages

    under = messages.LOGGER.handlers[0] if messages.LOGGER.handlers else messages.LOGGER
    if _warned_under is under:
        return
    missing = [ch for ch in text if not ch.isspace() and ord(ch) not in _drawable()]
    if missing:
        _warned_under = under
        messages.warn(f"class names with characters the plot font lacks (e.g. {missing[0]!r}): "
                      "they draw as boxes; install fonts-noto-cjk")


def literal(text, limit: int = MAX_LABEL_CHARS) -> str:
    """User text (a class or file name) as matplotlib draws it verbatim: control and other
    unprintable characters as escapes (\\x07), cut to `limit` characters (ending in "..."), and
    every `$` escaped so that mathtext never parses it."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace")
                   .decode("ascii") for ch in str(text))
    if len(text) > limit:
        text = text[:max(limit - 3, 1)] + "..."
    _check_glyphs(text)
    return text.replace("$", r"\$")


def new_figure(width: float, height: float):
    # A bare Figure draws with Agg and never touches pyplot's global figure list, so nothing
    # stays open after saving, whatever backend the user's matplotlib is set to.
    from matplotlib.figure import Figure

    _use_fallback_fonts()
    return Figure(figsize=(width, height), layout="constrained")


def save(fig, out: Path, command: str, dpi: int = 100) -> Path:
    """Write `fig` as the PNG `out`, marked as an output of `cnnctl COMMAND` (so that the command
    may replace it later) and renamed into place once complete."""
    import warnings

    from cnnctl import outputs

    with warnings.catch_warnings():  # `literal` said it once; not once per glyph
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        outputs.write_file(Path(out), lambda tmp: fig.savefig(
            tmp, dpi=dpi, format="png", metadata=outputs.png_metadata(command)))
    fig.clear()
    return Path(out)


# --- training curves -------------------------------------------------------------------------

def _read_history(history_csv: Path) -> dict[str, list[float]]:
    """Columns of a history.csv as float lists ("NA" and blanks become NaN), epochs counted
    from 1 whatever the file counts from (files of older runs count from 0); a column with no
    value at all (e.g. a validation metric of a run without a validation split) is left out."""
    from cnnctl import runs

    path = Path(history_csv)
    if not path.is_file():
        raise CnnctlError(f"no training history at {path}: train first, or pass a run "
                          "directory whose history.csv exists")
    rows = runs.read_history(path)
    if not rows or "loss" not in rows[0]:
        raise CnnctlError(f"{path} has no epochs with a loss column: it is not a finished "
                          "Keras CSVLogger file; train for at least one epoch")

    def number(text: str | None) -> float:
        try:
            return float(text)
        except (TypeError, ValueError):
            return math.nan

    columns = {name: [number(row.get(name)) for row in rows] for name in rows[0]}
    columns = {name: values for name, values in columns.items()
               if name in ("epoch", "loss") or any(math.isfinite(v) for v in values)}
    shift = 1 - runs.first_epoch(rows)
    epochs = columns.get("epoch")
    if epochs is None or not all(math.isfinite(e) for e in epochs):
        columns["epoch"] = [float(i) for i in range(1, len(rows) + 1)]
    else:
        columns["epoch"] = [e + shift for e in epochs]
    return columns


def best_epoch(history: dict[str, list[float]], monitor: str) -> tuple[int, str] | None:
    """The epoch (counted from 1) whose `monitor` value picked best.keras, and the column it was
    read from: `monitor` itself, or its training counterpart when the run had no validation
    split (`val_loss` -> `loss`, as training does). None when neither column has a value."""
    from cnnctl import runs

    for column in (monitor, monitor.removeprefix("val_")):
        values = np.asarray(history.get(column, []), dtype=float)
        if values.size and np.isfinite(values).any():
            pick = np.nanargmax if runs.monitor_mode(column) == "max" else np.nanargmin
            return int(history["epoch"][int(pick(values))]), column
    return None


def curves_figure(history_csv: Path, monitor: str = "val_loss"):
    """Build the loss and accuracy figure of a history.csv (see `curves`)."""
    from matplotlib.ticker import MaxNLocator

    from cnnctl import runs

    history = _read_history(history_csv)
    epochs = history["epoch"]
    n = len(epochs)
    metrics = [c for c in history if c not in _NOT_METRICS and not c.startswith("val_")]
    second = "accuracy" if "accuracy" in history else (metrics[0] if metrics else None)
    best = best_epoch(history, monitor)

    fig = new_figure(11, 4)
    axes = fig.subplots(1, 2)
    for ax, name in zip(axes, ["loss", second]):
        if name is None:
            ax.text(0.5, 0.5, "no metric logged besides loss", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        marker = "o" if n < 30 else None  # a one-epoch run is a single point
        series = [(f"train {name}", history[name])]
        if f"val_{name}" in history:
            series.append((f"validation {name}", history[f"val_{name}"]))
        for label, values in series:
            ax.plot(epochs, values, marker=marker, label=literal(label, MAX_TITLE_CHARS))
            if n <= 3:  # a short run: the figures themselves, beside their points
                for epoch, value in zip(epochs, values):
                    if math.isfinite(value):
                        ax.annotate(f"{value:.4g}", (epoch, value), textcoords="offset points",
                                    xytext=(6, 4), fontsize=8)
        if best is not None:
            ax.axvline(best[0], color="gray", linestyle="--", linewidth=1,
                       label=literal(f"best epoch {best[0]} ({best[1]}): {runs.BEST}",
                                     MAX_TITLE_CHARS))
        _phase_lines(ax, epochs, history.get("phase"))
        ax.set_title(literal(name, MAX_TITLE_CHARS))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if n == 1:  # one epoch: a unit-wide axis around it, and values from 0
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
            ax.set_xticks([epochs[0]])  # the locator falls back to fractions on a unit axis
            finite = [v for _, values in series for v in values if math.isfinite(v)]
            top = max(finite, default=1.0)
            bounded = runs.monitor_mode(name) == "max" and 0 <= min(finite, default=0) and top <= 1
            ax.set_ylim(0, 1.05 if bounded else top * 1.25 if top > 0 else 1)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def _phase_lines(ax, epochs: list[float], phase: list[float] | None) -> None:
    """A dotted vertical line between the last epoch of one train.phases phase and the first of
    the next, named after the phase that starts there."""
    if not phase:
        return
    for before, after, epoch in zip(phase, phase[1:], epochs[1:]):
        if before != after and math.isfinite(after):
            ax.axvline(epoch - 0.5, color="black", linestyle=":", linewidth=1)
            ax.annotate(f"phase {int(after)}", (epoch - 0.5, 1), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", fontsize=8)


def curves(history_csv: Path, out: Path, monitor: str = "val_loss") -> Path:
    """Plot loss and accuracy per epoch, train and validation, side by side, with a dashed line
    at the epoch best.keras comes from.

    Args:
        history_csv: a run's history.csv (columns epoch, loss, accuracy, val_loss, ...).
        out: the PNG to write.
        monitor: the metric that picks best.keras (`train.checkpoint_monitor`).

    Returns:
        `out`.

    Raises:
        CnnctlError: the file is missing or has no epochs.
    """
    return save(curves_figure(history_csv, monitor), out, "train")


# --- confusion matrix ------------------------------------------------------------------------

def confusion_matrix_figure(matrix: np.ndarray, class_names: list[str], normalize: bool = True):
    """Build the confusion-matrix heat map (see `confusion_matrix`)."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match "
                         f"{n} class names")
    support = counts.sum(axis=1, keepdims=True)
    # Rows are true classes: a normalized row shows where that class's images went.
    shares = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    values = shares if normalize else counts

    side = min(max(5.0, 0.45 * n + 2.5), 26.0)  # inches; a 100-class matrix still fits a screen
    fontsize = float(np.clip(0.45 * side * 72 / n, 5, 10))  # about half a cell's height in points
    fig = new_figure(side + 1.5, side)
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, values.max()),
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of true class" if normalize else "images")

    slant = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if n <= 10 else {"rotation": 90}
    names = [literal(name) for name in class_names]
    ax.set_xticks(range(n), names, fontsize=fontsize, **slant)
    ax.set_yticks(range(n), names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(counts.sum())
    correct = int(np.trace(counts))
    ax.set_title(f"{total} images, {correct / total:.1%} correct" if total else "no images")

    if n <= CELL_TEXT_MAX_CLASSES:
        both = normalize and n <= 12
        threshold = (1 if normalize else max(1, values.max())) / 2
        for i in range(n):
            for j in range(n):
                if normalize:
                    text = f"{shares[i, j]:.0%}" + (f"\n{counts[i, j]}" if both else "")
                else:
                    text = str(counts[i, j])
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                        color="white" if values[i, j] > threshold else "black")
    return fig


def confusion_matrix(matrix: np.ndarray, class_names: list[str], out: Path,
                     normalize: bool = True) -> Path:
    """Plot a confusion matrix (rows true, columns predicted) as a heat map.

    Cells show the share of the true class (and the count, up to 12 classes) when `normalize`,
    else counts; above 30 classes the cells carry no text and only the colours remain.

    Args:
        matrix: integer counts, shape [C, C].
        class_names: C names, in the order of the rows.
        out: the PNG to write.
        normalize: colour and label cells by share of the row instead of count.

    Returns:
        `out`.
    """
    return save(confusion_matrix_figure(matrix, class_names, normalize), out, "eval")


# --- prediction sheet ------------------------------------------------------------------------

def displayable(image: np.ndarray) -> tuple[np.ndarray, dict]:
    """An HxWxC image (uint8, or float 0..255) as imshow arguments, without autoscaling."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    image = np.clip(image.astype(np.float32), 0, 255) / 255.0
    if image.ndim == 2:
        return image, {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    return image, {}


def top_bar_colour(item: dict) -> str:
    """Blue when the top class is the true label, red when it is not, grey when unknown."""
    if item.get("true_label") is None:
        return UNKNOWN_COLOUR
    return RIGHT_COLOUR if item["top"][0]["label"] == item["true_label"] else WRONG_COLOUR


def predictions_figure(items: list[dict]):
    """Build the prediction sheet (see `predictions`)."""
    if not items:
        raise ValueError("no predictions to plot")
    shown = items[:MAX_PREDICTION_ROWS]
    slots = max(len(item["top"]) for item in shown)  # same bar height in every row
    fig = new_figure(9, 2.2 * len(shown) + (0.4 if len(items) > len(shown) else 0))
    axes = fig.subplots(len(shown), 2, squeeze=False, width_ratios=[1, 2])
    for (image_ax, bar_ax), item in zip(axes, shown):
        pixels, kwargs = displayable(item["image"])
        image_ax.imshow(pixels, **kwargs)
        image_ax.set_axis_off()
        true_label = item.get("true_label")
        title = literal(Path(str(item["path"])).name, MAX_TITLE_CHARS) + (
            f"\ntrue: {literal(true_label)}" if true_label is not None else "")
        image_ax.set_title(title, fontsize=9)

        labels = [literal(t["label"]) for t in item["top"]]
        probs = [float(t["prob"]) for t in item["top"]]
        colours = [top_bar_colour(item)] + [OTHER_COLOUR] * (len(probs) - 1)
        bars = bar_ax.barh(range(len(probs)), probs, color=colours)
        bar_ax.bar_label(bars, labels=[f"{p:.1%}" for p in probs], padding=3, fontsize=8)
        bar_ax.set_yticks(range(len(probs)), labels, fontsize=9)
        bar_ax.set_ylim(slots - 0.5, -0.5)  # most likely class on top
        bar_ax.set_xlim(0, 1.15)
        bar_ax.set_xlabel("probability", fontsize=8)
        bar_ax.spines[["top", "right"]].set_visible(False)
    if len(items) > len(shown):
        fig.suptitle(f"showing the first {len(shown)} of {len(items)} images")
    return fig


def predictions(items: list[dict], out: Path) -> Path:
    """Plot each image beside a bar chart of its top-k class probabilities, a row per image.

    The top bar is blue when it is the true label, red when it is not, grey when the true label
    is unknown. At most 32 rows are drawn; the title says when images were left out.

    Args:
        items: dicts with "path" (str), "image" (HxWxC, C 1 or 3, uint8 or float 0..255),
            "top" ([{"label", "prob"}, ...], most likely first) and "true_label" (str or None).
        out: the PNG to write.

    Returns:
        `out`.
    """
    return save(predictions_figure(items), out, "predict")
