"""`cnnctl export`: a trained model in the formats the rest of the world serves, checked against
the Keras model it came from.

The exported model is the saved one, preprocessing included: it takes raw images (float32,
pixel values 0..255) of the training size, [N, H, W, C], and returns class probabilities.
Keras's own export paths do the work: `model.export` (TensorFlow SavedModel, ONNX through
tf2onnx) and the LiteRT (TFLite) converter on that SavedModel. The parity check then runs the
exported file with its own runtime (TensorFlow, onnxruntime, the TFLite interpreter) on test
images and compares its probabilities with the Keras model's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import tempfile
import warnings
from pathlib import Path

import numpy as np

from cnnctl import outputs
from cnnctl.backend import keras, quiet_stderr
from cnnctl.errors import CnnctlError

FORMATS = ("savedmodel", "onnx", "tflite")
QUANTIZE = ("float16", "int8")
# The agreement an export must reach: (largest |probability difference|, share of equal top-1
# classes). Float32 formats compute the same function up to rounding; quantised ones do not.
TOLERANCE = {None: (1e-4, 1.0), "float16": (1e-2, 0.98), "int8": (0.15, 0.9)}


class ParityError(CnnctlError):
    """The exported model does not agree with the Keras model within the tolerance."""

    exit_code = 4


@dataclasses.dataclass
class Parity:
    images: int
    max_abs_diff: float
    top1_agreement: float
    tolerance: tuple[float, float]

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance[0] and self.top1_agreement >= self.tolerance[1]


@contextlib.contextmanager
def _quiet():
    """Keep the converters' and runtimes' notes off the terminal: the LiteRT converter's and
    XNNPACK's C++ INFO lines, tf.lite.Interpreter's deprecation notice (cnnctl runs the file
    with it only to check it) and NumPy FutureWarnings from inside the exporters."""
    with quiet_stderr(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        yield


def _tensorflow():
    if keras.backend.backend() != "tensorflow":
        raise CnnctlError(f"cnnctl export uses TensorFlow's exporters; run it with "
                          f"KERAS_BACKEND=tensorflow (this is {keras.backend.backend()})")
    import tensorflow as tf

    return tf


def export(model: keras.Model, fmt: str, out: Path, quantize: str | None = None,
           calibration: np.ndarray | None = None) -> Path:
    """Write `model` as `fmt` to `out` (a folder for savedmodel, a file otherwise).

    Raises:
        CnnctlError: unknown format, quantisation that does not apply, a missing exporter.
    """
    tf = _tensorflow()
    check_options(fmt, quantize)
    out = Path(out)
    if fmt == "savedmodel":
        return outputs.write_folder(out, lambda tmp: model.export(
            str(tmp), format="tf_saved_model", verbose=False))
    if fmt == "onnx":
        spec = [keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32")]
        return outputs.write_file(out, lambda tmp: model.export(
            str(tmp), format="onnx", verbose=False, input_signature=spec))
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            samples = calibration[:100]
            converter.representative_dataset = lambda: ([x[None]] for x in samples)
        flatbuffer = converter.convert()
    return outputs.write_file(out, lambda tmp: tmp.write_bytes(flatbuffer))


def check_options(fmt: str, quantize: str | None) -> None:
    """Refuse a format or quantisation that does not exist or apply, or whose exporter and
    runtime are not installed.

    Raises:
        CnnctlError: one line saying what to choose or install.
    """
    if fmt not in FORMATS:
        raise CnnctlError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if quantize not in (None, *QUANTIZE):
        raise CnnctlError(f"--quantize {quantize}: choose float16 or int8")
    if quantize and fmt != "tflite":
        raise CnnctlError(f"--quantize applies to --format tflite, not {fmt}")
    missing = [m for m in ("tf2onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if fmt == "onnx" and missing:
        raise CnnctlError(f"--format onnx needs the [export] extra ({' and '.join(missing)} "
                          "missing): pip install -e \".[export]\" in the cnnctl checkout")


# format -> (recognises a previous export, what it is)
PREVIOUS = {"savedmodel": (outputs.is_savedmodel, "SavedModel export"),
            "onnx": (outputs.is_onnx, "ONNX export"),
            "tflite": (outputs.is_tflite, "TFLite export")}


def check_target(out: Path, fmt: str, force: bool = False) -> Path:
    """Refuse an --out that holds anything but a previous export of `fmt`, and that one too
    unless `force`.

    Raises:
        CnnctlError: see `outputs.check_file` / `outputs.check_folder`.
    """
    recognise, what = PREVIOUS[fmt]
    check = outputs.check_folder if fmt == "savedmodel" else outputs.check_file
    return check(Path(out), "--out", "export", recognise, what=f"a {what}", force=force)


def predict_exported(fmt: str, path: Path, images: np.ndarray) -> np.ndarray:
    """Class probabilities of the exported file, run with its own runtime."""
    tf = _tensorflow()
    x = np.asarray(images, np.float32)
    if fmt == "savedmodel":
        loaded = tf.saved_model.load(str(path))  # held: its variables die with it
        return np.asarray(loaded.serve(tf.constant(x)))
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    interpreter = tf.lite.Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def parity(model: keras.Model, fmt: str, path: Path, images: np.ndarray,
           quantize: str | None = None) -> Parity:
    want = np.asarray(model.predict(images, verbose=0, batch_size=64), np.float32)
    got = np.asarray(predict_exported(fmt, path, images), np.float32).reshape(want.shape)
    top = (want.argmax(-1) == got.argmax(-1)) if want.shape[-1] > 1 else \
        ((want[:, 0] > 0.5) == (got[:, 0] > 0.5))
    return Parity(len(images), float(np.abs(want - got).max()), float(top.mean()),
                  TOLERANCE[quantize])


def run(path, fmt: str, out: Path, *, quantize: str | None = None, images: int = 64,
        force: bool = False) -> tuple[Path, Parity]:
    """`cnnctl export`: export a run's model (or a .keras file) and check it on `images` test
    images of its run (random 0..255 images for a bare .keras file).

    `out` must not exist, or hold a previous export of the same format and `force` be given;
    the export is written beside it and renamed into place, so a failed export leaves the
    previous one as it was.

    Raises:
        CnnctlError: see `export` and `check_target`; ParityError when the check fails (the file
            is kept, to look at).
    """
    from cnnctl import runs
    from cnnctl.use import trained

    check_options(fmt, quantize)
    check_target(out, fmt, force)  # before the model loads: a refusal costs nothing
    path = Path(path)
    opened = trained.open_model(path)
    model, shape = opened.model, opened.input_shape
    if opened.run_dir is not None and (opened.run_dir / runs.CONFIG).is_file():
        samples = opened.test_images(images).x
    else:
        samples = np.random.default_rng(0).uniform(0, 255, (images, *shape)).astype(np.float32)
    with _quiet():
        written = export(model, fmt, Path(out), quantize, calibration=samples)
        check = parity(model, fmt, written, samples, quantize)
    if not check.ok:
        raise ParityError(
            f"{written}: the exported model disagrees with the Keras model on {check.images} "
            f"images: largest probability difference {check.max_abs_diff:.3g} (allowed "
            f"{check.tolerance[0]:g}), top-1 agreement {check.top1_agreement:.1%} (needed "
            f"{check.tolerance[1]:.0%}); the file is kept for inspection")
    return written, check
