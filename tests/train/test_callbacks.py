"""cnnctl.train.callbacks: a run's callbacks, built in one place, in the order they must run."""

from cnnctl.backend import keras
from cnnctl.config.schema import Config
from cnnctl.train import callbacks as callbacks_lib
from cnnctl.train import checkpoints

EVERYTHING = {
    "model": {"input_shape": [8, 8, 1], "layers": [{"type": "flatten"},
                                                   {"type": "dense", "units": 2}]},
    "optimizer": {"name": "sgd", "ema_momentum": 0.9},
    "train": {"early_stopping": {"patience": 2}, "reduce_lr_on_plateau": {"patience": 1},
              "tensorboard": True, "backup_every_steps": 3},
}


def test_the_callbacks_run_in_this_order(tmp_path):
    """Changing this order breaks resumes (see `callbacks.build`'s docstring): change it only
    with the reason in the docstring and a resume test that still passes."""
    config = Config.model_validate(EVERYTHING)
    callbacks, named = callbacks_lib.build(config, tmp_path, has_val=True, steps_per_epoch=8,
                                           state={})
    names = [type(c).__name__ for c in callbacks]
    expected = ["NanGuard", "SignalStop", "Checkpoints", "EarlyStopping", "ReduceLROnPlateau",
                "KeepState", "EpochTimer", "HistoryCSV", "Backups", "AveragedWeights"]
    if keras.backend.backend() == "tensorflow":
        expected.append("TensorBoard")
    assert names == expected
    assert set(named) == {"guard", "stop", "backups", "averaged", "early_stopping", "reduce_lr"}
    # one guard and one interruption, shared by every callback that writes
    guard, stop, backups = named["guard"], named["stop"], named["backups"]
    ckpt = callbacks[2]
    assert ckpt.guard is guard and backups.guard is guard
    assert ckpt.interruption is backups.interruption is stop.interruption


def test_a_plain_config_gets_only_what_it_asks_for(tmp_path):
    config = Config.model_validate({**EVERYTHING, "optimizer": "adam",
                                    "train": {"tensorboard": False}})
    callbacks, named = callbacks_lib.build(config, tmp_path, has_val=False, steps_per_epoch=8,
                                           state={"best": 0.5, "epoch": 2, "step": 3})
    assert [type(c).__name__ for c in callbacks] == [
        "NanGuard", "SignalStop", "Checkpoints", "KeepState", "EpochTimer", "HistoryCSV", "Backups"]
    assert named["averaged"] is None
    ckpt = callbacks[2]
    assert isinstance(ckpt, checkpoints.Checkpoints)
    assert ckpt.monitor == "loss"  # val_loss without validation data
    assert ckpt.best == 0.5
    assert (named["backups"].epoch, named["backups"].offset) == (2, 3)
