"""train.phases and run backbones (cnnctl.train.phases, cnnctl.model.backbone): a two-phase
fine-tune of a previous run, trained on 8 CIFAR-10 classes, beats the same network trained from
scratch on the other 2; frozen layers stay bit-identical; a run killed in phase 2 resumes there
as if never stopped; config mistakes are named exactly."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from cnnctl.backend import keras
from cnnctl.config import load as config_lib
from cnnctl.errors import CnnctlError
from cnnctl.train import fit as train_lib
from cnnctl.train import phases


BASE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse")
NEW_CLASSES = ("ship", "truck")
# images per (group, split, class): the base run learns features on 8 classes, the fine-tune
# has few images of the other 2 (and many test images, so accuracies differ by more than noise)
COUNTS = {("base", "train"): 150, ("base", "test"): 20, ("new", "train"): 50, ("new", "test"): 150}

NETWORK = """\
    - {type: conv2d, name: conv1, filters: 16, kernel_size: 3, padding: same, activation: relu}
    - {type: max_pool2d, pool_size: 2}
    - {type: conv2d, name: conv2, filters: 32, kernel_size: 3, padding: same, activation: relu}
    - {type: max_pool2d, pool_size: 2}
    - {type: conv2d, name: conv3, filters: 64, kernel_size: 3, padding: same, activation: relu}
    - {type: global_avg_pool2d, name: features}
"""
COMMON = """\
optimizer: {name: adam, learning_rate: 0.003}
loss: sparse_categorical_crossentropy
"""


def base_yaml(root: Path) -> str:
    return f"""\
model:
  name: base
  input_shape: [32, 32, 3]
  layers:
{NETWORK}    - {{type: dense, units: 8, activation: softmax}}
data: {{source: folder, train_dir: {root}/base/train, test_dir: {root}/base/test}}
{COMMON}train: {{epochs: 8, batch_size: 32, seed: 1, tensorboard: false, checkpoint_monitor: loss}}
"""


def finetune_yaml(root: Path, run: Path, seed: int = 1, phases_yaml: str | None = None,
                  train_extra: str = "") -> str:
    phases_yaml = phases_yaml or ("    - {epochs: 3, trainable: none, learning_rate: 0.01}\n"
                                  "    - {epochs: 3, trainable: all, learning_rate: 0.001}\n")
    return f"""\
model:
  name: finetuned
  input_shape: [32, 32, 3]
  backbone: {{run: {run}, until: features}}
  layers:
    - {{type: dense, name: head, units: 2, activation: softmax}}
data: {{source: folder, train_dir: {root}/new/train, max_train_samples: 40, test_dir: {root}/new/test}}
{COMMON}train:
  batch_size: 8
  seed: {seed}
  tensorboard: false
  checkpoint_monitor: loss{train_extra}
  phases:
{phases_yaml}"""


def scratch_yaml(root: Path, seed: int = 1) -> str:
    return f"""\
model:
  name: scratch
  input_shape: [32, 32, 3]
  layers:
{NETWORK}    - {{type: dense, name: head, units: 2, activation: softmax}}
data: {{source: folder, train_dir: {root}/new/train, max_train_samples: 40, test_dir: {root}/new/test}}
{COMMON}train: {{epochs: 6, batch_size: 8, seed: {seed}, tensorboard: false, checkpoint_monitor: loss}}
"""


@pytest.fixture(scope="module")
def cifar(tmp_path_factory, cifar_jpgs) -> Path:
    """root/{base,new}/{train,test}/CLASS/*.jpg: real CIFAR-10 JPEGs (COUNTS)."""
    def group(c: str) -> str:
        return "base" if c in BASE_CLASSES else "new"

    return cifar_jpgs(tmp_path_factory.mktemp("cifar_phases"),
                      lambda split, c: COUNTS[(group(c), split)],
                      lambda split, c: Path(group(c), split, c))


def train(text: str, config: Path, run: Path | None, **kwargs) -> dict:
    config.write_text(text)
    return train_lib.train(config_lib.load(config), run, verbose=0, **kwargs)


@pytest.fixture(scope="module")
def base_run(cifar, tmp_path_factory) -> Path:
    """A finished run of the small CNN on the 8 base classes."""
    folder = tmp_path_factory.mktemp("base_run")
    return train(base_yaml(cifar), folder / "base.yaml", folder / "run")["run_dir"]


def saved_weights(path: Path) -> dict[str, list[np.ndarray]]:
    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    return {layer.path: [np.asarray(w) for w in layer.get_weights()] for layer in leaves(model)}


def leaves(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaves(layer)
        else:
            yield layer


class BackboneWeights(keras.callbacks.Callback):
    """The backbone's conv weights at every epoch end (epoch -> {layer name: arrays})."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_epoch_end(self, epoch, logs=None):
        backbone = phases.find_backbone(self.model)
        self.seen[epoch] = {layer.name: [np.array(w) for w in layer.get_weights()]
                            for layer in phases.leaf_layers(backbone) if layer.weights}


# --------------------------------------------------------------------------- fine-tuning
@pytest.mark.slow
def test_finetune_from_a_run_beats_scratch_and_keeps_frozen_layers(cifar, base_run, tmp_path):
    base = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in
            leaves(keras.saving.load_model(base_run / "checkpoints" / "best.keras", compile=False))
            if layer.name in ("conv1", "conv2", "conv3")}
    watch = BackboneWeights()
    tuned = train(finetune_yaml(cifar, base_run), tmp_path / "finetune.yaml", tmp_path / "tuned",
                  extra_callbacks=[watch])
    scratch = train(scratch_yaml(cifar), tmp_path / "scratch.yaml", tmp_path / "scratch")

    # phase 1 (epochs 1-3) trains the head only: the run's conv weights, bit for bit
    for epoch in (0, 1, 2):
        for name, arrays in base.items():
            for x, y in zip(watch.seen[epoch][name], arrays):
                np.testing.assert_array_equal(x, y)
    # phase 2 (trainable: all) moves them
    assert not np.array_equal(watch.seen[5]["conv1"][0], base["conv1"][0])

    ours, theirs = tuned["metrics"]["test"]["accuracy"], scratch["metrics"]["test"]["accuracy"]
    # measured on 300 test images, seeds 1, 2, 3: fine-tuned 0.733, 0.737, 0.730; from
    # scratch 0.500, 0.680, 0.587 (20 training images a class: too few to learn features from)
    assert ours >= 0.68 and ours >= theirs + 0.04, (ours, theirs)
    assert tuned["epochs"] == scratch["epochs"] == 6

    # history.csv records the phase of each epoch; the curves mark where phase 2 starts
    rows = (tmp_path / "tuned" / "history.csv").read_text().splitlines()
    assert rows[0].split(",")[-1] == "phase"
    assert [float(r.split(",")[-1]) for r in rows[1:]] == [1, 1, 1, 2, 2, 2]
    assert (tmp_path / "tuned" / "curves.png").stat().st_size > 0


def test_the_run_backbone_carries_the_runs_preprocessing(cifar, base_run, tmp_path):
    from cnnctl.model import build as model_lib

    path = tmp_path / "finetune.yaml"
    path.write_text(finetune_yaml(cifar, base_run))
    model = model_lib.assemble(config_lib.load(path))
    backbone = phases.find_backbone(model)
    assert [layer.name for layer in backbone.layers][1] == "preprocessing"  # once: the run's
    assert sum(layer.name == "preprocessing" for layer in leaves(model)) == 1
    assert [layer.name for layer in phases.leaf_layers(backbone)][-3:] == [
        "max_pool2d_1", "conv3", "features"]
    image = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    run_model = keras.saving.load_model(base_run / "checkpoints" / "best.keras", compile=False)
    features = keras.Model(run_model.layers[-1].inputs,
                           run_model.layers[-1].get_layer("features").output)
    # the run rescaled by 1/255 once, inside the backbone: not twice, not never
    np.testing.assert_allclose(backbone(image), features(image / 255.0), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["in_phase_2", "at_the_end_of_phase_1"])
def test_resumed_in_phase_2_equals_an_uninterrupted_run(cifar, base_run, tmp_path, where):
    text = finetune_yaml(cifar, base_run, phases_yaml=(
        "    - {epochs: 1, trainable: none}\n"
        "    - {epochs: 2, trainable: {from: conv3}, learning_rate: 0.001, schedule: {type: cosine}}\n"),
        train_extra="\n  deterministic: true\n  backup_every_steps: 3")
    straight = train(text, tmp_path / "straight.yaml", tmp_path / "straight")

    class Terminate(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 0:  # phase 2's first epoch, after its first step
                os.kill(os.getpid(), signal.SIGTERM)

    config = tmp_path / "killed.yaml"
    with pytest.raises(train_lib.Interrupted, match=r"at epoch 2, step 2 of 5"):
        train(text, config, tmp_path / "killed", extra_callbacks=[Terminate()])
    states = sorted((tmp_path / "killed" / "backup").glob("state-*.json"))
    assert [json.loads(p.read_text())["step"] for p in states] == [0, 2]  # (epoch 2: step 0, 2)
    if where == "at_the_end_of_phase_1":  # the newest backup is phase 1's last epoch end
        newest = json.loads(states[-1].read_text())
        states[-1].unlink()
        (tmp_path / "killed" / "backup" / newest["model"]).unlink()
    resumed = train_lib.train(config_lib.load(config), resume=tmp_path / "killed", verbose=0)

    for name in ("last.keras", "best.keras"):
        ours = saved_weights(tmp_path / "killed" / "checkpoints" / name)
        theirs = saved_weights(tmp_path / "straight" / "checkpoints" / name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            for x, y in zip(ours[key], theirs[key]):
                np.testing.assert_array_equal(x, y, err_msg=key)
    assert resumed["metrics"]["test"] == straight["metrics"]["test"]
    assert resumed["metrics"]["history"]["phase"] == [1.0, 2.0, 2.0]


def test_a_backup_resumes_in_the_phase_it_was_taken_in():
    phase = object()
    spans = [phases.Span(0, 0, 2, phase), phases.Span(1, 2, 5, phase)]
    assert phases.resumed_in(spans, 1, 3).index == 0  # in epoch 2, of phase 1
    # at the end of phase 1: the backup holds its optimizer; phase 2 then starts with a new one
    assert phases.resumed_in(spans, 2, 0).index == 0
    assert phases.resumed_in(spans, 2, 1).index == 1
    assert phases.resumed_in(spans, 4, 0).index == 1


def test_trainable_ranges_and_batch_norm(tmp_path, write_yaml):
    """{last: N}, {from: NAME}, none and all choose backbone layers; batch norm stays frozen."""
    from cnnctl.model import build as model_lib

    path = write_yaml("""\
model:
  input_shape: [32, 32, 3]
  backbone: {name: MobileNetV2, weights: null, pooling: avg, trainable: false}
  layers:
    - {type: dense, units: 2, activation: softmax}
train:
  phases:
    - {epochs: 1, trainable: none}
    - {epochs: 1, trainable: {last: 6}}
    - {epochs: 1, trainable: {from: block_16_project}}
    - {epochs: 1, trainable: all}
""")
    loaded = config_lib.load(path)
    model = model_lib.assemble(loaded)
    backbone = phases.find_backbone(model)
    names = [layer.name for layer in phases.leaf_layers(backbone)]
    spans = phases.spans(loaded.config)
    assert [(s.start, s.end) for s in spans] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert loaded.config.train.epochs == 4

    def trained(span):
        phases.set_trainable(model, span)
        return [layer.name for layer in phases.leaf_layers(backbone) if layer.trainable]

    head = model.layers[-1]
    assert trained(spans[0]) == [] and head.trainable
    pool = names[-1]  # Keras numbers the name by the pooling layers made before in this process
    assert names[-6:-1] == ["block_16_project", "block_16_project_BN", "Conv_1", "Conv_1_bn",
                            "out_relu"] and pool.startswith("global_average_pooling2d")
    last = ["block_16_project", "Conv_1", "out_relu", pool]
    assert trained(spans[1]) == last  # not the BN layers
    assert trained(spans[2]) == last
    bn = [layer.name for layer in phases.leaf_layers(backbone)
          if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn) == 52 and set(trained(spans[3])) == set(names) - set(bn)
    assert trained(spans[0]) == []  # back to none: a later phase may freeze again


def test_frozen_batch_norm_runs_in_inference_mode():
    """Keras 3: a BatchNormalization with trainable=False normalizes with its moving statistics
    even in training, and fit() does not change them; what phases rely on."""
    bn = keras.layers.BatchNormalization()
    model = keras.Sequential([keras.Input((4,)), bn])
    bn.moving_mean.assign(np.full(4, 3.0))
    bn.moving_variance.assign(np.full(4, 4.0))
    bn.trainable = False
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(10.0, 5.0, (64, 4)).astype("float32")
    expected = (x - 3.0) / np.sqrt(4.0 + bn.epsilon)
    np.testing.assert_allclose(bn(x, training=True), expected, rtol=1e-5)
    model.fit(x, x, epochs=1, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.full(4, 3.0, "float32"))


# --------------------------------------------------------------------------- config errors
@pytest.mark.parametrize("backbone, message", [
    ("{name: MobileNetV2, run: runs/x}", "model.backbone.name: give either `name` (a "
     "keras.applications model) or `run` (a previous cnnctl run directory), not both"),
    ("{pooling: avg}", "model.backbone.name: missing: give `name` (a keras.applications model) "
     "or `run` (a previous cnnctl run directory)"),
    ("{run: runs/x}", "model.backbone.until: a `run` backbone needs `until`: the name of the "
     "layer of the run's model after which it is cut"),
    ("{run: runs/x, until: a, pooling: avg}", "model.backbone.pooling: a `run` backbone keeps the "
     "run's trained weights and layers; `pooling` is for a keras.applications `name`"),
    ("{name: MobileNetV2, until: a}", "model.backbone.until: `until` cuts a `run` backbone; a "
     "keras.applications `name` is used whole, without its top"),
])
def test_backbone_errors(config_errors, backbone, message):
    assert config_errors(f"model:\n  input_shape: [32, 32, 3]\n  backbone: {backbone}\n") == [
        f"3: {message}"]


def test_phase_epochs_must_agree(config_errors):
    assert config_errors("""\
model: {input_shape: [4], layers: [{type: dense, units: 2}]}
train:
  epochs: 4
  phases: [{epochs: 2}, {epochs: 1}]
""") == ["3: train.epochs: is 4 but train.phases add up to 3 epochs; leave epochs out (the "
         "phases set it) or make them agree"]


def test_run_backbone_errors(cifar, base_run, tmp_path):
    from cnnctl.model import build as model_lib

    def error(text: str) -> str:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(CnnctlError) as info:
            model_lib.assemble(config_lib.load(path))
        return str(info.value).removeprefix(f"{path}:")

    good = finetune_yaml(cifar, base_run)
    assert error(good.replace("until: features", "until: featurs")) == (
        f"4: model.backbone.until: 'featurs' is not a layer of the model of {base_run} (did you "
        "mean 'features'?); its layers: conv1, max_pool2d, conv2, max_pool2d_1, conv3, "
        "features, dense")
    assert error(good.replace(f"run: {base_run}", "run: no_such_run")) == (
        f"4: model.backbone.run: run directory not found: no '{tmp_path / 'no_such_run'}' or "
        "'no_such_run' in the current directory; train that run first (`cnnctl train CONFIG`) "
        "and give its run directory (or its config's runs folder)")
    assert error(good.replace("input_shape: [32, 32, 3]", "input_shape: [28, 28, 3]")) == (
        f"3: model.input_shape: must be the input shape of the backbone run {base_run}: "
        "[32, 32, 3] (got [28, 28, 3])")
    assert error(good.replace("data: {source: folder,", "data: {source: folder, preprocessing: "
                              "{rescale: 1.0},")) == (
        f"7: data.preprocessing: must be the backbone run's ({{'rescale': 0.00392156862745098, "
        f"'normalize': None}}, from {base_run / 'config.yaml'}; got {{'rescale': 1.0, 'normalize': "
        "None}): its layers were trained on images read that way, and its preprocessing layer is "
        "part of the backbone")


def test_phase_trainable_errors(cifar, base_run, tmp_path):
    def error(phases_yaml: str) -> str:
        path = tmp_path / "bad.yaml"
        path.write_text(finetune_yaml(cifar, base_run, phases_yaml=phases_yaml))
        with pytest.raises(CnnctlError) as info:
            train_lib.train(config_lib.load(path), tmp_path / "run", verbose=0)
        assert not (tmp_path / "run").exists()  # nothing trained, no run started
        return str(info.value).removeprefix(f"{path}:")

    assert error("    - {epochs: 1}\n    - {epochs: 1, trainable: {from: conv}}\n") == (
        "17: train.phases[1].trainable.from: 'conv' is not a layer of the backbone (did you mean "
        "'conv3'?); its layers: preprocessing, conv1, max_pool2d, conv2, max_pool2d_1, conv3, features")
    assert error("    - {epochs: 1, trainable: {last: 9}}\n") == (
        "16: train.phases[0].trainable.last: the backbone has 7 layers (got 9); use trainable: all "
        "to train them all")


# --------------------------------------------------------------------------- weights files
MOBILENET = """\
model:
  input_shape: [32, 32, 3]
  backbone: {{name: MobileNetV2, weights: {weights}, pooling: avg}}
  layers:
    - {{type: dense, units: 2, activation: softmax}}
"""


def test_backbone_weights_from_a_file_beside_the_config(tmp_path, monkeypatch):
    from cnnctl.model import build as model_lib

    folder = tmp_path / "configs"
    folder.mkdir()
    source = keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg",
                                            input_shape=(32, 32, 3))
    source.save_weights(folder / "mobilenet.weights.h5")
    (folder / "tuned.yaml").write_text(MOBILENET.format(weights="mobilenet.weights.h5"))
    monkeypatch.chdir(tmp_path)  # not where the file is: it is found beside the config
    model = model_lib.build(config_lib.load(folder / "tuned.yaml"))
    backbone = phases.find_backbone(model)
    for x, y in zip(backbone.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(x, y)

    (folder / "missing.yaml").write_text(MOBILENET.format(weights="nowhere.h5"))
    with pytest.raises(CnnctlError) as info:
        model_lib.build(config_lib.load(folder / "missing.yaml"))
    assert str(info.value) == (
        f"{folder / 'missing.yaml'}:3: model.backbone.weights: weights file "
        f"'{folder / 'nowhere.h5'}' not found; give a path to a weights file, `imagenet` or null")


def test_imagenet_weights_offline_say_what_to_download(tmp_path, use_keras_home, monkeypatch):
    import urllib.error

    from keras.src.utils import file_utils

    from cnnctl.model import build as model_lib

    use_keras_home(tmp_path / "keras_home")

    def offline(*args, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    path = tmp_path / "imagenet.yaml"
    path.write_text(MOBILENET.format(weights="imagenet").replace("[32, 32, 3]", "[96, 96, 3]"))
    with pytest.raises(CnnctlError) as info:
        model_lib.build(config_lib.load(path))
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    message = str(info.value)
    assert message.startswith(f"{path}:3: model.backbone.weights: imagenet weights for "
                              "MobileNetV2 are not in the Keras cache and could not be downloaded ")
    assert message.endswith(
        f"/{name} and put it at {tmp_path / 'keras_home' / 'models' / name} or give its path as "
        "weights: PATH, or set weights: null")
    assert "\n" not in message


def test_curves_mark_where_each_phase_starts(tmp_path):
    from cnnctl import plots

    csv = tmp_path / "history.csv"
    csv.write_text("epoch,accuracy,loss,phase\n1,0.5,0.9,1.0\n2,0.6,0.8,1.0\n3,0.7,0.7,2.0\n"
                   "4,0.8,0.6,2.0\n5,0.85,0.5,3.0\n")
    for ax in plots.curves_figure(csv, "loss").axes:
        dotted = [list(line.get_xdata()) for line in ax.get_lines() if line.get_linestyle() == ":"]
        assert dotted == [[2.5, 2.5], [4.5, 4.5]]
        assert [t.get_text() for t in ax.texts if t.get_text().startswith("phase")] == [
            "phase 2", "phase 3"]
        assert "phase" not in ax.get_title()
    assert [ax.get_title() for ax in plots.curves_figure(csv, "loss").axes] == ["loss", "accuracy"]
