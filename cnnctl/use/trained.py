"""Open a trained run the one way every command does: `eval`, `predict`, `explain`, `visualize`,
`report` and `export` get the model (loaded in safe mode), its class names, the colour mode its
images were read with and its test images from `open_model`, so that one image gives one set of
pixels, and one answer, in each of them."""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from cnnctl import runs
from cnnctl.backend import keras
from cnnctl.data import images
from cnnctl.errors import CnnctlError
from cnnctl.train import optim


@dataclasses.dataclass
class TrainedModel:
    """A loaded model with what its training said about its inputs and outputs."""

    model: object  # keras.Model, loaded in safe mode; of a from_logits run, with its softmax
    class_names: list[str] | None  # from class_names.json, when the run has one
    color_mode: str | None  # the run's data.color_mode (None: from the model's channels)
    run_dir: Path | None  # the run directory the model belongs to, if any
    image_size: tuple[int, int] | None = None  # the run's data.image_size, if it set one
    # the run's config says what the model outputs, and `model` gives probabilities; False:
    # a bare .keras file, whose outputs are taken for logits when they do not look like
    # probabilities
    gives_probabilities: bool = False

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The [height, width, channels] images are loaded at: the model's, or, for a model of
        any size (`input_shape: [null, null, C]`), the run's data.image_size."""
        shape = tuple(self.model.input_shape[1:])
        if None in shape[:2] and self.image_size is not None:
            return (*self.image_size, shape[2])
        return shape

    def labels(self) -> list[str]:
        """The class names, else "0", "1", ... for each output."""
        return self.class_names or [str(i) for i in range(int(self.model.output_shape[-1]))]

    def load_images(self, paths: list[str]) -> tuple[np.ndarray, list[tuple[str, str | None]]]:
        """`images.load_images` as training read the run's images (size and colour mode)."""
        return images.load_images(paths, self.input_shape, self.color_mode)

    def test_images(self, limit: int | None = None) -> "TestImages":
        """The run's test images as training read them (see `test_arrays`).

        Raises:
            CnnctlError: the model is not in a run directory, or the run has no test split.
        """
        if self.run_dir is None:
            raise CnnctlError("a .keras file outside a run directory has no test images; pass "
                              "its run directory")
        return test_arrays(self.run_dir, self.input_shape, limit)


def run_dir_of(path: Path) -> Path | None:
    """The run directory of a run directory or of RUN/checkpoints/X.keras, else None."""
    path = Path(path)
    for candidate in (path, path.parent.parent):
        if runs.is_run(candidate):
            return candidate
    return None


def open_model(path) -> TrainedModel:
    """Load a run's model (or a .keras file) with its class names and colour mode.

    Of a run trained with `loss.from_logits: true` it gives the trained logits model with the
    softmax (sigmoid for binary_crossentropy) its loss applied, so every command gets
    probabilities; the checkpoints themselves stay as trained. A model of any image size
    (`model.input_shape: [null, null, C]`) takes its images at the run's data.image_size.

    A run whose config.yaml no longer validates still opens: only a `data.color_mode`
    other than the channels' default, the image size and the softmax of logits are lost then.

    Raises:
        CnnctlError: see `load_model`, `check_classifier` (not an image classifier) and
            `class_names_for`.
    """
    path = Path(path)
    model = load_model(path)
    class_names = class_names_for(path)
    run_dir = run_dir_of(path)
    config = None
    if run_dir is not None:
        try:
            config = runs.load_config(run_dir).config
        except CnnctlError:
            config = None
    data = config.data if config is not None else None
    image_size = tuple(data.image_size) if data is not None and data.image_size else None
    check_classifier(model, _model_file(path), sized_by_config=image_size is not None)
    if config is not None and config.loss.from_logits:
        model = with_probabilities(model, optim.probability_activation(config))
    return TrainedModel(model, class_names, data.color_mode if data is not None else None,
                        run_dir, image_size, gives_probabilities=config is not None)


def with_probabilities(model: keras.Model, activation: str) -> keras.Model:
    """`model` (a logits model) with `activation` (softmax or sigmoid) after its output; the
    same layers and weights, so heat maps and feature maps see the trained network."""
    names = {layer.name for layer in model.layers}
    name = next(n for n in ("probabilities", *(f"probabilities_{i}" for i in range(1, 99)))
                if n not in names)
    outputs = keras.layers.Activation(activation, name=name)(model.outputs[0])
    return keras.Model(model.inputs[0], outputs, name=model.name)


def _model_file(path: Path) -> Path:
    """The .keras file a path names: itself, or a run directory's best (else last) checkpoint."""
    if not path.exists():
        raise CnnctlError(f"no model at {path}: no such file or directory; pass a run "
                          "directory or a .keras file")
    if not path.is_dir():
        return path
    checkpoints = path / runs.CHECKPOINTS
    for name in (runs.BEST, runs.LAST):
        if (checkpoints / name).is_file():
            return checkpoints / name
    if not runs.is_run(path) and not checkpoints.is_dir():
        if any(runs.is_run(p) for p in path.iterdir() if p.is_dir()):
            raise CnnctlError(f"{path}: a folder of runs, not a run; give one of its run "
                              f"directories (`cnnctl runs {path}` lists them)")
        raise CnnctlError(f"{path}: not a run directory (no {runs.CONFIG}, no {runs.CHECKPOINTS}/); "
                          "pass a run directory written by `cnnctl train` or a .keras file")
    raise CnnctlError(f"no checkpoint in {checkpoints}: the run did not finish an epoch; train "
                      "again or pass a .keras file")


def _check_archive(path: Path) -> None:
    """Tell a file that was never a Keras model from one that was cut short or damaged."""
    with path.open("rb") as f:
        head = f.read(4)
    if head == b"":
        raise CnnctlError(f"{path} is empty (corrupt): the save was interrupted; use another "
                          "checkpoint or train again")
    if head != b"PK\x03\x04":
        raise CnnctlError(f"{path} is not a Keras model file (.keras zip); pass a .keras file "
                          "saved by cnnctl or keras")
    if not zipfile.is_zipfile(path):  # starts as a zip but lost its end (the zip's index)
        raise CnnctlError(f"{path} is corrupt: the .keras zip is truncated; use another "
                          "checkpoint or train again")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise CnnctlError(f"{path} is not a Keras model file (.keras zip): it has no "
                              "config.json; pass a .keras file saved by cnnctl or keras")


@dataclasses.dataclass
class TestImages:
    """Test images of a run, as its model sees them before its own preprocessing."""

    __test__ = False  # not a pytest class

    x: np.ndarray  # float32 [N, H, W, C], 0..255
    y: np.ndarray  # int class indices [N]
    files: "list[str] | None"  # the image file of each, when the data set has files
    total: int  # images in the run's test split (max_test_samples applied); N <= total
    held: int  # images the data set's test split holds (before max_test_samples)

    def name(self, i: int) -> str:
        """The image's file path, else `test image I` (its index in the test split)."""
        return self.files[i] if self.files else f"test image {i}"

    def described(self) -> str:
        """`all 10,000 test images` or `2,000 of 10,000 test images`."""
        n = len(self.y)
        own = (f" (data.max_test_samples keeps {self.total:,} of the {self.held:,})"
               if self.held > self.total else "")
        return (f"all {n:,} test images{own}" if n == self.total
                else f"{n:,} of {self.total:,} test images{own}")


def test_arrays(run_dir: Path, input_shape, limit: int | None = None) -> TestImages:
    """The test images (float32 0..255) and int labels of a run, read as its config says (its
    own data.max_test_samples applies); `limit` keeps only the first ones.

    Raises:
        CnnctlError: the run has no test split.
    """
    from cnnctl.data import load as data_lib

    loaded = runs.load_config(run_dir)
    config = loaded.config
    own = config.data.max_test_samples
    keep = min(x for x in (own, limit) if x) if (own or limit) else None
    config = config.model_copy(update={"data": config.data.model_copy(
        update={"max_test_samples": keep})})
    with loaded.located():  # RUN/config.yaml:LINE: data.train_dir: ... (data moved away)
        splits = data_lib.load(config, input_shape=tuple(input_shape), label_mode="int",
                               splits=("test",))
    if splits.test is None:
        raise CnnctlError(f"{run_dir}: the run has no test split (data.test_dir, or a source with "
                          "one); these commands use its test images")
    batches = ([splits.test[i] for i in range(len(splits.test))]
               if hasattr(splits.test, "__getitem__") else splits.test.as_numpy_iterator())
    xs, ys = zip(*[(np.asarray(x), np.asarray(y)) for x, y in batches])
    x, y = np.concatenate(xs), np.concatenate(ys).reshape(-1).astype(int)
    held = splits.available.get("test", len(y))
    # the whole split (less unreadable files) unless `limit` cut it
    total = min(held, own or held) if limit is not None and len(y) >= limit else len(y)
    return TestImages(x, y, splits.files.get("test"), total, held)


def load_model(path: Path) -> keras.Model:
    """Load a model for inference, in Keras safe mode (no Python code from the file runs).

    Args:
        path: a run directory (its checkpoints/best.keras, else checkpoints/last.keras)
            or a .keras file.

    Raises:
        CnnctlError: nothing at `path`, no checkpoint, not a Keras model, a corrupt file, or a
            model that holds Python code (a Lambda layer) which safe mode refuses to run.
    """
    file = _model_file(Path(path))
    _check_archive(file)
    try:
        from cnnctl.model import extra_layers  # noqa: F401  registers LayerScale, DropPath
        from cnnctl.model import inputs  # noqa: F401  registers cnnctl's own layers (RandomPadCrop)

        model = keras.saving.load_model(file, safe_mode=True, compile=False)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        # zip CRC failures and h5py read errors both mean damaged bytes
        raise CnnctlError(f"{file} is corrupt ({_cause(e)}); use another checkpoint or "
                          "train again") from None
    except (ValueError, TypeError, KeyError) as e:
        text = str(e)  # Keras nests the cause of a failed layer inside its parents' errors
        if "safe_mode=False" not in text:
            raise CnnctlError(f"cannot load {file}: {_cause(e)}; it may use custom layers "
                              "cnnctl does not know, or come from another Keras version") from None
        if "lambda" not in text.lower():  # e.g. a vocabulary file outside the archive
            raise CnnctlError(f"refused to load {file}: safe mode forbids it ({_cause(e)}); "
                              "only load models you trust") from None
        what = "Lambda layer" if "`Lambda` layer" in text else "a lambda"
        raise CnnctlError(f"refused to load {file}: it contains Python code ({what}) that safe "
                          "mode will not run; only load models you trust, and rebuild this one "
                          "without Lambda layers or lambdas") from None
    return model


CAN_DO = ("cnnctl evaluates, predicts and explains image classifiers with one image input "
          "[batch, height, width, channels] (1 or 3 channels) and one output of class scores "
          "[batch, classes]")


def _shape(tensor) -> str:
    return "[" + ", ".join(str(d) for d in tuple(tensor.shape)) + "]"


def check_classifier(model, path, sized_by_config: bool = False) -> None:
    """Refuse, in one line naming `path`, a model that is not an image classifier cnnctl can
    use: one input [batch, height, width, 1 or 3] of fixed size (or of any size, when
    `sized_by_config`: its run's data.image_size says the size), one output [batch, classes].

    Raises:
        CnnctlError: what the model has instead, and what cnnctl works with.
    """
    try:
        inputs, outputs = list(model.inputs or []), list(model.outputs or [])
    except (AttributeError, ValueError):  # a Sequential model saved before it was built
        raise CnnctlError(f"{path}: the model was saved unbuilt: it has no input shape; "
                          f"{CAN_DO}") from None
    shapes = ", ".join(_shape(t) for t in inputs)
    if len(inputs) != 1:
        raise CnnctlError(f"{path}: the model has {len(inputs)} inputs ({shapes}); {CAN_DO}")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise CnnctlError(f"{path}: the model's input {shapes} is not an image "
                          f"[batch, height, width, channels]; {CAN_DO}")
    if any(d is None for d in shape[1:3]) and not sized_by_config:
        raise CnnctlError(f"{path}: the model's input {shapes} has no fixed height and width; "
                          "cnnctl resizes images to the model's input size: save the model "
                          "with a fixed input shape")
    if shape[3] not in (1, 3):
        raise CnnctlError(f"{path}: the model's input {shapes} has {shape[3]} channels, not 1 "
                          f"(grayscale) or 3 (rgb); {CAN_DO}")
    shapes = ", ".join(_shape(t) for t in outputs)
    if len(outputs) != 1:
        raise CnnctlError(f"{path}: the model has {len(outputs)} outputs ({shapes}); {CAN_DO}")
    shape = tuple(outputs[0].shape)
    if len(shape) == 4:
        raise CnnctlError(f"{path}: the model's output {shapes} is a map per pixel: it looks "
                          f"like a segmentation or dense-prediction model; {CAN_DO}")
    if len(shape) != 2:
        raise CnnctlError(f"{path}: the model's output {shapes} is not a vector of class "
                          f"scores; {CAN_DO}")
    if shape[1] is None:
        raise CnnctlError(f"{path}: the model's output {shapes} has no fixed number of "
                          f"classes; {CAN_DO}")


def _cause(error: Exception, limit: int = 160) -> str:
    """The innermost message of a (possibly nested) Keras loading error, on one short line."""
    text = str(error).rsplit("Exception encountered:", 1)[-1].strip().strip("'\"")
    line = text.splitlines()[0] if text else type(error).__name__
    # Keras goes on to advise decorating classes with register_keras_serializable, which is
    # advice for the model's author; the user needs the name and where it claims to come from.
    unknown = re.match(r"Could not locate (class|function) '([^']*)'", line)
    if unknown:
        module = re.search(r"Full object config: \{'module': '([^']*)'", text)
        line = f"unknown {unknown[1]} {unknown[2]!r}" + (
            f" from module {module[1]!r}" if module and module[1].split(".")[0] != "keras" else "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def class_names_for(path: Path) -> list[str] | None:
    """The class names saved with a run: RUN/class_names.json, or None if there is none.

    For a .keras file the file beside it is tried, then its run directory when it lies in
    RUN/checkpoints/.

    Raises:
        CnnctlError: class_names.json exists but is not a JSON list of strings.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / runs.CLASS_NAMES]
    else:
        candidates = [path.parent / runs.CLASS_NAMES]
        if path.parent.name == runs.CHECKPOINTS:
            candidates.append(path.parent.parent / runs.CLASS_NAMES)
    for candidate in candidates:
        if candidate.is_file():
            try:
                names = json.loads(candidate.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                names = None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise CnnctlError(f"{candidate} is not a JSON list of strings; fix it or "
                                  "delete it and pass the class names another way")
            return names
    return None
