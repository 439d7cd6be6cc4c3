"""Training on more devices with tf.distribute: one helper picks the strategy, the training code stays the same.

    strategy = distribute.strategy()      # a TPU, several GPUs, several machines, or this CPU
    with strategy.scope():                # variables are created on every replica
        model = architectures.resnet_cifar(20)
        train.compile_classifier(model, ...)
    train.fit(model, data.pipeline(x, y, batch_size=distribute.global_batch(128, strategy), ...), ...)

Also here: the training-step timings of the scaling appendix, and a launcher
that runs several worker processes on this machine, isolated so that nothing listens beyond loopback.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from book_utils import train

KINDS = ("auto", "tpu", "multiworker", "mirrored", "default")


def split_cpu(n: int = 2) -> None:
    """Show the CPU to TensorFlow as n logical devices, so that MirroredStrategy can run n replicas on it.

    Call it before TensorFlow runs anything: TensorFlow fixes its devices at its first operation.
    The replicas share the same cores, so this tests the mechanics of data parallelism, not its speed.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        raise RuntimeError("split_cpu() must run before TensorFlow's first operation: call it right after "
                           "the imports (restart the kernel if TensorFlow already ran).") from e


def tpu_resolver():
    """The cluster resolver of an attached TPU (Colab, a TPU VM), or None when there is no TPU."""
    import tensorflow as tf

    if os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"):
        return tf.distribute.cluster_resolver.TPUClusterResolver()  # the TPU the environment names
    if Path("/dev/accel0").exists() or Path("/dev/vfio/0").exists():
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")  # a TPU VM's own chips
    return None


def _workers_in_tf_config() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))


def strategy(kind: str = "auto"):
    """The tf.distribute strategy for where this runs.

    "auto" picks, in this order: TPUStrategy when a TPU is attached (Colab's TPU runtime);
    MultiWorkerMirroredStrategy when TF_CONFIG describes a cluster of several workers (each machine
    runs the same script with its own TF_CONFIG); MirroredStrategy when there are several GPUs; else
    the default strategy (one device: this CPU or one GPU). Pass a kind to force one; "mirrored"
    on a machine without GPUs uses every logical CPU device (see split_cpu).
    """
    import tensorflow as tf

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind in ("auto", "tpu"):
        resolver = tpu_resolver()
        if resolver is not None:
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        if kind == "tpu":
            raise RuntimeError("No TPU found. On Colab choose Runtime > Change runtime type > TPU.")
    if kind == "multiworker" or (kind == "auto" and _workers_in_tf_config() > 1):
        if _workers_in_tf_config() < 1:
            raise RuntimeError("MultiWorkerMirroredStrategy needs TF_CONFIG: the cluster's worker addresses "
                               "and this process's index (see distribute.tf_config).")
        return _multi_worker_class()()  # a subclass: see its reduce(), and why
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if kind == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()  # the default strategy: one device, no copies


@functools.cache
def _multi_worker_class():
    """MultiWorkerMirroredStrategy whose reduce() also takes the two calls Keras 3's fit makes that
    TensorFlow's rejects; the public class is left untouched, and only strategies made here are this one."""
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """tf.distribute.MultiWorkerMirroredStrategy, except that reduce() accepts a nested structure
        (reduced one tensor at a time) and axis=0 on a scalar (reduced across replicas only).

        Keras 3's fit makes both calls under this strategy: it reduces a whole (images, labels) batch in
        one call, and each scalar metric along axis 0, which fails in TensorFlow with "Invalid reduction
        dimension 0 for input with 0 dimensions" (tensorflow/tensorflow#72388,
        https://github.com/tensorflow/tensorflow/issues/72388, closed by the TensorFlow team as a
        Keras 3 issue). Every call TensorFlow accepts gives TensorFlow's result, unchanged.
        """

        def reduce(self, reduce_op, value, axis=None):
            if tf.nest.is_nested(value):
                return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
            one = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
            if axis is not None and getattr(one, "shape", None) is not None and one.shape.rank == 0:
                axis = None
            return super().reduce(reduce_op, value, axis)

    return MultiWorkerMirroredStrategy


def describe(s) -> str:
    """One line: the strategy, its replicas and where they run."""
    name = type(s).__name__
    name = "default strategy" if name.startswith("_Default") else name
    devices = getattr(s.extended, "worker_devices", None) or ["the default device"]
    return f"{name}: {s.num_replicas_in_sync} replica(s) in sync on {', '.join(devices)}"


def global_batch(per_replica: int, s) -> int:
    """The batch the input pipeline must make: each of the strategy's replicas gets per_replica images of it."""
    return per_replica * s.num_replicas_in_sync


def scaled_learning_rate(base_rate: float, base_batch: int, batch: int) -> float:
    """The linear scaling rule (Goyal et al. 2017): k times the batch, k times the learning rate."""
    return base_rate * batch / base_batch


# ---- Batch norm under data parallelism ------------------------------------------------------------
# Keras's BatchNormalization normalizes each replica's part of the batch with that part's statistics
# and keeps each replica's own moving averages (synchronized=False is the default); the weights are
# all-reduced, these statistics are not, and a saved model keeps one replica's. Two remedies:
# this synchronized copy, or train.recalibrate_batch_norm after training (one place for it).

def synchronized_batch_norm(model):
    """A copy of the model, same weights, whose BatchNormalization layers use the whole global batch's
    statistics at every step (synchronized=True: one all-reduce per BN layer per step), so that all
    replicas keep the same moving averages. Call it inside strategy.scope(), then compile the copy."""
    import keras

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    if not train.batch_norms(model):
        raise ValueError(f"{model.name} has no BatchNormalization layer to synchronize")
    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def replica_divergence(model, s) -> float:
    """The largest difference between the replicas' copies of any non-trainable weight (BN moving
    statistics) of a model built under strategy s; 0.0 when they agree or there is one replica."""
    worst = 0.0
    for w in model.non_trainable_weights:
        copies = [np.asarray(v) for v in s.experimental_local_results(w.value)]
        worst = max([worst] + [float(np.abs(c - copies[0]).max()) for c in copies[1:]])
    return worst


# ---- Worker processes on this machine ---------------------------------------------------------

def free_ports(n: int) -> list[int]:
    """n TCP ports that are free on 127.0.0.1 now (the OS picks them)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: list[int], index: int) -> str:
    """TF_CONFIG for worker `index` of a cluster of workers on 127.0.0.1 at these ports."""
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def loopback_only_prefix() -> list[str] | None:
    """A command prefix that runs a command in a private network namespace with only loopback, or None.

    TensorFlow's gRPC server listens on every interface (0.0.0.0) whatever address TF_CONFIG gives;
    inside its own network namespace (Linux) the only interface is the loopback one.
    """
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not (unshare and ip):
        return None
    for flags in (["-rn"], ["-n"]):  # as an unprivileged user (user namespace), then as root
        prefix = [unshare, *flags, "sh", "-c"]
        probe = subprocess.run([*prefix, f"{ip} link set lo up"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


@dataclass
class WorkerRun:
    returncodes: list[int]
    logs: list[str]
    seconds: float


def run_local_workers(script: str | os.PathLike, args: list[str] = (), n: int = 2, timeout: float = 120,
                      cwd: str | os.PathLike | None = None) -> WorkerRun:
    """Run `python script *args` as n workers of one cluster on 127.0.0.1 (each with its TF_CONFIG).

    The workers run in a private network namespace, so their servers are reachable from this machine's
    loopback only; they are all killed if they outlive `timeout` seconds. Raises RuntimeError where
    no such namespace can be made (not Linux, or user namespaces switched off).
    """
    prefix = loopback_only_prefix()
    if prefix is None:
        raise RuntimeError("cannot isolate the workers' network (needs Linux with `unshare` and `ip`): "
                           "TensorFlow's gRPC server would listen on every interface, so they were not started")
    ports = free_ports(n)  # free here; the namespace has its own, empty, port space
    logdir = Path(tempfile.mkdtemp(prefix="workers-"))
    commands = [f"TF_CONFIG={shlex.quote(tf_config(ports, i))} "
                f"{shlex.join([sys.executable, str(script), *map(str, args)])} > {logdir}/{i}.log 2>&1 & "
                f"echo $! > {logdir}/{i}.pid" for i in range(n)]
    shell = (f"{shutil.which('ip')} link set lo up && " + "; ".join(commands) + "; "
             + "; ".join(f"wait $(cat {logdir}/{i}.pid); echo $? > {logdir}/{i}.rc" for i in range(n)))
    start = time.perf_counter()
    process = subprocess.Popen([*prefix, shell], cwd=cwd, start_new_session=True)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the shell and its workers share this process group
        process.wait()
    seconds = time.perf_counter() - start
    codes = [int((logdir / f"{i}.rc").read_text()) if (logdir / f"{i}.rc").exists() else -9 for i in range(n)]
    logs = [(logdir / f"{i}.log").read_text() if (logdir / f"{i}.log").exists() else "" for i in range(n)]
    shutil.rmtree(logdir, ignore_errors=True)
    return WorkerRun(codes, logs, seconds)


# ---- Measuring training steps (input-pipeline throughput: measure.images_per_second) ------------


@contextlib.contextmanager
def without_op_determinism():
    """Switch TensorFlow's op determinism off inside the block (Keras refuses jit_compile=True while it is on)."""
    from tensorflow.python.framework import config  # the public API can only switch it on

    was_on = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    try:
        yield
    finally:
        if was_on:
            config.enable_op_determinism()


def step_seconds(model, dataset, steps: int, warmup: int = 2) -> list[float]:
    """Seconds of each of `steps` training steps of a compiled model fed by `dataset` (after `warmup` steps).

    Each step's time includes waiting for its batch, so a slow pipeline shows up here.
    """
    it = iter(dataset.repeat())
    for _ in range(warmup):
        model.train_on_batch(*next(it))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(*next(it))
        times.append(time.perf_counter() - start)
    return times
