"""`cnnctl visualize`: what a trained network is made of: the first layer's filters as a grid,
the feature maps of each conv layer for one image, and the model diagram."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnctl import outputs
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError

MAX_MAPS = 16  # feature maps shown per layer


def _grid(count: int) -> tuple[int, int]:
    cols = int(np.ceil(np.sqrt(count)))
    return int(np.ceil(count / cols)), cols


def _convs(network: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]


def filters_figure(layer: keras.layers.Layer):
    """The kernels of a conv layer, one tile each: in colour for 3 input channels, else grey
    (the mean over input channels); each tile scaled to its own range."""
    from cnnctl import plots

    kernel = keras.ops.convert_to_numpy(layer.kernel)  # [kh, kw, in, out]
    rows, cols = _grid(kernel.shape[-1])
    fig = plots.new_figure(1.1 * cols, 1.1 * rows + 0.4)
    for i in range(kernel.shape[-1]):
        tile = kernel[..., i]
        tile = tile if tile.shape[-1] == 3 else tile.mean(axis=-1)
        tile = (tile - tile.min()) / max(float(np.ptp(tile)), 1e-12)
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(tile, cmap=None if tile.ndim == 3 else "gray", interpolation="nearest")
        ax.axis("off")
    fig.suptitle(f"{plots.literal(layer.name)}: {kernel.shape[-1]} filters of {kernel.shape[0]}x{kernel.shape[1]}"
                 f"x{kernel.shape[2]}", fontsize=10)
    return fig


def feature_maps(model: keras.Model, image: np.ndarray) -> dict[str, np.ndarray]:
    """Layer name -> the feature maps [h, w, channels] of every conv layer for one image."""
    from cnnctl.use import explain

    network, x = explain.prepared_input(model, image[None])
    maps = {}
    for layer in _convs(network):
        probe = explain.probe_model(network, layer)
        maps[layer.name] = keras.ops.convert_to_numpy(probe(x, training=False)[0])[0]
    return maps


def maps_figure(name: str, maps: np.ndarray):
    from cnnctl import plots

    shown = min(maps.shape[-1], MAX_MAPS)
    rows, cols = _grid(shown)
    fig = plots.new_figure(1.3 * cols, 1.3 * rows + 0.4)
    for i in range(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(maps[..., i], cmap="viridis")
        ax.axis("off")
    fig.suptitle(f"{plots.literal(name)}: {shown} of {maps.shape[-1]} feature maps, {maps.shape[0]}x"
                 f"{maps.shape[1]}", fontsize=10)
    return fig


def run(path, image: str | None = None, out: Path = Path("visualize")) -> tuple[list[Path], list[str]]:
    """Write filters.png, featuremaps_LAYER.png (with `image`) and model.png into `out`.

    Returns:
        (files written, notes on what could not be drawn).

    Raises:
        CnnctlError: the model has no conv layer, or the image cannot be read.
    """
    from cnnctl import plots
    from cnnctl.use import explain
    from cnnctl.use import trained

    out = outputs.check_folder(Path(out), "--out", "visualize",
                               lambda p: outputs.is_png_of(p, "visualize"), what="PNGs")
    opened = trained.open_model(path)
    model = opened.model
    network, _ = explain.network_of(model)
    convs = _convs(network)
    if not convs:
        raise CnnctlError(f"{path}: the model has no conv2d layer; there are no filters to show")
    pixels = None
    if image is not None:  # before anything is written
        pixels, status = opened.load_images([image])
        if status[0][1] is not None:
            raise CnnctlError(f"--image {image}: {status[0][1]}")
    written = [plots.save(filters_figure(convs[0]), out / "filters.png", "visualize")]
    if pixels is not None:
        for name, maps in feature_maps(model, pixels[0]).items():
            written.append(plots.save(maps_figure(name, maps), out / f"featuremaps_{name}.png",
                                      "visualize"))
    notes = []
    missing = diagram_missing()
    if missing:
        notes.append(f"no model diagram (model.png): {missing}")
    else:
        written.append(outputs.write_file(out / "model.png", lambda tmp: _diagram(network, tmp)))
    return written, notes


def diagram_missing() -> str | None:
    """What the model diagram needs and is not installed, as advice, or None."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pydot") is None:
        return ("it needs the [diagram] extra: pip install -e \".[diagram]\" in the cnnctl "
                "checkout, and Graphviz (apt-get install graphviz)")
    if shutil.which("dot") is None:
        return "it needs Graphviz's `dot` program: apt-get install graphviz (or brew install graphviz)"
    return None


def _diagram(network: keras.Model, out: Path) -> None:
    """keras.utils.plot_model into the PNG `out`, marked as a visualize output."""
    from PIL import Image, PngImagePlugin

    drawn = out.with_name(out.name + ".png")  # plot_model picks the format from the suffix
    try:
        keras.utils.plot_model(network, to_file=str(drawn), show_shapes=True,
                               show_layer_names=True, dpi=80)
        info = PngImagePlugin.PngInfo()
        for key, value in outputs.png_metadata("visualize").items():
            info.add_text(key, value)
        with Image.open(drawn) as image:
            image.save(out, format="PNG", pnginfo=info)
    finally:
        drawn.unlink(missing_ok=True)
