"""Build the Keras model a config describes: Sequential for plain stacks, functional for graphs."""

from __future__ import annotations

import dataclasses
import math
import os
import re

from cnnctl.config import load as config_lib
from cnnctl.config import wording
from cnnctl.model import graph as graph_lib
from cnnctl.errors import CnnctlError, ConfigError
from cnnctl.config.yaml_source import format_path

from cnnctl.backend import keras

from cnnctl.model import inputs
from cnnctl.model.layers import LAYERS

_SLIDING = {"conv2d", "depthwise_conv2d", "separable_conv2d", "max_pool2d", "avg_pool2d"}


@dataclasses.dataclass
class LayerInfo:
    """What `cnnctl check` shows of one layer: where it came from and the shapes it saw."""

    layer: keras.layers.Layer
    type: str
    input_shapes: list[tuple]
    output_shape: tuple


def build(loaded: config_lib.LoadedConfig) -> keras.Model:
    """Build the model of a validated config.

    Raises:
        ConfigError: a reference, name, shape or backbone problem, with its line.
    """
    return build_with_info(loaded)[0]


def build_with_info(loaded: config_lib.LoadedConfig, *,
                    pretrained: bool = True) -> tuple[keras.Model, list[LayerInfo]]:
    """Build the model and say, for each top-level layer, its YAML type and shapes.

    `pretrained=False` leaves a backbone's weights random (same layers and parameter counts):
    enough to check a config, and needing no weights file or network."""
    cfg = loaded.config.model
    builder = _Builder(loaded, keras.Input(shape=tuple(cfg.input_shape), name=graph_lib.INPUT))
    if cfg.backbone is not None:
        base = _backbone(loaded, cfg.input_shape, pretrained)
        from cnnctl.train import phases  # train.phases choose among its layers

        phases.mark_backbone(base)
        # model.layers follow the backbone: for them (and the blocks they use), `input` is its
        # output, whether named in `inputs` or implied as the first layer's input
        out = base(builder.inputs)
        builder.tensors[base.name] = builder.tensors[graph_lib.INPUT] = out
        builder.stack.append(base)
        kind = cfg.backbone.name or f"run {cfg.backbone.run}"
        builder.infos.append(LayerInfo(base, f"backbone {kind}",
                                       [tuple(builder.inputs.shape)], tuple(out.shape)))
        builder.previous = base.name
    # nodes are built while the graph is expanded where a block asks for its input's size
    graph = graph_lib.expand(loaded, shape_of=builder.shape_of)
    builder.build_pending(graph.nodes)
    if graph.sequential:
        return keras.Sequential([builder.inputs, *builder.stack], name=cfg.name), builder.infos
    return keras.Model(builder.inputs, builder.tensors[builder.previous], name=cfg.name), builder.infos


class _Builder:
    """Keras layers for graph nodes, called on their inputs in order."""

    def __init__(self, loaded: config_lib.LoadedConfig, inputs):
        self.loaded, self.inputs = loaded, inputs
        self.tensors = {graph_lib.INPUT: inputs}
        self.stack: list[keras.layers.Layer] = []
        self.infos: list[LayerInfo] = []
        self.previous = graph_lib.INPUT
        self.built = 0

    def shape_of(self, name: str, nodes: list[graph_lib.Node]) -> tuple:
        self.build_pending(nodes)
        return tuple(self.tensors[name].shape)

    def build_pending(self, nodes: list[graph_lib.Node]) -> None:
        for node in nodes[self.built:]:
            self._node(node)
            self.built += 1

    def _node(self, node: graph_lib.Node) -> None:
        loaded = self.loaded
        args = [self.tensors[n] for n in node.inputs]
        _check_window(loaded, node, args[0].shape)
        _check_axis(loaded, node, args[0].shape)
        try:
            layer = LAYERS[node.spec.type](node.spec, node.name)
            output = layer(args if len(args) > 1 else args[0])
        except Exception as e:  # noqa: BLE001  Keras raises many kinds; each is the config's fault
            if len(loaded.config.model.input_shape) == 2 and any(len(a.shape) == 3 for a in args):
                raise _no_channels(loaded) from None  # Keras: "expected min_ndim=4, found ndim=3"
            shapes = ", ".join(str(tuple(a.shape[1:])) for a in args)
            raise ConfigError([loaded.source.issue(node.path, (
                f"{node.spec.type} {node.name!r} cannot take input of shape {shapes}: "
                f"{keras_reason(e)}") + _block_note(node))]) from None
        self.tensors[node.name] = output
        self.stack.append(layer)
        self.infos.append(LayerInfo(layer, node.spec.type, [tuple(a.shape) for a in args],
                                    tuple(output.shape)))
        self.previous = node.name


def _check_axis(loaded, node: graph_lib.Node, shape) -> None:
    """Refuse an axis a layer's input does not have, or the batch axis, before Keras does."""
    axis = getattr(node.spec, "axis", None)
    if not isinstance(axis, int) or node.spec.type not in _AXIS_LAYERS:
        return
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        problem = (f"axis {axis} is not an axis of its input of shape {tuple(shape[1:])} (with the "
                   f"batch axis: {ndim} axes, so -{ndim}..{ndim - 1}); use -1 for the channels")
    elif axis % ndim == 0:
        problem = (f"axis {axis} is the batch axis of its input of shape {tuple(shape[1:])}; use "
                   "-1 for the channels, or another image axis")
    else:
        return
    raise ConfigError([loaded.source.issue(node.path + ("axis",), (
        f"{node.spec.type} {node.name!r}: {problem}") + _block_note(node))])


_AXIS_LAYERS = {"concatenate", "layer_norm", "batch_norm", "group_norm", "normalization"}


def _check_window(loaded, node: graph_lib.Node, shape) -> None:
    """Refuse a convolution or pooling window that does not fit its input, with the arithmetic."""
    spec = node.spec
    if spec.type not in _SLIDING or spec.padding != "valid" or len(shape) != 4:
        return
    kernel = spec.pool_size if "pool" in spec.type else spec.kernel_size
    strides = spec.strides or kernel
    dilation = getattr(spec, "dilation_rate", (1, 1))
    for axis, (w, k, st, d) in enumerate(zip(shape[1:3], kernel, strides, dilation)):
        if w is None:
            continue
        k_eff = d * (k - 1) + 1
        out = math.floor((w - k_eff) / st) + 1
        if out < 1:
            dim = ("height", "width")[axis]
            kname = f"K = {k}" if d == 1 else f"K = {d}*({k}-1)+1"
            raise ConfigError([loaded.source.issue(node.path, (
                f"{spec.type} {node.name!r} does not fit its input of shape {tuple(shape[1:])}: "
                f"output {dim} (W - K + 2P) / S + 1 = ({w} - {k_eff} + 2*0) / {st} + 1 = "
                f"{(w - k_eff) / st + 1:g} < 1 ({kname}, padding valid); use padding: same, a "
                "smaller window, or fewer downsampling layers before it") + _block_note(node))])


def _no_channels(loaded) -> ConfigError:
    """`input_shape: [28, 28]`: the image layers need a channel axis."""
    shape = list(loaded.config.model.input_shape)
    return loaded.error_at("model.input_shape", (
        f"images need a channel axis: {shape + [1]} for grayscale or {shape + [3]} for RGB "
        f"(got {shape})"))


def _block_note(node: graph_lib.Node) -> str:
    return f" [block used at {format_path(node.used_at)}]" if node.used_at else ""


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def keras_reason(e: Exception) -> str:
    """Keras's own reason for an error, on one line. A layer's call error reads
    "Exception encountered when calling X.call().\\n\\n<reason>\\n\\nArguments received ...":
    the reason is its third line, not its first."""
    lines = [line.strip() for line in _ANSI.sub("", str(e)).splitlines() if line.strip()]
    if lines and lines[0].startswith("Exception encountered when calling"):
        lines = lines[1:]
    reason = []
    for line in lines:
        if line.startswith("Arguments received by"):
            break
        reason.append(line)
    text = " ".join(reason) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def download_failure(error: Exception) -> str:
    """Why keras.utils.get_file could not download, in a few words: the innermost OS error of
    its message ("... -- [Errno -2] Name or service not known"), else its first line."""
    line = _first_line(error)
    cause = re.search(r"\[Errno [^\]]*\]\s*(.+)$", line)
    if cause:
        return f"no network: {cause[1].strip()}" if "Name or service" in cause[1] or \
            "resolution" in cause[1] else cause[1].strip()
    return line if len(line) <= 120 else line[:117] + "..."


def _backbone(loaded, input_shape, pretrained: bool = True) -> keras.Model:
    """A keras.applications network without its top, with the weights the config asks for
    (random ones when not `pretrained`)."""
    spec = loaded.config.model.backbone
    path = ("model", "backbone")
    if spec.run is not None:
        from cnnctl.model import backbone as backbone_lib

        base = backbone_lib.from_run(loaded, input_shape)
        base.trainable = spec.trainable
        return base
    apps = sorted(n for n in dir(keras.applications) if n[:1].isupper())
    if spec.name not in apps:
        raise ConfigError([loaded.source.issue(path + ("name",), (
            f"unknown backbone {spec.name!r}{wording.did_you_mean(spec.name, apps)}; "
            "choose a keras.applications model such as ResNet50, MobileNetV2, EfficientNetB0 "
            "or VGG16"))])
    app = getattr(keras.applications, spec.name)
    weights_file = None
    weights = spec.weights
    if weights not in (None, "imagenet"):
        from cnnctl.model import backbone as backbone_lib

        weights_file = str(backbone_lib.config_path(loaded, weights))
        if not os.path.isfile(weights_file):
            raise ConfigError([loaded.source.issue(path + ("weights",), (
                f"weights file {weights_file!r} not found; give a path to a weights file, "
                "`imagenet` or null"))])
        weights = None
    if not pretrained:
        weights, weights_file = None, None
    try:
        base = app(include_top=False, weights=weights, input_shape=tuple(input_shape),
                   pooling=spec.pooling)
    except ValueError as e:
        if len(input_shape) == 2:
            raise _no_channels(loaded) from None
        raise ConfigError([loaded.source.issue(path, f"{spec.name}: {_first_line(e)}")]) from None
    except Exception as e:  # keras.utils.get_file raises a bare Exception when it cannot download
        url = re.search(r"https?://\S+?(?=:?\s|$)", str(e))
        if not url:
            raise
        folder = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")
        fname = url.group(0).rsplit("/", 1)[-1]
        raise ConfigError([loaded.source.issue(path + ("weights",), (
            f"imagenet weights for {spec.name} are not in the Keras cache and could not be "
            f"downloaded ({download_failure(e)}); on a machine with network, download "
            f"{url.group(0)} and put it at {os.path.join(folder, fname)} or give its path as "
            "weights: PATH, or set weights: null"))]) from None
    if weights_file:
        try:
            base.load_weights(weights_file)
        except Exception as e:
            raise ConfigError([loaded.source.issue(path + ("weights",), (
                f"cannot load weights from {weights_file!r} into {spec.name}: {_first_line(e)}"))]) from None
    base.trainable = spec.trainable
    return base


def from_file(path, overrides=None) -> tuple[config_lib.LoadedConfig, keras.Model]:
    """Load a config file and build its model."""
    loaded = config_lib.load(path, overrides)
    return loaded, build(loaded)


__all__ = ["build", "from_file", "CnnctlError"]


def assemble(loaded: config_lib.LoadedConfig) -> keras.Model:
    """The model that is trained and saved: augmentation (when placed in the model) and
    preprocessing in front of the configured network, so a `.keras` file takes raw 0-255 images."""
    cfg = loaded.config
    core = build(loaded)
    shape = tuple(cfg.model.input_shape)
    front = inputs.front_layers(cfg)
    if cfg.model.backbone is not None and cfg.model.backbone.run is not None:
        # a run backbone begins with that run's own preprocessing layer (cnnctl.model.backbone)
        front = [layer for layer in front if layer.name != "preprocessing"]
    if not front and cfg.train.mixed_precision == "off":
        return core
    image = keras.Input(shape=shape, name="image")
    x = image
    for layer in front:
        x = layer(x)
    x = core(x)
    if cfg.train.mixed_precision != "off":
        # the loss is computed in float32 even when the layers run in half precision
        x = keras.layers.Activation("linear", dtype="float32", name="output_float32")(x)
    return keras.Model(image, x, name=core.name)


def with_flip_tta(model: keras.Model) -> keras.Model:
    """`model` averaging its probabilities over each image and its horizontal mirror (flip
    test-time augmentation). For evaluation only: it shares the weights of `model`."""
    inputs = keras.Input(model.input_shape[1:])
    mirrored = keras.ops.flip(inputs, axis=2)
    outputs = keras.ops.divide(keras.ops.add(model(inputs), model(mirrored)), 2.0)
    return keras.Model(inputs, outputs, name=f"{model.name}_flip_tta")
