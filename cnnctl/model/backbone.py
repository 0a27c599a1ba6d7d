"""A previous cnnctl run's trained model as a backbone (`model.backbone: {run, until}`): cut
after one of its layers, with the run's preprocessing in front; and where the paths a backbone
names are looked for."""

from __future__ import annotations

import copy
from pathlib import Path

from cnnctl import runs
from cnnctl.backend import keras
from cnnctl.config import wording
from cnnctl.errors import CnnctlError, ConfigError

PATH = ("model", "backbone")
NAME = "backbone"  # the Keras name of a run backbone inside the new model


def config_path(loaded, value: str) -> Path:
    """A path a config gives: relative to the config file's folder, else (not found there) to
    the working directory, as data paths are."""
    given = Path(value).expanduser()
    if given.is_absolute():
        return given
    beside = Path(loaded.file).parent / given
    return beside if beside.exists() or not given.exists() else given


def from_run(loaded, input_shape) -> keras.Model:
    """The trained model of the run `model.backbone.run`, cut after its layer `until`, with the
    run's preprocessing layer first (its augmentation layers are left out: the new config's
    augmentation applies), so the new model reads raw 0-255 images as the run's did.

    Raises:
        ConfigError: the run is missing or cannot be opened, `until` is not one of its layers,
            or the config's input shape, image size, colour mode or preprocessing differ from
            the run's.
    """
    from cnnctl.use import trained

    spec = loaded.config.model.backbone
    run_dir = config_path(loaded, spec.run)
    if not run_dir.exists():
        where = (f"{str(run_dir)!r}" if Path(spec.run).expanduser().is_absolute() else
                 f"{str(run_dir)!r} or {spec.run!r} in the current directory")
        raise ConfigError([loaded.source.issue(PATH + ("run",), (
            f"run directory not found: no {where}; train that run first (`cnnctl train "
            "CONFIG`) and give its run directory (or its config's runs folder)"))])
    try:
        opened = trained.open_model(runs.resolve(run_dir)[0])
    except CnnctlError as e:
        raise ConfigError([loaded.source.issue(PATH + ("run",), str(e))]) from None
    _check_inputs(loaded, opened, input_shape)
    outer = opened.model
    nested = [layer for layer in outer.layers if isinstance(layer, keras.Model)]
    # assemble() wraps the configured network in a model of its front layers; a run without
    # any (preprocessing rescale: null, no in-model augmentation) saved the network itself
    core = nested[0] if nested and _is_wrapper(outer) else outer
    names = [layer.name for layer in core.layers if not isinstance(layer, keras.layers.InputLayer)]
    if spec.until not in names:
        raise ConfigError([loaded.source.issue(PATH + ("until",), (
            f"{spec.until!r} is not a layer of the model of {run_dir}"
            f"{wording.did_you_mean(spec.until, names)}; its layers: {shown_names(names)}"))])
    cut = keras.Model(core.inputs, core.get_layer(spec.until).output)
    prep = next((layer for layer in outer.layers if layer.name == "preprocessing"), None)
    return _flat_copy(cut, prep if core is not outer else None)


def _flat_copy(cut: keras.Model, prep) -> keras.Model:
    """`cut`, with `prep` in front, as one functional model of new layers holding the run's
    weights. New layers, each in this one graph, and not nested models: what `cnnctl explain`
    (a layer's `output`) and train.phases (the backbone's layers in order) read."""
    config = copy.deepcopy(cut.get_config())
    config["name"] = NAME
    if prep is not None:
        (source, _, _), = config["input_layers"]
        names = {layer["name"] for layer in config["layers"]}
        name = next(n for n in ("preprocessing", *(f"preprocessing_{i}" for i in range(1, 99)))
                    if n not in names)

        def rewire(value):  # the layers that read the input read the preprocessing instead
            if isinstance(value, dict):
                if value.get("keras_history", [None])[0] == source:
                    value["keras_history"] = [name, 0, 0]
                for item in value.values():
                    rewire(item)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    rewire(item)

        rewire([layer["inbound_nodes"] for layer in config["layers"]])
        tensor = next(layer for layer in config["layers"] if layer["name"] == source)
        shape = tensor["config"]["batch_shape"]
        entry = {**keras.saving.serialize_keras_object(prep), "name": name, "inbound_nodes": [
            {"args": [{"class_name": "__keras_tensor__", "config": {
                "shape": shape, "dtype": "float32", "keras_history": [source, 0, 0]}}],
             "kwargs": {}}]}
        entry["config"] = {**entry["config"], "name": name}
        at = config["layers"].index(tensor) + 1
        config["layers"].insert(at, entry)
    flat = keras.Model.from_config(config)
    for layer in cut.layers:
        if layer.weights:
            flat.get_layer(layer.name).set_weights(layer.get_weights())
    return flat


def _is_wrapper(outer: keras.Model) -> bool:
    """Whether a saved model is assemble()'s wrapper: front layers and one nested network (a
    network of its own that holds a backbone also nests a model, among other layers)."""
    kinds = [layer for layer in outer.layers if not isinstance(layer, keras.layers.InputLayer)]
    nested = [layer for layer in kinds if isinstance(layer, keras.Model)]
    return len(nested) == 1 and (kinds[-1] is nested[0] or kinds[-1].name in (
        "output_float32", "probabilities") or kinds[-1].name.startswith("probabilities_"))


def shown_names(names: list[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _check_inputs(loaded, opened, input_shape) -> None:
    """The new config reads images as the run did: the same input shape, image size, colour
    mode and preprocessing (the backbone's weights were learnt on those pixels)."""
    cfg = loaded.config
    run = Path(loaded.config.model.backbone.run)
    theirs = list(opened.model.input_shape[1:])
    if list(input_shape) != theirs:
        raise loaded.error_at("model.input_shape", (
            f"must be the input shape of the backbone run {run}: {theirs} "
            f"(got {list(input_shape)})"))
    saved = None
    if opened.run_dir is not None:
        try:
            saved = runs.load_config(opened.run_dir).config
        except CnnctlError:
            saved = None
    if saved is None or saved.data is None or cfg.data is None:
        return
    for key in ("image_size", "color_mode", "preprocessing"):
        mine, their = getattr(cfg.data, key), getattr(saved.data, key)
        if key == "preprocessing":
            mine, their = mine.model_dump(mode="json"), their.model_dump(mode="json")
        if mine != their:
            raise loaded.error_at(f"data.{key}", (
                f"must be the backbone run's ({their!r}, from {opened.run_dir / runs.CONFIG}; got "
                f"{mine!r}): its layers were trained on images read that way, and its "
                "preprocessing layer is part of the backbone"))
