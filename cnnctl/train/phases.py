"""`train.phases`: the epochs of each fine-tuning phase, the backbone layers it trains, its
optimizer, and the phase a backup resumes in.

A run without phases is one phase of `train.epochs` that trains what the config says (a
backbone's `trainable`) with `optimizer`: the same model, optimizer and schedule as before
phases existed.

Each phase is compiled anew: a new optimizer (no moment estimates carried over from the phase
before, which were of other variables), its schedule counted from the phase's first step.
Batch-norm layers of the backbone stay frozen in every phase, even in a trainable range: a
frozen BatchNormalization runs in inference mode (Keras 3), so its ImageNet (or previous-run)
statistics are kept rather than re-estimated on a small new data set's batches, the advice of
the Keras transfer-learning guide.
"""

from __future__ import annotations

import dataclasses

from cnnctl.backend import keras
from cnnctl.config import schema as schema_lib
from cnnctl.config import wording
from cnnctl.errors import ConfigValueError
from cnnctl.train import optim

COLUMN = "phase"  # history.csv's column: the phase of each epoch, from 1
MARK = "_cnnctl_backbone"  # set on the backbone layer when the model is built


@dataclasses.dataclass(frozen=True)
class Span:
    """One phase: index from 0, epochs [start, end) of the run, its config (None: no phases)."""

    index: int
    start: int
    end: int
    phase: schema_lib.Phase | None


def spans(cfg: schema_lib.Config) -> list[Span]:
    """The phases of a config, with the epochs each covers."""
    if not cfg.train.phases:
        return [Span(0, 0, cfg.train.epochs, None)]
    out, start = [], 0
    for i, phase in enumerate(cfg.train.phases):
        out.append(Span(i, start, start + phase.epochs, phase))
        start += phase.epochs
    return out


def resumed_in(all_spans: list[Span], epoch: int, step: int) -> Span:
    """The phase whose model and optimizer a backup at (epoch, step) holds: the phase of
    `epoch` mid-epoch, the phase that just ended at an epoch end (the next one starts from
    there with a new optimizer, as an uninterrupted run does)."""
    last_done = epoch if step else epoch - 1
    return next((s for s in all_spans if s.start <= last_done < s.end), all_spans[0])


def mark_backbone(layer: keras.layers.Layer) -> None:
    setattr(layer, MARK, True)


def find_backbone(model: keras.Model) -> keras.Model | None:
    """The backbone the model was built with (`mark_backbone`), searched through nested models."""
    for layer in model.layers:
        if getattr(layer, MARK, False):
            return layer
        if isinstance(layer, keras.Model):
            found = find_backbone(layer)
            if found is not None:
                return found
    return None


def leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The backbone's layers in order, nested models opened (input layers left out)."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += leaf_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append(layer)
    return out


def chosen(model: keras.Model, span: Span) -> list[keras.layers.Layer] | None:
    """The backbone layers phase `span` trains (None: the model has no backbone).

    Raises:
        ConfigValueError: `trainable` names a layer the backbone lacks, asks for more layers than
            it has, or there is no backbone to choose from.
    """
    key = f"train.phases[{span.index}].trainable"
    rule = span.phase.trainable
    backbone = find_backbone(model)
    if backbone is None:
        if rule == "all":
            return None
        raise ConfigValueError(key, "chooses backbone layers, and the model has no "
                               "model.backbone; use trainable: all (the whole model)")
    leaves = leaf_layers(backbone)
    if rule == "all":
        return leaves
    if rule == "none":
        return []
    if isinstance(rule, schema_lib.TrainLast):
        if rule.last > len(leaves):
            raise ConfigValueError(key + ".last", f"the backbone has {len(leaves)} layers "
                                   f"(got {rule.last}); use trainable: all to train them all")
        return leaves[-rule.last:]
    names = [layer.name for layer in leaves]
    if rule.from_layer not in names:
        from cnnctl.model.backbone import shown_names

        raise ConfigValueError(key + ".from", (
            f"{rule.from_layer!r} is not a layer of the backbone"
            f"{wording.did_you_mean(rule.from_layer, names)}; its layers: {shown_names(names)}"))
    return leaves[names.index(rule.from_layer):]


def check(model: keras.Model, cfg: schema_lib.Config) -> None:
    """Every phase's `trainable` fits the model: before the first phase trains, not at the
    start of the one with the mistake."""
    for span in spans(cfg):
        if span.phase is not None:
            chosen(model, span)


def set_trainable(model: keras.Model, span: Span) -> None:
    """Make the backbone layers of phase `span` trainable and freeze the others (batch-norm
    layers of the backbone always frozen); the head stays trainable. No-op without phases."""
    if span.phase is None:
        return
    layers = chosen(model, span)
    if layers is None:
        return
    backbone = find_backbone(model)
    backbone.trainable = True  # sets every layer inside; each leaf is then set on its own
    picked = {id(layer) for layer in layers}
    for layer in leaf_layers(backbone):
        layer.trainable = id(layer) in picked and not isinstance(
            layer, keras.layers.BatchNormalization)


def optimizer(cfg: schema_lib.Config, scaled: schema_lib.Config, span: Span,
              steps_per_epoch: int):
    """The optimizer of phase `span`: the config's optimizer with the phase's learning rate and
    schedule, over the phase's epochs. `scaled`: the config as the replicas see it (its
    learning rates scaled with train.scale_lr_with_replicas), scaled the same way."""
    spec = scaled.optimizer
    if span.phase is not None:
        factor = spec.learning_rate / cfg.optimizer.learning_rate
        update = {}
        if span.phase.learning_rate is not None:
            update["learning_rate"] = span.phase.learning_rate * factor
        if span.phase.schedule is not None:
            update["schedule"] = span.phase.schedule.model_copy(update={
                "min_learning_rate": span.phase.schedule.min_learning_rate * factor})
        spec = spec.model_copy(update=update)
    return optim.optimizer(spec, steps_per_epoch, span.end - span.start,
                           scaled.train.batch_size)


class PhaseColumn(keras.callbacks.Callback):
    """Adds `phase` (from 1) to the epoch's logs, so history.csv records the phase of every
    epoch (before HistoryCSV in the callbacks)."""

    def __init__(self, all_spans: list[Span]):
        super().__init__()
        self.spans = all_spans

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            span = next((s for s in self.spans if s.start <= epoch < s.end), self.spans[-1])
            logs[COLUMN] = span.index + 1
