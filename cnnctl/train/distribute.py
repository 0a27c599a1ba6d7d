"""`train.distribute`: the same config on several devices and machines, through the engines
Keras and TensorFlow provide (tf.distribute on the TensorFlow backend, keras.distribution on JAX).

`train.batch_size` is the batch of one replica: a step takes batch_size x replicas images, and
`train.scale_lr_with_replicas` multiplies the learning rates by the number of replicas.

With `multi_worker` every worker runs the same program in lockstep (each step all-reduces the
gradients of all workers); they differ only in where they write: the chief writes the run
directory, the other workers a temporary folder that is removed at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from pathlib import Path

from cnnctl import keras_compat, messages
from cnnctl.backend import keras
from cnnctl.errors import CnnctlError, ConfigValueError


@dataclasses.dataclass
class Plan:
    """How a run is spread: `replicas` copies of the model, built and compiled in `scope()`."""

    kind: str
    replicas: int
    devices: list[str]
    scope: contextlib.AbstractContextManager
    chief: bool = True  # writes the run directory (False: a multi_worker worker other than the chief)
    task: str | None = None  # multi_worker: "worker 1", "chief 0"
    workers: list[str] = dataclasses.field(default_factory=list)  # multi_worker: the cluster
    strategy: object = None

    def effective(self, config):
        """The config as one replica sees it scaled up: the global batch size and, with
        train.scale_lr_with_replicas, the scaled learning rates. The run keeps the given one."""
        if self.replicas == 1:
            return config
        train = config.train.model_copy(update={"batch_size": config.train.batch_size * self.replicas})
        optimizer = config.optimizer
        if config.train.scale_lr_with_replicas:
            schedule = optimizer.schedule.model_copy(update={
                "min_learning_rate": optimizer.schedule.min_learning_rate * self.replicas})
            optimizer = optimizer.model_copy(update={
                "learning_rate": optimizer.learning_rate * self.replicas, "schedule": schedule})
        return config.model_copy(update={"train": train, "optimizer": optimizer})


def plan(train, optimizer_reference: int | None = None) -> Plan:
    """The devices and scope of `train.distribute`.

    Raises:
        ConfigValueError: the strategy does not exist on this backend (`train.distribute`).
    """
    backend = keras.backend.backend()
    kind = train.distribute
    if kind != "none" and train.scale_lr_with_replicas and optimizer_reference:
        raise ConfigValueError("train.scale_lr_with_replicas", "optimizer.reference_batch_size "
                               "already scales the learning rates by the global batch size "
                               "(batch_size x replicas); set only one of the two")
    if kind == "none":
        return Plan(kind, 1, [], contextlib.nullcontext())
    if kind == "multi_worker":
        return _multi_worker(backend)
    if kind == "mirrored":
        if backend != "tensorflow":
            raise ConfigValueError("train.distribute", f"mirrored is tf.distribute.MirroredStrategy "
                                   f"and needs the tensorflow backend (this is {backend}); use "
                                   "data_parallel on jax, or KERAS_BACKEND=tensorflow")
        import tensorflow as tf

        # every local GPU; without one, every logical CPU device (one, unless configured)
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
            [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Plan(kind, strategy.num_replicas_in_sync, devices, strategy.scope())
    if backend != "jax":
        raise ConfigValueError("train.distribute", f"data_parallel is keras.distribution.DataParallel "
                               f"and needs the jax backend (this is {backend}); use mirrored on "
                               "tensorflow, or KERAS_BACKEND=jax")
    devices = keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    return Plan(kind, len(devices), [str(d) for d in devices], distribution.scope())


# --------------------------------------------------------------------------- multi_worker
class ClusterFailure(CnnctlError):
    """Another worker of a multi_worker run stopped (killed, crashed, unreachable)."""

    exit_code = 75  # EX_TEMPFAIL: start the workers again and the run resumes


def tf_config(workers: str, index: int) -> str:
    """The TF_CONFIG of worker `index` of `workers` ("host1:port,host2:port"), worker 0 the chief.

    Raises:
        CnnctlError: a malformed address list or an index outside it.
    """
    addresses = [w.strip() for w in workers.split(",") if w.strip()]
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise CnnctlError(f"--workers: {address!r} is not host:port (e.g. 10.0.0.1:12345); "
                              "give every worker's address, comma-separated, in the same order "
                              "on every machine")
    if len(set(addresses)) != len(addresses):
        raise CnnctlError(f"--workers: {workers!r} names an address twice; each worker needs its "
                          "own host:port")
    if not 0 <= index < len(addresses):
        raise CnnctlError(f"--worker-index: {index} is not a worker of --workers ({len(addresses)} "
                          f"given: 0 to {len(addresses) - 1}); worker 0 is the chief")
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def _cluster() -> tuple[dict, str, int]:
    """The cluster, task type and index of TF_CONFIG, checked."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ConfigValueError("train.distribute", "multi_worker reads the cluster from TF_CONFIG, "
                               "which is not set; on each machine run cnnctl train with --workers "
                               "host1:port,host2:port --worker-index I (0 on the chief), or set "
                               "TF_CONFIG")
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        kind, index = task["type"], int(task["index"])
        members = cluster[kind]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigValueError("train.distribute", f"multi_worker: TF_CONFIG is not a cluster spec "
                               f"({type(e).__name__}: {e}); it must look like "
                               '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                               '"task": {"type": "worker", "index": 0}}') from None
    if kind not in ("chief", "worker") or set(cluster) - {"chief", "worker"}:
        raise ConfigValueError("train.distribute", f"multi_worker: TF_CONFIG has task type {kind!r} "
                               f"and jobs {sorted(cluster)}; cnnctl runs chief and worker tasks only")
    if not 0 <= index < len(members):
        raise ConfigValueError("train.distribute", f"multi_worker: TF_CONFIG task index {index} is "
                               f"not in its {kind} list ({len(members)} addresses)")
    return cluster, kind, index


def _multi_worker(backend: str) -> Plan:
    if backend != "tensorflow":
        raise ConfigValueError("train.distribute", f"multi_worker is tf.distribute."
                               f"MultiWorkerMirroredStrategy and needs the tensorflow backend (this "
                               f"is {backend}); use KERAS_BACKEND=tensorflow")
    cluster, kind, index = _cluster()
    import tensorflow as tf

    keras_compat.fix_multi_worker_trainer()
    members = [*cluster.get("chief", []), *cluster.get("worker", [])]
    messages.say(f"distribute: multi_worker, this is {kind} {index} of {len(members)} workers "
             f"({', '.join(members)}); waiting for every one of them to connect")
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:  # "Collective ops must be configured at program startup"
        raise CnnctlError(f"train.distribute: multi_worker must be set up before TensorFlow runs "
                          f"anything in the process ({e}); start it from the command line, "
                          "cnnctl train, in a process of its own") from None
    chief = kind == "chief" or ("chief" not in cluster and index == 0)
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
        [d.name for d in tf.config.list_logical_devices("CPU")]
    return Plan("multi_worker", strategy.num_replicas_in_sync, devices, strategy.scope(),
                chief=chief, task=f"{kind} {index}", workers=members, strategy=strategy)


def agree(plan: Plan, epoch: int, step: int) -> None:
    """Check that every worker starts at the same epoch and step (a worker that cannot read the
    chief's backup would start afresh and train other weights in lockstep with it).

    Raises:
        CnnctlError: the workers disagree (raised on every worker).
    """
    if plan.kind != "multi_worker":
        return
    import tensorflow as tf

    strategy = plan.strategy
    here = tf.constant([[epoch, step]], tf.int64)
    every = tf.function(lambda: strategy.gather(strategy.run(lambda: here), axis=0))()
    every = every.numpy().tolist()
    if any(point != every[0] for point in every):
        starts = "; ".join(f"{name}: {'a new run' if e == s == 0 else f'epoch {e + 1}, step {s}'}"
                           for name, (e, s) in zip(plan.workers, every))
        raise CnnctlError(f"train.distribute: the workers would start at different points ({starts});"
                          " every worker must read the chief's run directory (put run.dir on "
                          "storage all machines share) and be started with the same command")


@contextlib.contextmanager
def lost_workers(plan: Plan, run_dir):
    """Turns a collective op that failed because a worker went away into ClusterFailure."""
    try:
        yield
    except Exception as e:
        lost = cluster_failure(plan, e, run_dir)
        if lost is None:
            raise
        raise lost from None


def cluster_failure(plan: Plan, error: Exception, run_dir) -> ClusterFailure | None:
    """The user's message for a collective op that failed because a worker went away; None
    for any other error."""
    if plan.kind != "multi_worker":
        return None
    import tensorflow as tf

    if not isinstance(error, (tf.errors.UnavailableError, tf.errors.AbortedError,
                              tf.errors.DeadlineExceededError, tf.errors.CancelledError)):
        return None
    reason = " ".join(re.sub(r"\{\{[^}]*\}\}", "", str(error)).split())
    reason = re.split(r" The tasks have crashed| The error could be| Additional GRPC| \[Op:| \[type\.",
                      reason)[0][:300]
    return ClusterFailure(f"{plan.task}: another worker of the cluster stopped ({reason}); "
                          f"{kept(plan, run_dir)}. Start every worker again with the same command "
                          "to resume the run")


def kept(plan: Plan, run_dir) -> str:
    """Which backup a stopped multi_worker run resumes from, as this worker can tell."""
    from cnnctl.train import checkpoints

    if not plan.chief:
        return "the chief keeps the run's backups"
    found = checkpoints.latest_backup(run_dir)
    if not found or not found[0]:
        return "no backup was written yet"
    return (f"the newest backup is kept ({Path(run_dir) / checkpoints.BACKUP_DIR}, epoch "
            f"{found[0]['epoch'] + 1}, step {found[0]['step']})")
