"""`cnnctl explain`: where a trained network looked, as class-activation heat maps.

Grad-CAM (Selvaraju et al., 2017) works for any conv network: the feature maps of a conv layer
weighted by the mean gradient of the class score over each map. Classic CAM (Zhou et al., 2016)
needs no gradient but a network that ends in global average pooling and one dense layer: the
last feature maps weighted by that layer's weights for the class.

A model saved by cnnctl is the configured network nested inside an outer model that holds the
augmentation and preprocessing layers; the heat maps are taken inside the network, after the
preprocessing, so that they describe the same computation as a prediction.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cnnctl import outputs
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError

METHODS = ("gradcam", "cam")


def network_of(model: keras.Model) -> tuple[keras.Model, list]:
    """(the network that holds the conv layers, the outer layers applied before it)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) == 1 and any(len(l.output.shape) == 4 for l in nested[0].layers
                                if not isinstance(l, keras.layers.InputLayer)):
        front = model.layers[1:model.layers.index(nested[0])]
        return nested[0], front
    return model, []


def finish(model: keras.Model, network: keras.Model, outputs):
    """The model's output from its network's: the outer layers after the network (the
    softmax of a logits run, a float32 cast) applied to `outputs`."""
    if network is model:
        return outputs
    for layer in model.layers[model.layers.index(network) + 1:]:
        outputs = layer(outputs)
    return outputs


def _feature_layers(network: keras.Model) -> list[keras.layers.Layer]:
    """Layers whose output is a feature map [B, H, W, C] (conv, pooling, activations ...)."""
    return [layer for layer in network.layers if not isinstance(layer, keras.layers.InputLayer)
            and len(layer.output.shape) == 4]


def conv_layer(model: keras.Model, name: str | None = None) -> keras.layers.Layer:
    """The named layer, or the last layer with a 4-D output (the last conv stage's maps).

    Raises:
        CnnctlError: no such layer, or a layer without a feature map.
    """
    network, _ = network_of(model)
    maps = _feature_layers(network)
    if not maps:
        raise CnnctlError("the model has no layer with a feature map (4-D output); Grad-CAM "
                          "needs a convolutional network")
    if name is None:
        return maps[-1]
    names = [layer.name for layer in maps]
    if name not in names:
        raise CnnctlError(f"--layer {name}: not a layer with a feature map of this model; "
                          f"choose one of {', '.join(names)}")
    return maps[names.index(name)]


def probe_model(network: keras.Model, target: keras.layers.Layer) -> keras.Model:
    """network input -> (the target layer's output, the network's output). A Sequential is
    chained anew on a fresh input: the nodes of a loaded one need not belong to its outputs."""
    if not isinstance(network, keras.Sequential):
        return keras.Model(network.inputs, [target.output, network.outputs[0]])
    inputs = keras.Input(network.input_shape[1:])
    x, features = inputs, None
    for layer in network.layers:
        x = layer(x)
        features = x if layer is target else features
    return keras.Model(inputs, [features, x])


def prepared_input(model: keras.Model, images: np.ndarray):
    network, front = network_of(model)
    x = keras.ops.convert_to_tensor(images, dtype="float32")
    for layer in front:
        x = layer(x, training=False)
    return network, x


def gradcam(model: keras.Model, images: np.ndarray, layer: str | None = None,
            class_index: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heat maps of a batch (float32 images 0..255, the model's input).

    Returns:
        (heat maps [B, h, w] in 0..1 at the layer's resolution, probabilities [B, classes]).
        The map of each image is for `class_index[i]`, by default its predicted class.

    Raises:
        CnnctlError: not on the tensorflow backend (the gradient is TensorFlow's), or no layer.
    """
    if keras.backend.backend() != "tensorflow":
        raise CnnctlError(f"explain --method gradcam takes gradients with TensorFlow; run it "
                          f"with KERAS_BACKEND=tensorflow (this is {keras.backend.backend()}), "
                          "or use --method cam")
    import tensorflow as tf

    target = conv_layer(model, layer)
    network, x = prepared_input(model, images)
    probe = probe_model(network, target)
    with tf.GradientTape() as tape:
        maps, probs = probe(x, training=False)
        probs = finish(model, network, probs)
        chosen = (np.argmax(probs.numpy(), axis=-1) if class_index is None
                  else np.asarray(class_index))
        score = tf.reduce_sum(tf.gather(probs, chosen, axis=1, batch_dims=1))
    grads = tape.gradient(score, maps)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    heat = tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1)).numpy()
    return _unit(heat), np.asarray(probs, np.float32)


def cam(model: keras.Model, images: np.ndarray,
        class_index: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Classic CAM of a network ending in global average pooling and one dense layer.

    Returns:
        As `gradcam`.

    Raises:
        CnnctlError: the network does not end that way.
    """
    network, x = prepared_input(model, images)
    layers = [l for l in network.layers if not isinstance(l, keras.layers.InputLayer)]
    tail = [l for l in layers if not isinstance(l, (keras.layers.Dropout, keras.layers.Activation))]
    if len(tail) < 3 or not isinstance(tail[-1], keras.layers.Dense) or \
            not isinstance(tail[-2], keras.layers.GlobalAveragePooling2D):
        raise CnnctlError("--method cam needs a network that ends in global_avg_pool2d and one "
                          "dense layer; use --method gradcam for this one")
    pool = tail[-2]
    probe = (probe_model(network, layers[layers.index(pool) - 1])
             if isinstance(network, keras.Sequential)
             else keras.Model(network.inputs, [pool.input, network.outputs[0]]))
    maps, probs = probe(x, training=False)
    probs = finish(model, network, probs)
    maps, probs = keras.ops.convert_to_numpy(maps), keras.ops.convert_to_numpy(probs)
    chosen = np.argmax(probs, axis=-1) if class_index is None else np.asarray(class_index)
    kernel = keras.ops.convert_to_numpy(tail[-1].kernel)  # [C, classes]
    heat = np.maximum(np.einsum("bhwc,cb->bhw", maps, kernel[:, chosen]), 0)
    return _unit(heat), probs.astype(np.float32)


def _unit(heat: np.ndarray) -> np.ndarray:
    top = heat.reshape(len(heat), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(top > 0, heat / np.where(top > 0, top, 1), 0).astype(np.float32)


def upsample(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    """Heat maps [B, h, w] resized (bilinear) to the image size."""
    resized = keras.ops.image.resize(keras.ops.convert_to_tensor(heat[..., None]),
                                     (height, width), interpolation="bilinear")
    return np.clip(keras.ops.convert_to_numpy(resized)[..., 0], 0, 1)


def figure(image: np.ndarray, heat: np.ndarray, title: str):
    """Original, heat map and overlay side by side, under `title` (drawn verbatim: see
    `plots.literal`)."""
    from cnnctl import plots

    fig = plots.new_figure(9, 3.4)
    shown, kwargs = plots.displayable(image)
    big = upsample(heat[None], image.shape[0], image.shape[1])[0]
    for i, caption in enumerate(("image", "heat map", "overlay")):
        ax = fig.add_subplot(1, 3, i + 1)
        if i != 1:
            ax.imshow(shown, **kwargs)
        if i:
            drawn = ax.imshow(big, cmap="jet", alpha=0.45 if i == 2 else 1.0, vmin=0, vmax=1)
        if i == 1:
            bar = fig.colorbar(drawn, ax=ax, fraction=0.046, pad=0.03, ticks=[0, 0.5, 1])
            bar.set_label("evidence for the class (1 = the image's most)", fontsize=8)
            bar.ax.tick_params(labelsize=7)
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    fig.suptitle(plots.literal(title, 2 * plots.MAX_TITLE_CHARS), fontsize=10)
    return fig


def overlay_png(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45,
                min_side: int = 224) -> bytes:
    """The overlay panel of `figure` as PNG bytes: `image` (float 0..255 [H, W, 1 or 3]) under
    its heat map in the jet colour map, at `alpha`, enlarged (nearest pixel) so that its
    shorter side is at least `min_side` pixels."""
    import io

    from matplotlib import colormaps
    from PIL import Image

    big = upsample(heat[None], image.shape[0], image.shape[1])[0]
    colours = colormaps["jet"](big)[..., :3] * 255
    base = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    blended = np.clip((1 - alpha) * base + alpha * colours, 0, 255).astype(np.uint8)
    picture = Image.fromarray(blended)
    scale = max(1, -(-min_side // min(picture.size)))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale),
                                 Image.Resampling.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def _is_explain_png(path: Path) -> bool:
    return outputs.is_png_of(path, "explain")


def run(path, inputs: list[str], *, method: str = "gradcam", layer: str | None = None,
        out: Path = Path("explain")) -> list[dict]:
    """`cnnctl explain`: one PNG per readable image in `out` (original, heat map, overlay),
    named after the image (`outputs.unique_stems`: images of the same name in different
    folders get their folder names in front) and what drew it: `0001.gradcam-LAYER.png` (so
    maps of several layers sit side by side), `0001.cam.png`. `out` must be new, empty or hold
    only earlier explain PNGs.

    Returns:
        Per input: {"path", "png", "class", "probability"} or {"path", "error"}.

    Raises:
        CnnctlError: unknown method, a model or layer that does not fit it, nothing readable.
    """
    from cnnctl import plots
    from cnnctl.use import predict
    from cnnctl.use import trained

    if method not in METHODS:
        raise CnnctlError(f"--method {method}: choose gradcam or cam")
    if method == "cam" and layer is not None:
        raise CnnctlError("--layer applies to gradcam; cam always uses the maps before the "
                          "global average pooling")
    out = outputs.check_folder(Path(out), "--out", "explain", _is_explain_png,
                               what="heat-map PNGs")
    opened = trained.open_model(path)
    model, names = opened.model, opened.labels()
    files, missing = [], []
    for item in inputs:
        found, why = predict.expand(item)
        files += found
        missing += [(item, why)] if why else []
    pixels, status = opened.load_images(files)
    status += missing
    readable = [p for p, error in status if error is None]
    if not readable:
        raise CnnctlError(f"none of the images could be read ({status[0][0]}: {status[0][1]})"
                          if status else "no image files given")
    if method == "gradcam":
        heat, probs = gradcam(model, pixels, layer)
        target = conv_layer(model, layer).name
        kind, suffix = f"Grad-CAM at layer {target}", "gradcam-" + re.sub(r"[^\w.-]", "_", target)
    else:
        heat, probs = cam(model, pixels)
        kind, suffix = "CAM (the maps before global average pooling)", "cam"
    results, by_path = [], dict(zip(readable, zip(pixels, heat, probs)))
    stems = outputs.unique_stems(readable)
    for file, error in status:
        if error is not None:
            results.append({"path": file, "error": error})
            continue
        image, h, p = by_path[file]
        top = int(np.argmax(p))
        png = out / f"{stems[file]}.{suffix}.png"
        title = f"{Path(file).name}: {names[top]} ({p[top]:.1%}), {kind}"
        plots.save(figure(image, h, title), png, "explain")
        results.append({"path": file, "png": str(png), "class": names[top],
                        "probability": float(p[top])})
    return results
