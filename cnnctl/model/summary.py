"""`cnnctl check`: per-layer shapes, parameters and FLOPs of the model a config describes."""

from __future__ import annotations

import math

from cnnctl.backend import keras

from cnnctl.config import load as config_lib
from cnnctl.model import build as model_lib


def layer_flops(layer: keras.layers.Layer, input_shape: tuple, output_shape: tuple) -> int | None:
    """Forward FLOPs per example: 2 per multiply-accumulate of convolutions and dense layers;
    None where they depend on an image size the model leaves open (`input_shape: [null, ...]`).

    Element-wise work (biases, activations, normalisation, pooling, merges) is not counted, as
    in the usual FLOP tables of CNN papers.
    """
    if isinstance(layer, keras.Model):
        inner = [layer_flops(inner, _shape(inner, "input"), _shape(inner, "output"))
                 for inner in layer.layers]
        return None if None in inner else sum(inner)
    if None in tuple(input_shape[1:-1]) + tuple(output_shape[1:-1]):
        weighted = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                    keras.layers.SeparableConv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)
        return None if isinstance(layer, weighted) else 0
    if isinstance(layer, keras.layers.SeparableConv2D):
        positions = math.prod(output_shape[1:-1])
        return 2 * positions * (math.prod(layer.depthwise_kernel.shape)
                                + math.prod(layer.pointwise_kernel.shape))
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return 2 * math.prod(output_shape[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return 2 * math.prod(input_shape[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Conv2D):
        return 2 * math.prod(output_shape[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(input_shape[1:-1]) * math.prod(layer.kernel.shape)
    return 0


def _shape(layer, which: str) -> tuple:
    try:
        tensor = getattr(layer, which)
    except (AttributeError, ValueError):
        return ()
    if isinstance(tensor, (list, tuple)):
        if not tensor:  # an InputLayer inside a nested model has `input == []`
            return ()
        tensor = tensor[0]
    return tuple(tensor.shape)


def describe(loaded: config_lib.LoadedConfig) -> dict:
    """Build the model and describe it as plain data (what `check --json` prints).

    The augmentation and preprocessing layers are built too (they are not part of the
    description), so that their mistakes are found without data; where the data set's classes
    are known without reading it (`sources.known_class_names`), the output layer and the loss
    are checked against them; whether the output layer gives what the loss reads (logits or
    probabilities, `loss.from_logits`) is checked always.

    Raises:
        ConfigError: located at the line of the field that does not fit.
    """
    from cnnctl.model import classes
    from cnnctl.data import sources
    from cnnctl.model import inputs

    model, infos = model_lib.build_with_info(loaded, pretrained=False)  # same shapes, no download
    with loaded.located():
        inputs.front_layers(loaded.config, every_augmentation=True)
        from cnnctl.train import phases

        phases.check(model, loaded.config)  # train.phases name layers of the backbone
    from cnnctl.train import class_metrics, class_weights

    with loaded.located():
        class_metrics.check_monitors(loaded.config)  # as `cnnctl train` does, before any data
    class_names = sources.known_class_names(loaded.config.data)
    if class_names:
        classes.check_output(loaded, model.output_shape[-1], class_names)
        with loaded.located():
            class_weights.check_names(loaded.config.train.class_weight, class_names)
    classes.check_logits(loaded, model)  # needs only the model and the loss
    layers = []
    for info in infos:
        layers.append({
            "name": info.layer.name,
            "type": info.type,
            "output_shape": list(info.output_shape[1:]),
            "params": int(info.layer.count_params()),
            "flops": layer_flops(info.layer, info.input_shapes[0], info.output_shape),
        })
    flops = [layer["flops"] for layer in layers]
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return {
        "config": loaded.file,
        "model": model.name,
        "kind": "sequential" if isinstance(model, keras.Sequential) else "functional",
        "input_shape": list(model.input_shape[1:]),
        "output_shape": list(model.output_shape[1:]),
        "params": int(model.count_params()),
        "trainable_params": int(trainable),
        "non_trainable_params": int(model.count_params() - trainable),
        "flops": None if None in flops else int(sum(flops)),
        "layers": layers,
    }


def format_table(info: dict) -> str:
    """The human-readable form of `describe`'s result."""
    rows = [("layer", "type", "output shape", "params", "FLOPs")]
    for layer in info["layers"]:
        flops = "?" if layer["flops"] is None else _si(layer["flops"]) if layer["flops"] else "-"
        rows.append((layer["name"], layer["type"], str(tuple(layer["output_shape"])),
                     f"{layer['params']:,}", flops))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    line = "  ".join("-" * w for w in widths)
    out = [f"{info['model']} ({info['kind']}) from {info['config']}",
           f"input {tuple(info['input_shape'])} -> output {tuple(info['output_shape'])}", ""]
    for k, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if k == 0:
            out.append(line)
    out.append(line)
    out.append(f"params: {info['params']:,} (trainable {info['trainable_params']:,}, "
               f"non-trainable {info['non_trainable_params']:,})")
    if info["flops"] is None:
        out.append("forward FLOPs per example: depend on the image size (model.input_shape "
                   "leaves it open)")
    else:
        out.append(f"forward FLOPs per example: {info['flops']:,} ({_si(info['flops'])})")
    return "\n".join(out)


def _si(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)
