"""The served model: opened as `predict` opens it, compiled for each batch size it will see
before the server listens, and answering exactly as `cnnctl predict` does."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from cnnctl import runs
from cnnctl.backend import keras
from cnnctl.data import images
from cnnctl.errors import CnnctlError
from cnnctl.use import explain, predict, trained


def batch_sizes(max_batch: int) -> list[int]:
    """The batch sizes the model is run at: powers of two below `max_batch`, and `max_batch`.
    A batch is padded up to the next one, so the backends compile a few shapes, all at start-up
    (JAX compiles once per shape)."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch]


@dataclasses.dataclass
class Classifier:
    """One trained model in memory, with what the API tells about it."""

    opened: trained.TrainedModel
    source: Path  # the run directory or .keras file given
    max_batch: int
    explain_method: str | None  # "cam", "gradcam" or None: the model allows no heat map

    def __post_init__(self):
        # asked on every request, and Keras computes a model's shapes anew at each call
        model = self.opened.model
        self.names: list[str] = (self.opened.labels() if int(model.output_shape[-1]) > 1
                                 else self.opened.class_names or ["0", "1"])
        self.input_shape: tuple[int, int, int] = tuple(int(d) for d in self.opened.input_shape)

    def decode(self, blobs: list[bytes]) -> tuple[np.ndarray, list[str | None]]:
        """Uploaded images as the model's input, decoded as training decoded its files."""
        return images.load_encoded(blobs, self.input_shape, self.opened.color_mode)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """[N, classes] probabilities of N <= max_batch images, as `cnnctl predict` computes
        them (the batch is padded to one of `batch_sizes` with zeros, dropped again after)."""
        n = len(batch)
        size = next(s for s in batch_sizes(self.max_batch) if s >= n)
        if size > n:
            batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), batch.dtype)])
        return predict.probabilities(self.opened.model.predict_on_batch(batch))[:n]

    def decode_each(self, blobs: list[bytes]) -> list[np.ndarray | str]:
        """Per uploaded image: its pixels [H, W, C], or why it cannot be read."""
        batch, reasons = self.decode(blobs)
        pixels = iter(batch)
        return [next(pixels) if reason is None else reason for reason in reasons]

    def classify_decoded(self, decoded: list[np.ndarray | str]) -> list[np.ndarray | str]:
        """Per image of `decode_each`: its probabilities, in one model call for the readable
        ones, or why it cannot be read."""
        readable = [d for d in decoded if not isinstance(d, str)]
        probs = iter(self.probabilities(np.stack(readable)) if readable else ())
        return [d if isinstance(d, str) else next(probs) for d in decoded]

    def top(self, p: np.ndarray, k: int) -> list[dict]:
        names = self.names
        return predict.top_labels(p, names, max(1, min(k, len(names))))

    def overlays(self, batch: np.ndarray) -> list[dict]:
        """Per image: its class-activation overlay (PNG bytes), predicted class and probability.

        Raises:
            CnnctlError: the model allows no heat map (`explain_method` is None).
        """
        if self.explain_method is None:
            raise CnnctlError("this model gives no class-activation map")
        model = self.opened.model
        heat, probs = (explain.cam(model, batch) if self.explain_method == "cam"
                       else explain.gradcam(model, batch))
        names = self.names
        return [{"png": explain.overlay_png(image, h), "label": names[int(np.argmax(p))],
                 "prob": float(np.max(p))} for image, h, p in zip(batch, heat, probs)]

    def warm_up(self) -> None:
        """Run every batch size once (and one heat map), so no request waits for a compile."""
        for size in batch_sizes(self.max_batch):
            self.probabilities(np.zeros((size, *self.input_shape), np.float32))
        if self.explain_method is not None:
            self.overlays(np.zeros((1, *self.input_shape), np.float32))

    def metadata(self) -> dict:
        """What `GET /metadata` answers."""
        from cnnctl import __version__

        model = self.opened.model
        height, width, channels = self.input_shape
        return {
            "model": model.name,
            "source": str(self.source),
            "run_dir": str(self.opened.run_dir) if self.opened.run_dir else None,
            "class_names": self.names,
            "input_size": [height, width],
            "channels": channels,
            "color_mode": self.opened.color_mode or ("grayscale" if channels == 1 else "rgb"),
            "parameters": int(model.count_params()),
            "test_accuracy": test_accuracy(self.opened.run_dir),
            "explain": self.explain_method,
            "max_batch": self.max_batch,
            "cnnctl_version": __version__,
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
        }


def test_accuracy(run_dir: Path | None) -> float | None:
    """The run's test accuracy from its metrics.json, when it has one."""
    if run_dir is None:
        return None
    try:
        metrics = json.loads((run_dir / runs.METRICS).read_text(encoding="utf-8"))
        value = metrics["test"]["accuracy"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def heat_map_method(model, input_shape) -> str | None:
    """The heat map `cnnctl explain` can draw for this model: cam where the network ends in
    global average pooling and one dense layer, else gradcam on the TensorFlow backend where
    it has a feature map, else None."""
    probe = np.zeros((1, *input_shape), np.float32)
    for method in ("cam", "gradcam"):
        try:
            explain.cam(model, probe) if method == "cam" else explain.gradcam(model, probe)
        except CnnctlError:
            continue
        return method
    return None


def open_classifier(path: Path, max_batch: int) -> Classifier:
    """Open a run (or .keras file) as `cnnctl predict` does, and warm it up.

    Raises:
        CnnctlError: as `trained.open_model`; a model of no fixed image size.
    """
    opened = trained.open_model(path)
    shape = opened.input_shape
    if len(shape) != 3 or None in shape:
        raise CnnctlError(f"{path}: the model takes inputs of shape {opened.model.input_shape}; "
                          "serve needs one fixed-size image input [height, width, channels]")
    method = heat_map_method(opened.model, tuple(int(d) for d in shape))
    classifier = Classifier(opened, Path(path), max_batch, method)
    classifier.warm_up()
    return classifier
