"""`cnnctl report STUDY`: one self-contained HTML page about a study, plots embedded, that any
browser opens without a server: the states of its trials, the best trial and how to train it,
the search space, every trial's parameters and value, and Optuna's plots."""

from __future__ import annotations

import collections
import html
from pathlib import Path

from cnnctl import outputs, runs
from cnnctl.tune import space as space_lib
from cnnctl.tune import study as study_lib
from cnnctl.use.report import STYLE, html_table, png_file_tag

PLOT_TITLES = {"history": "Optimisation history", "importances": "Parameter importances",
               "parallel_coordinate": "Parallel coordinates", "slice": "Slices"}


def _value(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _param(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# the trials table has a column per parameter: it scrolls sideways rather than wrap its cells
WIDE_TABLE = ".wide { overflow-x: auto; } .wide td, .wide th { white-space: nowrap; }\n"


def build(folder) -> str:
    """The HTML text of the report of a study folder; draws its plots again into plots/.

    Raises:
        CnnctlError: not a study folder, or its storage cannot be opened.
    """
    folder = Path(folder)
    study, info = study_lib.load(folder)
    tune = study.user_attrs.get(study_lib.CONFIG_ATTR, {}).get("tune") or {}
    metric = info.get("metric") or tune.get("metric") or "value"
    direction = study.direction.name.lower()
    table = study_lib.rows(study, folder)
    best = study_lib.best_trial(study)
    states = collections.Counter(r["state"].split(":")[0].split(" at ")[0] for r in table)
    counts = ", ".join(f"{n} {s}" for s, n in states.items()) or "no trials yet"
    summary = f"{metric} ({direction}); {len(table)} trials: {counts}; best " + (
        f"{metric} {best.value:.4f} (trial {best.number})" if best else "none yet")
    headline = f"study {study.study_name}: " + (f"{metric} {best.value:.4f}" if best else "no complete trial")
    parts = [f"<h1>{html.escape(headline)}</h1>", f"<p>{html.escape(summary)}</p>",
             f'<p class="note">{html.escape(str(folder.resolve()))}</p>', "<h2>Best trial</h2>"]
    if best is None:
        parts.append('<p class="note">no trial is complete yet, so there is no best trial; '
                     f'run the study on: cnnctl tune {html.escape(info.get("config", "CONFIG"))}</p>')
    else:
        best_yaml = folder / study_lib.BEST
        parts += [f"<p>trial {best.number}, {html.escape(metric)} {best.value:.4f}</p>",
                  html_table(["parameter", "value"], [[k, _param(v)] for k, v in best.params.items()])]
        parts.append(f"<p>config: {html.escape(str(best_yaml))}; train it: <code>cnnctl train "
                     f"{html.escape(str(best_yaml))}</code></p>" if best_yaml.is_file() else
                     f'<p class="note">no {study_lib.BEST} yet: cnnctl tune status '
                     f'{html.escape(str(folder))} writes it</p>')
    space = tune.get("space") or {}
    parts += ["<h2>Search space</h2>", html_table(
        ["path", "distribution"],
        [[path, space_lib.yaml_text({k: v for k, v in dist.items() if v is not None})]
         for path, dist in space.items()])]
    params = sorted({k for r in table for k in r["params"]})
    parts += ["<h2>Trials</h2>", '<div class="wide">', html_table(
        ["trial", "state", metric, *params, "epochs", "seconds", "run"],
        [[r["number"], r["state"], _value(r["value"]),
          *(_param(r["params"][k]) if k in r["params"] else "" for k in params),
          "" if r["epochs"] is None else r["epochs"],
          "" if r["seconds"] is None else f"{r['seconds']:.0f}", r["run_dir"] or ""] for r in table]),
              "</div>"]
    parts.append("<h2>Plots</h2>")
    drawn = [p for p in study_lib.write_plots(study, folder / study_lib.PLOTS) if p.is_file()]
    for path in drawn:
        parts += [f"<h3>{html.escape(PLOT_TITLES.get(path.stem, path.stem))}</h3>", png_file_tag(path)]
    if not drawn:
        parts.append('<p class="note">none: the study has too few complete trials to plot</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"{outputs.REPORT_GENERATOR}<title>{html.escape(headline)}</title>"
            f"<style>{STYLE}{WIDE_TABLE}</style></head><body>{''.join(parts)}</body></html>\n")


def run(folder, out: Path | None = None) -> Path:
    """Write the report of a study folder (default FOLDER/report.html) and return its path.

    An existing file there is replaced only when it is a previous cnnctl report.

    Raises:
        CnnctlError: see `build`, and a target that is not a report's to replace.
    """
    out = Path(out) if out is not None else Path(folder) / runs.REPORT
    outputs.check_file(out, "--out", "report", outputs.is_report, what="an HTML report")
    return outputs.write_text(out, build(folder))
