"""Whether a model's output layer and loss fit the number of classes of its data set."""

from __future__ import annotations

from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.errors import ConfigError

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
