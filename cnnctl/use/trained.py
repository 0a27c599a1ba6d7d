"""Open a trained model the one way every command does: `cnnctl predict`, `explain` and
`visualize` get the model, its class names and the colour mode its images were read with from
`open_model`, so that one image gives one set of pixels, and one answer, in each of them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cnnctl import runs
from cnnctl.data import images
from cnnctl.errors import CnnctlError


@dataclasses.dataclass
class TrainedModel:
    """A loaded model with what its training said about its inputs."""

    model: object  # keras.Model, loaded in safe mode
    class_names: list[str] | None  # from class_names.json, when the run has one
    color_mode: str | None  # the run's data.color_mode (None: from the model's channels)
    run_dir: Path | None  # the run directory the model belongs to, if any

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.model.input_shape[1:])

    def labels(self) -> list[str]:
        """The class names, else "0", "1", ... for each output."""
        return self.class_names or [str(i) for i in range(int(self.model.output_shape[-1]))]

    def load_images(self, paths: list[str]) -> tuple[np.ndarray, list[tuple[str, str | None]]]:
        """`images.load_images` as training read the run's images (size and colour mode)."""
        return images.load_images(paths, self.input_shape, self.color_mode)


def run_dir_of(path: Path) -> Path | None:
    """The run directory of a run directory or of RUN/checkpoints/X.keras, else None."""
    path = Path(path)
    for candidate in (path, path.parent.parent):
        if runs.is_run(candidate):
            return candidate
    return None


def open_model(path) -> TrainedModel:
    """Load a run's model (or a .keras file) with its class names and colour mode.

    A run whose config.yaml no longer validates still opens: only a `data.color_mode`
    other than the channels' default is lost then.

    Raises:
        CnnctlError: see `evaluate.load_model` and `evaluate.class_names_for`.
    """
    from cnnctl.use import evaluate

    path = Path(path)
    model = evaluate.load_model(path)
    class_names = evaluate.class_names_for(path)
    run_dir = run_dir_of(path)
    color_mode = None
    if run_dir is not None:
        try:
            config = runs.load_config(run_dir).config
        except CnnctlError:
            config = None
        color_mode = config.data.color_mode if config is not None and config.data else None
    return TrainedModel(model, class_names, color_mode, run_dir)
