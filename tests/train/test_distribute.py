"""Scale out (issue "Scale out"): `train.distribute` trains the same YAML over several devices,
mirrored on TensorFlow (two logical CPU devices here), data_parallel on JAX (two host devices),
and multi_worker over two `cnnctl train` processes on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnctl.config import load as config_lib
from cnnctl.train import distribute
from cnnctl.use import evaluate
from cnnctl.train import fit as train_lib
from cnnctl.cli import app
from cnnctl.errors import CnnctlError
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spread_yaml(cnn_yaml) -> str:
    """One conv of 16 filters, 3 epochs of batch 32 on 1,001 shipped Fashion-MNIST images (a
    quarter held out: 751 to train), all 999 test images, one-hot labels."""
    return cnn_yaml(
        name="spread",
        layers=["{type: conv2d, filters: 16, kernel_size: 3, activation: relu}",
                "{type: max_pool2d, pool_size: 2}",
                "{type: flatten}",
                "{type: dense, units: 10, activation: softmax}"],
        data='{source: npz, path: "cnnctl://fashion_mnist_small.npz", max_train_samples: 1001, '
             'max_test_samples: 999, validation_split: 0.25}',
        loss="categorical_crossentropy",
        train="{epochs: 3, batch_size: 32, seed: 3, tensorboard: false}")


@pytest.fixture
def config(tmp_path, spread_yaml) -> Path:
    path = tmp_path / "spread.yaml"
    path.write_text(spread_yaml)
    return path


@pytest.fixture(scope="module")
def line_of(spread_yaml):
    """line_of(key) -> the line of `spread_yaml` that starts with `key`."""
    return lambda key: next(i for i, line in enumerate(spread_yaml.splitlines(), 1)
                            if line.startswith(key))


def run_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_mirrored_on_two_logical_cpu_devices(config, tmp_path):
    run = tmp_path / "run"
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cnnctl import messages
from cnnctl.config import load as config_lib
from cnnctl.train import fit as train_lib
messages.to_terminal()  # as the CLI does: train's own lines on stdout
loaded = config_lib.load({str(config)!r}, ["train.distribute=mirrored", "train.scale_lr_with_replicas=true"])
train_lib.train(loaded, {str(run)!r}, verbose=2)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("distribute: mirrored, 2 replicas on /device:CPU:0, /device:CPU:1 (global batch 64, "
            "learning rates x2)" in done.stdout)
    spread = run_json(run / "environment.json")["distribute"]
    assert spread["strategy"] == "mirrored" and spread["replicas"] == 2
    assert spread["global_batch_size"] == 64
    metrics = run_json(run / "metrics.json")
    losses = metrics["history"]["loss"]
    assert metrics["epochs"] == 3 and losses[0] > losses[1] > losses[2]
    assert "12/12" in done.stdout  # 751 training images / 64 a step
    assert metrics["test"]["accuracy"] > 0.6


@pytest.mark.optional
@pytest.mark.slow
def test_data_parallel_on_two_jax_devices_evaluates_every_image(config, tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (.ci/run installs it)")
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "cnnctl", "train", str(config), "--run-dir", str(run),
         "--set", "train.distribute=data_parallel"], capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax",
             "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distribute: data_parallel, 2 replicas on cpu:0, cpu:1 (global batch 64)" in done.stdout
    # 751 training images: 11 full steps of 64 and a last one cut from 47 to 46 images
    assert "12/12" in done.stdout
    spread = run_json(run / "environment.json")["distribute"]
    assert spread["replicas"] == 2 and spread["devices"] == ["cpu:0", "cpu:1"]
    metrics = run_json(run / "metrics.json")
    assert metrics["test"]["accuracy"] > 0.6
    # the final figures cover all 999 test images (the odd last one too), as `cnnctl eval` does
    report, _, _ = evaluate.run(run)
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1.5 / 999)
    assert sum(map(sum, report["confusion_matrix"])) == 999


# --------------------------------------------------------------------------- multi_worker
def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class Cluster:
    """Two `cnnctl train` workers on 127.0.0.1, started with the same command but --worker-index;
    each with a TMPDIR of its own, to see what it leaves there."""

    def __init__(self, config: Path, run: Path, tmp: Path):
        self.config, self.run, self.tmp = config, run, tmp
        self.workers = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))

    def start(self, index: int, *extra) -> subprocess.Popen:
        tmpdir = self.tmp / f"tmp{index}"
        tmpdir.mkdir(exist_ok=True)
        return subprocess.Popen(
            [sys.executable, "-m", "cnnctl", "train", str(self.config), "--run-dir", str(self.run),
             "--workers", self.workers, "--worker-index", str(index), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "KERAS_BACKEND": "tensorflow", "TMPDIR": str(tmpdir),
                 "TF_CPP_MIN_LOG_LEVEL": "2"})

    def train(self) -> list[tuple[int, str, str]]:
        procs = [self.start(0), self.start(1)]
        outputs = [p.communicate(timeout=300) for p in procs]
        return [(p.returncode, *out) for p, out in zip(procs, outputs)]


MULTI_WORKER = ["--set", "train.distribute=multi_worker", "--set", "train.epochs=2"]


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, spread_yaml):
    """An uninterrupted two-worker run (2 epochs, 32 images per worker, global batch 64)."""
    tmp = tmp_path_factory.mktemp("two_workers")
    config = tmp / "spread.yaml"
    config.write_text(spread_yaml.replace("seed: 3,", "seed: 3, distribute: multi_worker,").replace(
        "epochs: 3", "epochs: 2"))
    cluster = Cluster(config, tmp / "run", tmp)
    return cluster, cluster.train()


@pytest.mark.slow
def test_two_workers_train_as_one_process_and_only_the_chief_writes(two_workers, tmp_path):
    cluster, done = two_workers
    for rc, out, err in done:
        assert rc == 0, err[-3000:]
    (_, chief, _), (_, other, _) = done
    assert (f"distribute: multi_worker, 2 replicas on /job:worker/replica:0/task:0/device:CPU:0, "
            f"/job:worker/replica:0/task:1/device:CPU:0 (global batch 64); 2 workers "
            f"({cluster.workers.replace(',', ', ')}), this is worker 0, the chief, writing "
            f"{cluster.run}") in chief
    assert "this is worker 1, writing to a temporary folder (the chief writes the run)" in other
    assert chief.startswith(f"distribute: multi_worker, this is worker 0 of 2 workers "
                            f"({cluster.workers.replace(',', ', ')}); waiting for every one of "
                            "them to connect\n")
    assert chief.count("12/12") == 2 and other.count("12/12") == 2  # 751 images / 64 a step
    assert other.strip().splitlines()[-1].endswith("worker 1 done (the chief wrote the run)")
    # only the chief wrote the run: one history row an epoch, its own command in environment.json
    assert len((cluster.run / "history.csv").read_text().splitlines()) == 3
    environment = run_json(cluster.run / "environment.json")
    assert environment["command"][-1] == "0"
    assert environment["distribute"] == {
        "strategy": "multi_worker", "replicas": 2, "devices": ["/job:worker/replica:0/task:0/device:CPU:0",
                                                               "/job:worker/replica:0/task:1/device:CPU:0"],
        "global_batch_size": 64, "workers": cluster.workers.split(","), "chief": "worker 0"}
    assert not any((cluster.tmp / "tmp1").iterdir())  # worker 1's temporary folder is gone
    # the sharded final evaluation covers every test image once: the same as `cnnctl eval`
    metrics = run_json(cluster.run / "metrics.json")
    report, _, _ = evaluate.run(cluster.run)
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=0.5 / 999)
    # one process with the same global batch trains the same model
    single = train_lib.train(config_lib.load(cluster.config, ["train.distribute=none",
                                                              "train.batch_size=64"]),
                             tmp_path / "single", verbose=0)["metrics"]
    assert metrics["history"]["loss"] == pytest.approx(single["history"]["loss"], rel=1e-3)
    assert metrics["test"]["accuracy"] == pytest.approx(single["test"]["accuracy"], abs=0.01)


@pytest.mark.slow
def test_a_killed_worker_restarted_with_the_same_command_resumes_from_the_backup(two_workers,
                                                                                  tmp_path):
    straight = run_json(two_workers[0].run / "metrics.json")
    cluster = Cluster(two_workers[0].config, tmp_path / "run", tmp_path)
    chief, other = cluster.start(0), cluster.start(1)
    state = cluster.run / "backup" / "state-000000012.json"  # the end of epoch 1
    deadline = time.monotonic() + 240
    while not state.exists():
        assert chief.poll() is None and time.monotonic() < deadline, chief.communicate()
        time.sleep(0.02)
    other.send_signal(signal.SIGSTOP)  # the chief cannot take a step of epoch 2 without it
    other.kill()
    other.communicate()
    out, err = chief.communicate(timeout=120)
    assert chief.returncode == 75, err[-3000:]
    assert "Traceback" not in err
    # the cause is TensorFlow's own words and depends on which check notices the dead worker
    # first (the heartbeat, a reset socket, a closed socket): the line around it is ours
    assert re.fullmatch(
        re.escape("worker 0: another worker of the cluster stopped (Collective ops is aborted "
                  "by: ") + r"[^\n]+" +
        re.escape(f"); the newest backup is kept ({cluster.run / 'backup'}, epoch 2, step 0). "
                  "Start every worker again with the same command to resume the run"),
        err.strip().splitlines()[-1]), err.strip().splitlines()[-1]
    assert not (cluster.run / "metrics.json").exists()

    # a worker that cannot see the chief's backup would start afresh: refused on both
    mixed = [cluster.start(0), cluster.start(1, "--new", "--run-dir", str(tmp_path / "elsewhere"))]
    ended = [(proc, *proc.communicate(timeout=300)) for proc in mixed]
    for proc, out, err in ended:
        assert proc.returncode == 2, "\n\n".join(e[-3000:] for _, _, e in ended)
        assert err.strip().splitlines()[-1] == (
            f"train.distribute: the workers would start at different points ({cluster.workers.split(',')[0]}: "
            f"epoch 2, step 0; {cluster.workers.split(',')[1]}: a new run); every worker must read the "
            "chief's run directory (put run.dir on storage all machines share) and be started with "
            "the same command")

    done = cluster.train()
    for rc, out, err in done:
        assert rc == 0, err[-3000:]
        assert f"found an unfinished run of this config: {cluster.run}" in out
        assert f"resuming {cluster.run} at epoch 2, step 0" in out
    resumed = run_json(cluster.run / "metrics.json")
    assert resumed["epochs"] == 2 and len((cluster.run / "history.csv").read_text().splitlines()) == 3
    assert resumed["test"] == straight["test"]  # as the uninterrupted run, to the last bit
    assert resumed["history"]["loss"] == straight["history"]["loss"]


def test_workers_option_builds_tf_config_and_refuses_bad_addresses():
    assert json.loads(distribute.tf_config("10.0.0.1:2222, 10.0.0.2:2222", 1)) == {
        "cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
        "task": {"type": "worker", "index": 1}}
    for workers, index, message in [
        ("10.0.0.1", 0, "--workers: '10.0.0.1' is not host:port (e.g. 10.0.0.1:12345)"),
        ("a:1,a:1", 0, "--workers: 'a:1,a:1' names an address twice"),
        ("a:1,b:1", 2, "--worker-index: 2 is not a worker of --workers (2 given: 0 to 1); "
                       "worker 0 is the chief"),
    ]:
        with pytest.raises(CnnctlError) as error:
            distribute.tf_config(workers, index)
        assert str(error.value).startswith(message)


def test_workers_option_needs_multi_worker_and_no_tf_config(config, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(app, ["train", str(config), "--workers", "a:1,b:2", "--worker-index", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"--workers: {config} trains with train.distribute: none; set train.distribute: "
        "multi_worker (or --set train.distribute=multi_worker) to train on several machines")
    result = CliRunner().invoke(app, ["train", str(config), "--workers", "a:1,b:2"])
    assert result.exit_code == 2 and result.output.strip() == (
        "--workers needs --worker-index too: --workers host1:port,host2:port --worker-index I "
        "(0 on the chief)")
    monkeypatch.setenv("TF_CONFIG", "{}")
    result = CliRunner().invoke(app, ["train", str(config), "--set", "train.distribute=multi_worker",
                                      "--workers", "a:1,b:2", "--worker-index", "1"])
    assert result.exit_code == 2 and result.output.strip().startswith(
        "--workers: TF_CONFIG is set too; give the cluster one way")


@pytest.mark.parametrize("tf_config, message", [
    (None, "multi_worker reads the cluster from TF_CONFIG, which is not set; on each machine run "
           "cnnctl train with --workers host1:port,host2:port --worker-index I (0 on the chief), "
           "or set TF_CONFIG"),
    ('{"cluster": {"worker": ["a:1"]}}', "multi_worker: TF_CONFIG is not a cluster spec (KeyError: "
                                         "'task'); it must look like"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "ps", "index": 0}}',
     "multi_worker: TF_CONFIG has task type 'ps' and jobs ['ps', 'worker']; cnnctl runs chief and "
     "worker tasks only"),
])
def test_multi_worker_needs_a_cluster_in_tf_config(config, tmp_path, monkeypatch, tf_config,
                                                   message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    loaded = config_lib.load(config, ["train.distribute=multi_worker"])
    with pytest.raises(CnnctlError) as error:
        train_lib.train(loaded, tmp_path / "run", verbose=0)
    assert str(error.value).startswith(f"--set: train.distribute: {message}")
    assert not (tmp_path / "run").exists()


def test_data_parallel_needs_jax(config, tmp_path, spread_yaml, line_of):
    config.write_text(spread_yaml.replace("seed: 3,", "seed: 3, distribute: data_parallel,"))
    with pytest.raises(CnnctlError) as error:
        train_lib.train(config_lib.load(config), tmp_path / "run", verbose=0)
    assert str(error.value) == (
        f"{config}:{line_of('train:')}: train.distribute: data_parallel is "
        "keras.distribution.DataParallel and needs the jax backend (this is tensorflow); use "
        "mirrored on tensorflow, or KERAS_BACKEND=jax")


def test_scaled_learning_rate_and_reference_batch_size_exclude_each_other(config, tmp_path):
    loaded = config_lib.load(config, ["train.distribute=mirrored", "train.scale_lr_with_replicas=true",
                                      "optimizer.reference_batch_size=32"])
    with pytest.raises(CnnctlError, match="optimizer.reference_batch_size already scales the "
                                          "learning rates by the global batch size"):
        train_lib.train(loaded, tmp_path / "run", verbose=0)


def test_plan_scales_batch_and_learning_rates_by_replicas(config):
    cfg = config_lib.load(config, ["train.scale_lr_with_replicas=true",
                                   "optimizer.schedule={type: cosine, min_learning_rate: 0.0001}"]).config
    plan = distribute.Plan("mirrored", 4, [], None)
    scaled = plan.effective(cfg)
    assert scaled.train.batch_size == 128 and cfg.train.batch_size == 32
    assert scaled.optimizer.learning_rate == pytest.approx(0.008)
    assert scaled.optimizer.schedule.min_learning_rate == pytest.approx(0.0004)
    kept = plan.effective(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"scale_lr_with_replicas": False})}))
    assert kept.train.batch_size == 128 and kept.optimizer.learning_rate == pytest.approx(0.002)
