"""Class and file names are drawn verbatim: `$` (mathtext), control characters, very long names
and names the plot font lacks never break `eval`, `predict --plot`, `explain` or `report`."""

from __future__ import annotations

import csv
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cnnctl import plots
from cnnctl.cli import app

names = st.text(max_size=50)
weird = st.text(alphabet=st.sampled_from("$\\^_{}<b>&\x00\x07\n\t猫 a"), max_size=20)
some = st.one_of(names, weird)


def test_literal_escapes_every_dollar_and_shows_control_characters():
    assert plots.literal("a$b$c") == r"a\$b\$c"
    assert plots.literal("$x^$") == r"\$x^\$"
    assert plots.literal("a\x00b") == r"a\x00b"
    assert plots.literal("x" * 100) == "x" * 37 + "..."


@settings(max_examples=40, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(classes=st.lists(some, min_size=2, max_size=3), file=some,
       metric=some.map(lambda t: t.replace("\x00", "")))  # NUL: a damaged history.csv
def test_any_names_draw(classes, file, metric):
    from cnnctl.use import explain

    out = Path(tempfile.mkdtemp())
    n = len(classes)
    plots.confusion_matrix(np.eye(n, dtype=int) + 1, classes, out / "cm.png")
    image = np.full((8, 8, 3), 100, np.uint8)
    plots.predictions([{"path": str(Path("d") / (file or "x")), "image": image,
                        "true_label": classes[0],
                        "top": [{"label": c, "prob": 1 / n} for c in classes]}], out / "p.png")
    plots.save(explain.figure(image, np.full((4, 4), 0.5), f"{file}: {classes[0]} (50.0%)"),
               out / "e.png", "explain")
    history = out / "history.csv"
    with history.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "m" + metric])
        writer.writerows([[0, 1.0, 0.5], [1, 0.8, 0.6]])
    plots.curves(history, out / "c.png")
    for name in ("cm", "p", "e", "c"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def dollar_run(tmp_path_factory, colour_cnn_yaml, train_yaml):
    """A one-epoch run on class folders `cost$`, `a$b` and `猫`, image files named `p$q$N.png`."""
    root = tmp_path_factory.mktemp("dollars")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for k, name in enumerate(("cost$", "a$b", "猫")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                x = rng.integers(0, 120, (16, 16, 3))
                x[..., k] += 120
                Image.fromarray(x.astype(np.uint8)).save(root / split / name / f"p$q${i}.png")
    config = colour_cnn_yaml(data=f'{{source: folder, train_dir: "{root / "train"}", '
                                  f'test_dir: "{root / "test"}"}}',
                             loss="categorical_crossentropy",
                             train="{epochs: 1, batch_size: 8, seed: 0, tensorboard: false}")
    train_yaml(config, root / "c.yaml", root / "run")
    return root


def invoke(args):
    plots._warned_under = None
    with warnings.catch_warnings(record=True) as caught:
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    assert "Traceback" not in result.output and "ParseSyntax" not in result.output
    assert not [w for w in caught if "Glyph" in str(w.message)]
    return result


@pytest.mark.parametrize("command", ["eval", "predict", "explain", "report"])
def test_dollar_class_and_file_names_through_the_cli(dollar_run, tmp_path, command):
    run, image = dollar_run / "run", str(dollar_run / "test" / "a$b" / "p$q$0.png")
    args = {"eval": ["eval", str(run)],
            "predict": ["predict", str(run), image, "--plot", str(tmp_path / "p.png")],
            "explain": ["explain", str(run), image, "--out", str(tmp_path / "x")],
            "report": ["report", str(run), "--out", str(tmp_path / "r.html")]}[command]
    result = invoke(args)
    from matplotlib import font_manager

    if not any("CJK" in f.name for f in font_manager.fontManager.ttflist):
        # explain draws only the class it found: the warning comes when that class is '猫'
        drawn_cjk = command != "explain" or "猫" in result.stdout
        assert result.output.count("install fonts-noto-cjk") == int(drawn_cjk), result.output
