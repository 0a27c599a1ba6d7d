"""No command destroys what it did not create: every writing command refuses the current
directory, a run directory, a folder of other files and a file of someone else's, leaving them
byte for byte; previous outputs are recognised by their contents; writes are atomic; output
names never collide."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.use import export as export_lib
from cnnctl import outputs
from cnnctl.cli import app
from cnnctl.errors import CnnctlError

@pytest.fixture(scope="module")
def run(tmp_path_factory, colour_cnn_yaml, train_yaml, colour_npz) -> Path:
    """A finished run of a tiny model on coloured noise (classes: the brightest channel)."""
    root = tmp_path_factory.mktemp("outputs")
    colour_npz(root / "colours.npz", 128, 48)
    xt = np.load(root / "colours.npz")["x_test"]
    config = colour_cnn_yaml(name="guarded",
                             data="{source: npz, path: DATA, validation_split: 0.25}")
    train_yaml(config.replace("DATA", str(root / "colours.npz")), root / "guarded.yaml",
               root / "run")
    folder = root / "images"
    for name in ("cat", "dog", "ship"):
        (folder / name).mkdir(parents=True)
        Image.fromarray(xt[0]).save(folder / name / "0001.png")
    return root / "run"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (names relative to it) with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def invoke(args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output.strip()


def image(run: Path) -> Path:
    return run.parent / "images" / "cat" / "0001.png"


# command -> (arguments before the target, the option that names the target, kind of target)
COMMANDS = {
    "export savedmodel": (lambda run: ["export", run, "--format", "savedmodel"], "--out", "folder"),
    "export tflite": (lambda run: ["export", run, "--format", "tflite"], "--out", "file"),
    "report": (lambda run: ["report", run], "--out", "file"),
    "predict --plot": (lambda run: ["predict", run, image(run)], "--plot", "file"),
    "explain": (lambda run: ["explain", run, image(run)], "--out", "folder"),
    "visualize": (lambda run: ["visualize", run, "--image", image(run)], "--out", "folder"),
}


def expected(name: str, target: str, where: str) -> str:
    """The exact one-line refusal of `name` for a target of the kind `where`."""
    command = name.split()[0]
    option = COMMANDS[name][1]
    what = {"export savedmodel": "a SavedModel export", "export tflite": "a TFLite export",
            "report": "an HTML report", "predict --plot": "a prediction sheet (PNG)",
            "explain": "heat-map PNGs", "visualize": "PNGs"}[name]
    named = f"{option} {target}"
    if where in ("cwd", "run") and COMMANDS[name][2] == "folder":
        reason = ("is the current directory" if where == "cwd"
                  else "is a run directory (it holds config.yaml)")
        example = {"export savedmodel": "savedmodel", "explain": "explain",
                   "visualize": "visualize"}[name]
        return (f"{named}: {reason}; {command} writes {what} into a folder of its own: choose "
                f"a new one (e.g. {option} {example})")
    if where in ("cwd", "run"):
        reason = ("is the current directory" if where == "cwd"
                  else "is a run directory (it holds config.yaml)")
        return (f"{named}: {reason}; {command} writes {what} there only as a new file: choose a "
                "file name that does not exist yet")
    if where == "folder" and COMMANDS[name][2] == "folder":
        return (f"{named}: holds files that cnnctl {command} did not write (notes.txt); choose a "
                "new or empty folder (cnnctl never replaces files it did not write)")
    if where == "folder":
        example = {"an HTML report": "report.html", "a prediction sheet (PNG)": "predictions.png",
                   "a TFLite export": "cnnctl-output"}[what]
        return f"{named}: is a folder; {command} writes {what}: give a file name (e.g. {target}/{example})"
    if COMMANDS[name][2] == "folder":
        return (f"{named}: a file is there, not a folder; {command} writes {what} into a folder: "
                "choose a folder that does not exist yet")
    return (f"{named}: a file that cnnctl {command} did not write is there; choose another name "
            "(cnnctl never replaces files it did not write)")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
@pytest.mark.parametrize("where", ["cwd", "run", "folder", "file"])
def test_a_target_that_is_not_the_commands_own_is_refused_and_left_intact(
        run, tmp_path, monkeypatch, name, where):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "thesis.tex").write_text("months of work\n")
    monkeypatch.chdir(workdir)
    target = {"cwd": Path("."), "run": run, "folder": tmp_path / "mine",
              "file": tmp_path / "mine.bin"}[where]
    if where == "folder":
        target.mkdir()
        (target / "notes.txt").write_text("do not lose\n")
    if where == "file":
        target.write_bytes(b"\x00\x01 someone else's bytes")
    watched = [workdir, run, tmp_path]
    before = [snapshot(folder) for folder in watched]
    args, option, _ = COMMANDS[name]
    code, out = invoke([*args(run), option, target])
    assert code == 2, out
    assert out == expected(name, str(target), where)
    assert "Traceback" not in out
    assert [snapshot(folder) for folder in watched] == before


@pytest.mark.slow
def test_train_refuses_a_run_dir_holding_other_files(run, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "history.csv").write_text("my own spreadsheet\n")
    before = snapshot(folder)
    code, out = invoke(["train", run / "config.yaml", "--run-dir", folder])
    assert code == 2
    assert out == (f"{folder}: holds files that are not a run (history.csv); a run directory "
                   "starts new or empty, so nothing of yours is overwritten: choose another --run-dir")
    assert snapshot(folder) == before
    code, out = invoke(["train", run / "config.yaml", "--run-dir", run])
    assert code == 2 and out.startswith(f"{run}: already holds a run")


@pytest.mark.slow
def test_eval_beside_a_model_file_refuses_a_file_of_the_same_name(run, tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes((run / "checkpoints" / "best.keras").read_bytes())
    theirs = tmp_path / "model.eval_data-images.json"
    theirs.write_text('{"mine": true}\n')
    before = snapshot(tmp_path)
    code, out = invoke(["eval", model, "--data", image(run).parent.parent])
    assert code == 2
    assert out == (f"{theirs}: a file that cnnctl eval did not write is there; move it away first, "
                   "or evaluate a copy of the model in another folder (cnnctl never replaces "
                   "files it did not write)")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_eval_names_its_files_by_split_and_replaces_only_its_own(run):
    for split in ("test", "val"):
        code, out = invoke(["eval", run, "--split", split])
        assert code == 0, out
    for split in ("test", "val"):
        assert outputs.is_eval_json(run / f"eval_{split}.json")
        assert outputs.is_png_of(run / f"confusion_matrix_{split}.png", "eval")
    test_png = (run / "confusion_matrix_test.png").read_bytes()
    code, out = invoke(["eval", run, "--split", "test"])  # again: its own files are replaced
    assert code == 0, out
    assert (run / "confusion_matrix_test.png").read_bytes() == test_png


@pytest.mark.slow
def test_outputs_of_a_command_are_replaced_by_the_same_command(run, tmp_path):
    for _ in range(2):
        code, out = invoke(["report", run, "--out", tmp_path / "r.html"])
        assert code == 0, out
        code, out = invoke(["explain", run, image(run), "--out", tmp_path / "explain"])
        assert code == 0, out
        code, out = invoke(["visualize", run, "--out", tmp_path / "vis"])
        assert code == 0, out
        code, out = invoke(["predict", run, image(run), "--plot", tmp_path / "p.png"])
        assert code == 0, out
    assert outputs.is_report(tmp_path / "r.html")
    assert outputs.is_png_of(tmp_path / "p.png", "predict")
    assert not outputs.is_png_of(tmp_path / "p.png", "explain")
    # one command's outputs are not another's to replace
    code, out = invoke(["explain", run, image(run), "--out", tmp_path / "vis"])
    assert code == 2 and "holds files that cnnctl explain did not write (filters.png" in out


@pytest.mark.slow
@pytest.mark.parametrize("fmt, name", [("savedmodel", "exported"), ("tflite", "model.tflite")])
def test_force_replaces_a_previous_export_and_nothing_else(run, tmp_path, fmt, name):
    out = tmp_path / name
    code, text = invoke(["export", run, "--format", fmt, "--out", out])
    assert code == 0, text
    first = snapshot(tmp_path)
    code, text = invoke(["export", run, "--format", fmt, "--out", out])
    assert code == 2
    kind = "SavedModel" if fmt == "savedmodel" else "TFLite"
    where = "folder" if fmt == "savedmodel" else "name"
    assert text == (f"--out {out}: holds a {kind} export from an earlier cnnctl export; pass "
                    f"--force to replace it, or choose another {where}")
    assert snapshot(tmp_path) == first
    code, text = invoke(["export", run, "--format", fmt, "--out", out, "--force"])
    assert code == 0, text
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left behind
    other = "tflite" if fmt == "savedmodel" else "savedmodel"  # --force is no licence for the rest
    code, text = invoke(["export", run, "--format", other, "--out", out, "--force"])
    assert code == 2, text


@pytest.mark.slow
@pytest.mark.parametrize("fmt, name", [("savedmodel", "exported"), ("tflite", "model.tflite")])
def test_an_export_that_fails_midway_leaves_the_previous_one(run, tmp_path, monkeypatch, fmt, name):
    out = tmp_path / name
    export_lib.run(run, fmt, out, images=8)
    before = snapshot(tmp_path)
    def crash_writing(self, filepath, *args, **kwargs):  # half a SavedModel, then the crash
        Path(filepath).mkdir(parents=True, exist_ok=True)
        (Path(filepath) / "saved_model.pb").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    def crash_writing_bytes(self, data):  # half the flatbuffer, then the disk is full
        with open(self, "wb") as f:
            f.write(data[:len(data) // 2])
        raise OSError(28, "No space left on device")

    import keras

    if fmt == "savedmodel":
        monkeypatch.setattr(keras.Model, "export", crash_writing)
    else:
        monkeypatch.setattr(Path, "write_bytes", crash_writing_bytes)
    with pytest.raises(CnnctlError) as refused:
        export_lib.run(run, fmt, out, images=8, force=True)
    assert str(refused.value) == (f"{out}: cannot write (disk full); the previous {out.name} is "
                                  "kept; free some space and run the command again")
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_unique_stems_tell_apart_files_of_the_same_name():
    files = ["test/cat/0001.jpg", "test/dog/0001.jpg", "test/ship/0001.jpg", "test/ship/0002.jpg",
             "a/x/7.png", "b/x/7.png", "c/5.png", "c/5.jpg", "test/cat/../cat/0001.jpg"]
    assert outputs.unique_stems(files) == {
        "test/cat/0001.jpg": "cat_0001", "test/dog/0001.jpg": "dog_0001",
        "test/ship/0001.jpg": "ship_0001", "test/ship/0002.jpg": "0002",
        "a/x/7.png": "a_x_7", "b/x/7.png": "b_x_7", "c/5.png": "5.png", "c/5.jpg": "5.jpg",
        "test/cat/../cat/0001.jpg": "cat_0001"}


@pytest.mark.slow
def test_explain_writes_one_file_per_image_of_the_same_name(run, tmp_path):
    folder = image(run).parent.parent
    files = [folder / c / "0001.png" for c in ("cat", "dog", "ship")]
    code, out = invoke(["explain", run, *files, "--out", tmp_path / "maps"])
    assert code == 0, out
    from cnnctl.use import trained
    from cnnctl.use import explain

    layer = explain.conv_layer(trained.load_model(run)).name
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert written == [f"{c}_0001.gradcam-{layer}.png" for c in ("cat", "dog", "ship")]
    for line, c in zip(out.splitlines(), ("cat", "dog", "ship")):
        assert line.endswith(str(tmp_path / "maps" / f"{c}_0001.gradcam-{layer}.png"))
