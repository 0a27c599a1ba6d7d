"""`cnnctl train`: data, model and callbacks from the config, then Keras `fit`, then test."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path

from cnnctl import config as config_lib
from cnnctl import data as data_lib
from cnnctl import model as model_lib
from cnnctl import optim
from cnnctl import runs
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError


def assemble(loaded: config_lib.LoadedConfig) -> keras.Model:
    """The model that is trained and saved: augmentation (when placed in the model) and
    preprocessing in front of the configured network, so a `.keras` file takes raw 0-255 images."""
    cfg = loaded.config
    core = model_lib.build(loaded)
    shape = tuple(cfg.model.input_shape)
    front = []
    if cfg.augmentation.placement == "model":
        front += data_lib.augmentation_layers(cfg.augmentation, seed=cfg.train.seed)
    if cfg.data is not None:
        prep = data_lib.preprocessing_layer(cfg.data.preprocessing, shape[-1])
        if prep is not None:
            front.append(prep)
    if not front and cfg.train.mixed_precision == "off":
        return core
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    for layer in front:
        x = layer(x)
    x = core(x)
    if cfg.train.mixed_precision != "off":
        # the loss is computed in float32 even when the layers run in half precision
        x = keras.layers.Activation("linear", dtype="float32", name="output_float32")(x)
    return keras.Model(inputs, x, name=core.name)


@contextlib.contextmanager
def _precision(policy: str):
    previous = keras.config.dtype_policy()
    if policy != "off":
        keras.config.set_dtype_policy(f"mixed_{policy}")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _check_classes(loaded, model: keras.Model, class_names: list[str]) -> None:
    units = model.output_shape[-1]
    n = len(class_names)
    binary = loaded.config.loss.name == "binary_crossentropy"
    if (binary and units == 1 and n == 2) or units == n:
        return
    last = f"model.layers[{len(loaded.config.model.layers) - 1}]"
    want = "1 unit with sigmoid (binary_crossentropy) or " if n == 2 else ""
    raise CnnctlError(f"{loaded.file}: {last}: the model outputs {units} values but the data has "
                      f"{n} classes ({', '.join(class_names[:10])}{'...' if n > 10 else ''}); "
                      f"give the last layer {want}{n} units")


def _callbacks(cfg: config_lib.Config, run_dir: Path, has_val: bool) -> list:
    def monitored(name: str) -> str:
        return name if has_val or not name.startswith("val_") else name[len("val_"):]

    ckpt = run_dir / runs.CHECKPOINTS
    callbacks = [
        keras.callbacks.ModelCheckpoint(ckpt / runs.BEST, monitor=monitored(cfg.train.checkpoint_monitor),
                                        save_best_only=True),
        keras.callbacks.ModelCheckpoint(ckpt / runs.LAST),
        keras.callbacks.CSVLogger(run_dir / runs.HISTORY),
        keras.callbacks.TerminateOnNaN(),
    ]
    if cfg.train.early_stopping:
        es = cfg.train.early_stopping
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitored(es.monitor), patience=es.patience, min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights))
    if cfg.train.reduce_lr_on_plateau:
        rl = cfg.train.reduce_lr_on_plateau
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitored(rl.monitor), factor=rl.factor, patience=rl.patience, min_lr=rl.min_lr))
    if cfg.train.tensorboard and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(run_dir / runs.LOGS, profile_batch=0))
    return callbacks


def train(loaded: config_lib.LoadedConfig, run_dir: Path | None = None, verbose: int | None = None) -> dict:
    """Train the model of a config and write a run directory.

    Returns:
        {"run_dir", "metrics", "seconds", "epochs"}.
    Raises:
        CnnctlError: bad data, a config that does not fit the data, an unwritable run directory.
    """
    cfg = loaded.config
    if cfg.data is None:
        raise CnnctlError(f"{loaded.file}: no `data:` section; say what to train on, e.g. "
                          "data: {source: keras, name: fashion_mnist}")
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    start = time.perf_counter()
    with _precision(cfg.train.mixed_precision):
        model = assemble(loaded)
        splits = data_lib.load(cfg, input_shape=tuple(cfg.model.input_shape),
                               label_mode=optim.label_mode(cfg))
        _check_classes(loaded, model, splits.class_names)
        steps = max(math.ceil(splits.counts["train"] / cfg.train.batch_size), 1)
        model.compile(optimizer=optim.optimizer(cfg.optimizer, steps, cfg.train.epochs),
                      loss=optim.loss(cfg), metrics=optim.metrics(cfg),
                      jit_compile=cfg.train.jit_compile,
                      steps_per_execution=cfg.train.steps_per_execution)
        path = runs.create(loaded, run_dir)
        runs.write_json(path / runs.ENVIRONMENT, runs.environment())
        runs.write_json(path / runs.CLASS_NAMES, splits.class_names)
        _report_data(splits)
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        history = model.fit(splits.train, validation_data=splits.val, epochs=cfg.train.epochs,
                            callbacks=_callbacks(cfg, path, splits.val is not None),
                            verbose=verbose, shuffle=False)  # the pipeline shuffles
        if _nan(history):
            raise CnnctlError(f"training stopped: the loss became NaN or infinite in epoch "
                              f"{len(history.epoch)}; lower optimizer.learning_rate or set "
                              f"optimizer.clipnorm. Checkpoints so far are in {path / runs.CHECKPOINTS}")
        metrics = _final_metrics(model, path, splits, history)
    runs.write_json(path / runs.METRICS, metrics)
    from cnnctl import plots

    plots.curves(path / runs.HISTORY, path / runs.CURVES)
    return {"run_dir": path, "metrics": metrics, "seconds": time.perf_counter() - start,
            "epochs": len(history.epoch)}


def _nan(history) -> bool:
    losses = history.history.get("loss", [])
    return bool(losses) and not math.isfinite(losses[-1])


def _final_metrics(model, path: Path, splits, history) -> dict:
    """Test (and validation) figures of best.keras, the checkpoint `cnnctl eval` uses."""
    best = path / runs.CHECKPOINTS / runs.BEST
    if best.exists():
        model.load_weights(best)
    out = {"epochs": len(history.epoch), "best_checkpoint": str(best)}
    for name, ds in (("val", splits.val), ("test", splits.test)):
        if ds is not None:
            out[name] = {k: float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
    out["history"] = {k: [float(x) for x in v] for k, v in history.history.items()}
    return out


def _report_data(splits) -> None:
    counts = ", ".join(f"{k} {v:,}" for k, v in splits.counts.items() if v)
    print(f"data: {counts} images, {len(splits.class_names)} classes", flush=True)
    if len(splits.class_names) <= 20:
        for split, per_class in splits.class_counts.items():
            if per_class:
                print(f"  {split}: " + ", ".join(f"{c} {n:,}" for c, n in per_class.items()), flush=True)
    for path, reason in splits.skipped:
        print(f"  skipped {path}: {reason}", flush=True)
