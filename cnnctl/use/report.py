"""`cnnctl report`: one self-contained HTML file about a finished run, images embedded, that any
browser opens without a server: test metrics, learning curves, per-class table, confusion
matrix, the most confident mistakes with their probability bars, class-activation overlays of a
few test images, the model's layer table, the config as written and the environment."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from cnnctl import outputs, runs
from cnnctl.errors import CnnctlError

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 0.2rem 0.7rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
details summary { cursor: pointer; color: #444; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
img { max-width: 100%; } .note { color: #666; font-size: 0.9rem; }
"""


def _png(fig) -> str:
    """A matplotlib figure as an <img> with the PNG inline."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    fig.clear()
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="" src="data:image/png;base64,{data}">'


def png_file_tag(path: Path) -> str:
    """A PNG file as an <img> with its bytes inline."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="" src="data:image/png;base64,{data}">'


def html_table(header: list[str], rows: list[list]) -> str:
    """An HTML table of a header and rows, every cell escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def build(run_dir, *, mistakes: int = 8, cams: int = 4, limit: int | None = None) -> str:
    """The HTML text of the report of a finished run directory.

    `limit` keeps the first N test images for the per-class table, the confusion matrix, the
    mistakes and the heat maps (default: the whole test split, as the headline metrics); the
    page says which.

    Raises:
        CnnctlError: not a finished run (no metrics.json), no test split.
    """
    from cnnctl import plots, runs
    from cnnctl.model import build as model_lib
    from cnnctl.use import evaluate, trained

    run_dir = Path(run_dir)
    runs.check_run_dir(run_dir)
    metrics = runs.read_metrics(run_dir)
    if metrics is None:
        raise CnnctlError(f"{run_dir}: no {runs.METRICS}; report a finished run directory "
                          "(cnnctl train writes it at the end)")
    opened = trained.open_model(run_dir)
    model, names = opened.model, opened.labels()
    test = opened.test_images(limit)
    x, y = test.x, test.y
    tta = metrics.get("test_time_augmentation") == "flip"
    scorer = model_lib.with_flip_tta(model) if tta else model
    probs = np.asarray(scorer.predict(x, verbose=0, batch_size=256))
    scored = evaluate.report_from_predictions(
        y, probs, names, from_logits=False if opened.gives_probabilities else None)
    try:
        environment = runs.read_environment(run_dir)
        environment_part = (f"<pre>{html.escape(json.dumps(environment, indent=2))}</pre>"
                            if environment is not None else
                            f'<p class="note">not recorded (no {runs.ENVIRONMENT})</p>')
    except CnnctlError as e:  # optional: the page goes without it
        environment_part = f'<p class="note">left out: {html.escape(str(e))}</p>'
    shown = html.escape(test.described()) + (", each averaged with its mirror image (flip "
                                             "test-time augmentation)" if tta else "")

    accuracy = (metrics.get("test") or {}).get("accuracy")
    headline = f"{model.name}: test accuracy {accuracy:.4f}" if isinstance(accuracy, float) \
        else model.name
    parts = [f"<h1>{html.escape(headline)}</h1>",
             f'<p class="note">run {html.escape(run_dir.name)} &middot; '
             f'{html.escape(str(run_dir.resolve()))}</p>', "<h2>Test metrics</h2>"]
    figures = sorted(metrics.get("test") or {})
    parts.append(html_table(["split", *figures],
                             [[split, *(f"{metrics[split][k]:.4f}" if k in metrics[split] else "-"
                                        for k in figures)]
                              for split in ("test", "val") if split in metrics]))
    parts.append(f'<p class="note">{metrics.get("epochs", "?")} epochs; checkpoint '
                 f'{html.escape(Path(metrics.get("best_checkpoint") or "").name)}; test-time '
                 f'augmentation {html.escape(str(metrics.get("test_time_augmentation")))}</p>')
    if (run_dir / runs.HISTORY).is_file():
        try:  # optional: a damaged history.csv leaves the curves out, with a note
            curves = _png(plots.curves_figure(run_dir / runs.HISTORY, _monitor(run_dir)))
        except CnnctlError as e:
            curves = f'<p class="note">left out: {html.escape(str(e))}</p>'
        parts += ["<h2>Learning curves</h2>", curves]
    parts += ["<h2>Per class</h2>", f'<p class="note">{shown}</p>',
              html_table(["class", "precision", "recall", "f1", "support"],
                         [[n, *(f"{scored['per_class'][n][k]:.3f}" for k in ("precision", "recall", "f1")),
                           scored["per_class"][n]["support"]] for n in names]),
              "<h2>Confusion matrix</h2>", f'<p class="note">{shown}</p>',
              _png(plots.confusion_matrix_figure(np.asarray(scored["confusion_matrix"]), names))]

    predicted = probs.argmax(-1) if probs.shape[-1] > 1 else (probs[:, 0] > 0.5).astype(int)
    wrong = np.flatnonzero(predicted != y)
    wrong = wrong[np.argsort(-probs[wrong].max(-1))][:mistakes]
    parts.append("<h2>Most confident mistakes</h2>")
    if len(wrong):
        parts.append(f'<p class="note">the {len(wrong)} wrong answers given with the highest '
                     f'probability, among {shown}</p>')
        parts.append(_png(plots.predictions_figure([_item(i, test, probs, names)
                                                    for i in wrong])))
    else:
        parts.append(f'<p class="note">none: each of {shown} is classified right</p>')

    parts.append("<h2>Where the network looked</h2>")
    parts += _heat_maps(model, test, probs, predicted, names, cams)
    parts += ["<h2>Model</h2>", _model_summary(run_dir)]
    parts += _config_section(run_dir)
    parts += ["<h2>Environment</h2>", environment_part]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"{outputs.REPORT_GENERATOR}"
            f"<title>{html.escape(headline)} ({html.escape(run_dir.name)})</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def _monitor(run_dir: Path) -> str:
    """The run's train.checkpoint_monitor (what chose best.keras), else val_loss."""
    from cnnctl import runs

    try:
        return runs.load_config(run_dir).config.train.checkpoint_monitor
    except CnnctlError:
        return "val_loss"


def _heat_maps(model, test, probs, predicted, names, count: int) -> list[str]:
    """Grad-CAM (else CAM) overlays of the first `count` test images, or why there are none."""
    from cnnctl.use import explain

    x = test.x[:count]
    try:
        heat, _ = explain.gradcam(model, x)
        method = f"Grad-CAM at layer {explain.conv_layer(model).name}"
    except CnnctlError:
        try:
            method, (heat, _) = "CAM", explain.cam(model, x)
        except CnnctlError as e:
            return [f'<p class="note">no class-activation maps: {html.escape(str(e))}</p>']
    parts = []
    for i in range(len(x)):
        top = int(predicted[i])
        title = (f"{test.name(i)}: {names[top]} ({probs[i].max():.1%}), true {names[test.y[i]]}, "
                 f"{method}")
        parts.append(_png(explain.figure(x[i], heat[i], title)))
    return parts


def _model_summary(run_dir: Path) -> str:
    """The layer table of `cnnctl check` for the run's config, in a <pre>."""
    from cnnctl import runs
    from cnnctl.model import summary

    try:
        table = summary.format_table(summary.describe(runs.load_config(run_dir)))
    except CnnctlError as e:
        return f'<p class="note">no model summary: {html.escape(str(e))}</p>'
    return f"<pre>{html.escape(table)}</pre>"


def _config_section(run_dir: Path) -> list[str]:
    """The config as its user wrote it (when the run kept it), the resolved one folded away."""
    from cnnctl import runs

    def text(path: Path) -> str:
        return html.escape(path.read_bytes().decode("utf-8", errors="replace"))

    resolved = text(run_dir / runs.CONFIG)
    own = run_dir / runs.SOURCE_CONFIG
    if not own.is_file():
        return ["<h2>Config</h2>", f"<pre>{resolved}</pre>"]
    return ["<h2>Config</h2>", f"<pre>{text(own)}</pre>",
            "<details><summary>resolved config (every default filled in): "
            f"{runs.CONFIG}</summary><pre>{resolved}</pre></details>"]


def _item(i: int, test, probs, names) -> dict:
    order = np.argsort(-probs[i])[:3]
    return {"path": test.name(i), "image": test.x[i], "true_label": names[test.y[i]],
            "top": [{"label": names[k], "prob": float(probs[i][k])} for k in order]}


def run(run_dir, out: Path | None = None, **kwargs) -> Path:
    """Write the report (default RUN_DIR/report.html) and return its path.

    An existing file there is replaced only when it is a previous cnnctl report; the page is
    written to a temporary file and renamed into place.

    Raises:
        CnnctlError: see `build`, and a target that is not a report's to replace.
    """
    out = Path(out) if out is not None else Path(run_dir) / runs.REPORT
    outputs.check_file(out, "--out", "report", outputs.is_report, what="an HTML report")
    return outputs.write_text(out, build(run_dir, **kwargs))
