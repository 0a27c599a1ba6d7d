"""Whether a model's output layer and loss fit each other and the classes of its data set."""

from __future__ import annotations

from cnnctl.backend import keras
from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.config.yaml_source import format_path
from cnnctl.errors import ConfigError
from cnnctl.model import graph as graph_lib

# Layers that keep the size of the last axis (the channels): the output size is set by a
# layer before them, e.g. the conv2d before a global_avg_pool2d.
_KEEP_SIZE = {"activation", "dropout", "spatial_dropout2d", "batch_norm", "layer_norm", "rescaling",
              "global_avg_pool2d", "global_max_pool2d", "max_pool2d", "avg_pool2d",
              "zero_padding2d", "upsampling2d", "resizing"}


def check_output(loaded: config_lib.LoadedConfig, outputs: int, class_names: list[str]) -> None:
    """Refuse a loss or an output layer that does not fit the classes of the data.

    A model outputs one value per class, or, for two classes with binary_crossentropy, one
    (the probability of the second class, from a sigmoid).

    Args:
        loaded: the config, for its loss, its layers and their lines.
        outputs: the size of the model's last axis.
        class_names: the classes of the data set, in label order.

    Raises:
        ConfigError: one line per problem, at `loss` or at the output layer's `units`.
    """
    cfg = loaded.config
    n = len(class_names)
    shown = ", ".join(class_names[:10]) + (", ..." if n > 10 else "")
    binary = cfg.loss.name == "binary_crossentropy"
    issues = []
    if binary and n != 2:
        issues += loaded.error_at("loss", (
            f"binary_crossentropy needs 2 classes but the data has {n} ({shown}); use "
            "categorical_crossentropy or sparse_categorical_crossentropy")).issues
    if outputs != n and not (binary and outputs == 1 and n == 2):
        key, fix = _output_layer(cfg, n, binary)
        issues += loaded.error_at(key, (
            f"the model outputs {outputs} value{'' if outputs == 1 else 's'} but the data has "
            f"{n} classes ({shown}); {fix}")).issues
    if issues:
        raise ConfigError(issues)


def _output_layer(cfg: schema_lib.Config, n: int, binary: bool) -> tuple[str, str]:
    """The config path of what sets the model's output size, and what to change there."""
    layers = cfg.model.layers
    for i in reversed(range(len(layers))):
        kind = getattr(layers[i], "type", None)  # None: a block, whose keys are its parameters
        if kind in _KEEP_SIZE:
            continue
        for field in ("units", "filters"):
            if kind is not None and field in type(layers[i]).model_fields:
                if n == 2 and field == "units":
                    fix = ("give the last layer units: 1 with activation: sigmoid, or units: 2"
                           if binary else "give the last layer units: 2, or units: 1 with "
                           "activation: sigmoid and loss: binary_crossentropy")
                else:
                    fix = f"give the last layer {field}: {n}"
                return f"model.layers[{i}].{field}", fix
        return f"model.layers[{i}]", f"end the model with {{type: dense, units: {n}, activation: softmax}}"
    return "model.layers", f"end the model with {{type: dense, units: {n}, activation: softmax}}"


# Layers that hand their input's values on unchanged (or only rearranged, or averaged): logits
# stay logits and probabilities stay probabilities through them.
_PASS_VALUES = (keras.layers.Dropout, keras.layers.Flatten, keras.layers.Reshape,
                keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)
# Layers with an `activation`, whose output is linear (logits) when that is `linear`.
_WEIGHTED = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv2DTranspose,
             keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D, keras.layers.Activation)
_PROBABILITIES = ("softmax", "sigmoid", "hard_sigmoid")


def check_logits(loaded: config_lib.LoadedConfig, model: keras.Model) -> None:
    """Refuse an output layer that gives what the loss does not read: logits (no activation)
    with `loss.from_logits: false`, or softmax / sigmoid probabilities with `from_logits: true`.

    Only a definite case is refused: the output layer, found by walking back from the output
    through layers that pass values on (dropout, flatten, reshape, global pooling), is a dense
    or conv layer with no activation (or `linear`) or an `activation: linear` layer, or it ends
    in softmax or sigmoid. A model that ends in a backbone or anything else is let through, and
    so is one whose output is not a vector of class scores.

    Args:
        loaded: the config, for its loss and the lines of its layers.
        model: the model `build` or `assemble` made of it.

    Raises:
        ConfigError: one line, at the output layer's activation (in its block template, when
            it came from one).
    """
    cfg = loaded.config
    network = _network(model, cfg.model.name)
    if len(network.outputs[0].shape) != 2:  # not class scores [batch, classes]
        return
    layer = _output_layer_of(network)
    if layer is None:
        return
    activation = _activation_of(layer)
    logits = activation == "linear"
    if not (logits and not cfg.loss.from_logits
            or activation in _PROBABILITIES and cfg.loss.from_logits):
        return
    node = _node_named(loaded, network, layer.name)
    loss = cfg.loss.name
    binary = loss == "binary_crossentropy"
    what = _described(node, layer)
    if logits:
        stated = node is not None and getattr(node.spec, "activation", None) == "linear"
        fix_layer = ("make it " if stated else "add ") + \
            f"activation: {'sigmoid' if binary else 'softmax'}"
        message = (f"{what}, so the model outputs logits, which {loss} would read as "
                   f"probabilities (it then learns little or nothing); {fix_layer}, or set loss: "
                   f"{{name: {loss}, from_logits: true}}")
    else:
        fix_layer = ("remove this layer" if node is not None and node.spec.type == "activation"
                     else f"remove activation: {activation}")
        message = (f"{what} but loss.from_logits is true, so {loss} would apply "
                   f"{'sigmoid' if binary else 'softmax'} to its probabilities a second time; "
                   f"{fix_layer} (the model then outputs logits), or set from_logits: false")
    if node is None:
        raise loaded.error_at("model.layers", message)
    if node.used_at:
        message += f" [block used at {format_path(node.used_at)}]"
    raise loaded.error_at(format_path(node.path + ("activation",)), message)


def _network(model: keras.Model, name: str) -> keras.Model:
    """The configured network: `model` itself, or the one nested in the model `assemble`
    made (after its preprocessing, before its float32 cast)."""
    nested = [layer for layer in model.layers
              if isinstance(layer, keras.Model) and layer.name == name]
    return nested[0] if len(nested) == 1 and model.name == name else model


def _output_layer_of(network: keras.Model) -> keras.layers.Layer | None:
    """The layer that sets what the network's output values are, walking back from the output
    through layers that pass values on; None where that is a backbone, a merge or the input."""
    for layer in _back_from_output(network):
        if not isinstance(layer, _PASS_VALUES):
            return None if isinstance(layer, (keras.Model, keras.layers.InputLayer)) else layer
    return None


def _back_from_output(network: keras.Model):
    """The network's layers from its output back along their (single) inputs."""
    if isinstance(network, keras.Sequential):
        yield from reversed(network.layers)
        return
    # each layer of a built config is called once, so its `output` is the tensor it gave here
    producer = {id(layer.output): layer for layer in network.layers
                if not isinstance(layer, keras.Model)}
    layer = producer.get(id(network.outputs[0]))
    while layer is not None:
        yield layer
        inputs = layer.input
        layer = None if isinstance(inputs, (list, tuple)) else producer.get(id(inputs))


def _activation_of(layer: keras.layers.Layer) -> str | None:
    """"linear" for a layer whose output is linear, the activation's name for one that ends in
    an activation, None where the output is neither (a normalisation, a merge ...)."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if not isinstance(layer, _WEIGHTED):
        return None
    # the function's own name (relu, softmax, linear): get_config() would serialize the layer,
    # which imports TensorFlow whatever the backend
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    return activation if isinstance(activation, str) else None


def _node_named(loaded: config_lib.LoadedConfig, network: keras.Model,
                name: str) -> graph_lib.Node | None:
    """The graph node (spec, YAML path, block use) of the network's layer `name`.

    The layer names of the config are those of `graph.expand`; its block expressions
    (`${in_channels * 4}`) get their input sizes from the built network."""
    shapes = {layer.name: tuple(layer.output.shape) for layer in network.layers
              if not isinstance(layer, keras.layers.InputLayer)}
    backbone = [layer for layer in network.layers if isinstance(layer, keras.Model)]
    # the layers after a backbone read its output as `input`
    shapes[graph_lib.INPUT] = (shapes[backbone[0].name] if backbone
                               else tuple(network.inputs[0].shape))
    try:
        graph = graph_lib.expand(loaded, shape_of=lambda n, _: shapes.get(n))
    except ConfigError:  # built once already: not expected; the error then names model.layers
        return None
    return next((node for node in graph.nodes if node.name == name), None)


def _described(node: graph_lib.Node | None, layer: keras.layers.Layer) -> str:
    """`the output layer (dense 'logits') has no activation` and the like."""
    if node is None:
        return f"the output layer {layer.name!r} has activation: {_activation_of(layer)}"
    where = f"the output layer ({node.spec.type} {node.name!r})"
    if node.spec.type == "activation":
        return f"{where} is activation: {node.spec.activation}"
    activation = getattr(node.spec, "activation", None)
    return f"{where} has " + ("no activation" if activation is None
                              else f"activation: {activation}")
