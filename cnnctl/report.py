"""`cnnctl report`: one self-contained HTML file about a finished run, images embedded, that any
browser opens without a server: config, environment, learning curves, test metrics, per-class
table, confusion matrix, the most confident mistakes with their probability bars, and
class-activation overlays of a few test images."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from cnnctl import outputs
from cnnctl.errors import CnnctlError

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { padding: 0.2rem 0.7rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
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


def _png_file(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def build(run_dir, *, mistakes: int = 8, cams: int = 4, limit: int = 2000) -> str:
    """The HTML text of the report of a finished run directory.

    Raises:
        CnnctlError: not a finished run (no metrics.json), no test split.
    """
    from cnnctl import evaluate, explain, plots, runs

    run_dir = Path(run_dir)
    if not (run_dir / runs.METRICS).is_file():
        raise CnnctlError(f"{run_dir}: no {runs.METRICS}; report a finished run directory "
                          "(cnnctl train writes it at the end)")
    model = evaluate.load_model(run_dir)
    names = evaluate.class_names_for(run_dir)
    x, y = evaluate.test_arrays(run_dir, tuple(model.input_shape[1:]), limit)
    names = names or [str(i) for i in range(int(model.output_shape[-1]))]
    probs = np.asarray(model.predict(x, verbose=0, batch_size=256))
    scored = evaluate.report_from_predictions(y, probs, names)
    metrics = json.loads((run_dir / runs.METRICS).read_text())
    environment = json.loads((run_dir / runs.ENVIRONMENT).read_text()) \
        if (run_dir / runs.ENVIRONMENT).is_file() else {}

    parts = [f"<h1>cnnctl run {html.escape(run_dir.name)}</h1>",
             f'<p class="note">{html.escape(str(run_dir.resolve()))}</p>', "<h2>Test metrics</h2>"]
    parts.append(_table(["split", *sorted(metrics.get("test", {}))],
                        [[split, *(f"{metrics[split][k]:.4f}" for k in sorted(metrics["test"]))]
                         for split in ("test", "val") if split in metrics]))
    parts.append(f'<p class="note">{metrics.get("epochs", "?")} epochs; checkpoint '
                 f'{html.escape(Path(metrics.get("best_checkpoint", "")).name)}; test-time '
                 f'augmentation {html.escape(str(metrics.get("test_time_augmentation")))}</p>')
    if (run_dir / runs.HISTORY).is_file():
        parts += ["<h2>Learning curves</h2>", _png(plots.curves_figure(run_dir / runs.HISTORY))]
    parts += ["<h2>Per class</h2>", f'<p class="note">the first {len(y):,} test images</p>',
              _table(["class", "precision", "recall", "f1", "support"],
                     [[n, *(f"{scored['per_class'][n][k]:.3f}" for k in ("precision", "recall", "f1")),
                       scored["per_class"][n]["support"]] for n in names]),
              "<h2>Confusion matrix</h2>",
              _png(plots.confusion_matrix_figure(np.asarray(scored["confusion_matrix"]), names))]

    predicted = probs.argmax(-1) if probs.shape[-1] > 1 else (probs[:, 0] > 0.5).astype(int)
    wrong = np.flatnonzero(predicted != y)
    wrong = wrong[np.argsort(-probs[wrong].max(-1))][:mistakes]
    parts.append("<h2>Most confident mistakes</h2>")
    if len(wrong):
        parts.append(_png(plots.predictions_figure([_item(i, x, y, probs, names) for i in wrong])))
    else:
        parts.append('<p class="note">none: every test image is classified right</p>')

    method = "gradcam"
    try:
        heat, _ = explain.gradcam(model, x[:cams])
    except CnnctlError:
        try:
            method, (heat, _) = "cam", explain.cam(model, x[:cams])
        except CnnctlError as e:
            heat, method = None, str(e)
    parts.append("<h2>Where the network looked</h2>")
    if heat is None:
        parts.append(f'<p class="note">no class-activation maps: {html.escape(method)}</p>')
    for i in range(len(x[:cams]) if heat is not None else 0):
        top = int(predicted[i])
        title = (f"test image {i}: {names[top]} ({probs[i].max():.1%}), true {names[y[i]]}, "
                 f"{method}")
        parts.append(_png(explain.figure(x[i], heat[i], title)))

    parts += ["<h2>Config</h2>",
              f"<pre>{html.escape((run_dir / runs.CONFIG).read_text())}</pre>",
              "<h2>Environment</h2>", f"<pre>{html.escape(json.dumps(environment, indent=2))}</pre>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"{outputs.REPORT_GENERATOR}"
            f"<title>cnnctl run {html.escape(run_dir.name)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")


def _item(i: int, x, y, probs, names) -> dict:
    order = np.argsort(-probs[i])[:3]
    return {"path": f"test image {i}", "image": x[i], "true_label": names[y[i]],
            "top": [{"label": names[k], "prob": float(probs[i][k])} for k in order]}


def run(run_dir, out: Path | None = None, **kwargs) -> Path:
    """Write the report (default RUN_DIR/report.html) and return its path.

    An existing file there is replaced only when it is a previous cnnctl report; the page is
    written to a temporary file and renamed into place.

    Raises:
        CnnctlError: see `build`, and a target that is not a report's to replace.
    """
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    outputs.check_file(out, "--out", "report", outputs.is_report, what="an HTML report")
    return outputs.write_text(out, build(run_dir, **kwargs))
