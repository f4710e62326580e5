"""The resolved --distribution-strategy -> a tf.distribute strategy for this process.

Cluster-based strategies are built from our own `Cluster` (from TF_CONFIG or CLUSTER_SPEC)
through a SimpleClusterResolver, so either variable alone is enough. The loop is written
against the strategy API, so every strategy runs the same training code.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import NoReturn

import tensorflow as tf

from trainer.cluster import Cluster
from trainer.config import Config
from trainer.errors import TrainerError
from trainer.precision import DeviceFacts, cpu_flags, cpu_model

log = logging.getLogger(__name__)

_COLLECTIVES = {"auto": "AUTO", "ring": "RING", "nccl": "NCCL"}


def _resolver(cluster: Cluster) -> tf.distribute.cluster_resolver.ClusterResolver:
    spec = tf.train.ClusterSpec({role: list(hosts) for role, hosts in cluster.spec.items()})
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, task_type=cluster.task_type, task_id=cluster.task_index, rpc_layer="grpc")


def create_strategy(config: Config) -> tf.distribute.Strategy:
    """Creates the strategy; must run before any other TensorFlow op (multi-worker needs it)."""
    kind = config.distribution_strategy
    cluster = config.cluster
    if kind == "multi_worker_mirrored":
        implementation = getattr(tf.distribute.experimental.CommunicationImplementation,
                                 _COLLECTIVES[config.collective_implementation])
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=_resolver(cluster),
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=implementation))
    elif kind == "parameter_server":
        if "chief" not in cluster.spec:
            raise TrainerError("parameter_server needs a chief (worker pool 0) to coordinate")
        strategy = tf.distribute.experimental.ParameterServerStrategy(_resolver(cluster))
    elif kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=config.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        gpus = tf.config.list_logical_devices("GPU")
        if kind == "auto":
            kind = "mirrored" if len(gpus) > 1 else "default"
        if kind == "mirrored":
            # Without GPUs, mirror over the logical CPUs (one unless configured otherwise).
            devices = gpus or tf.config.list_logical_devices("CPU")
            strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
        else:
            strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise TrainerError(f"--batch-size {config.batch_size} is global and must divide evenly "
                           f"across {replicas} replicas")
    if kind == "parameter_server":
        log.info("strategy parameter_server: %d worker(s), %d ps; --batch-size %d is each "
                 "worker's batch per (asynchronous) step", cluster.num_workers, cluster.num_ps,
                 config.batch_size)
    else:
        log.info("strategy %s: %d replica(s) in sync, global batch %d (%d per replica)", kind,
                 replicas, config.batch_size, config.batch_size // replicas)
    return strategy


def device_facts(config: Config, cpuinfo_path: str = "/proc/cpuinfo") -> DeviceFacts:
    """What --mixed-precision auto decides on: this task's GPUs, a TPU, else its CPU."""
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            capabilities.append(tuple(capability))
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            cpuinfo = f.read()
    except OSError:  # not Linux: no flags known, so no native bf16 assumed
        cpuinfo = ""
    return DeviceFacts(gpu_capabilities=tuple(capabilities),
                       tpu=config.distribution_strategy == "tpu",
                       cpu_model=cpu_model(cpuinfo), cpu_flags=cpu_flags(cpuinfo))


def checkpoint_options(config: Config) -> tf.train.CheckpointOptions | None:
    # A TPU worker cannot write the host's file system; route checkpoint I/O through the host.
    if config.distribution_strategy == "tpu":
        return tf.train.CheckpointOptions(experimental_io_device="/job:localhost")
    return None


def serve_forever(cluster: Cluster) -> NoReturn:
    """A parameter-server cluster's worker or ps task: serve the coordinator until killed."""
    # Fail an RPC at once when a peer is gone, so the coordinator's fault tolerance can act.
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    # Nothing to save here: SIGTERM (the job ending, or preemption) simply ends the task.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    spec = tf.train.ClusterSpec({role: list(hosts) for role, hosts in cluster.spec.items()})
    server = tf.distribute.Server(spec, job_name=cluster.task_type,
                                  task_index=cluster.task_index, protocol="grpc", start=True)
    log.info("%s %d serving the parameter-server cluster at %s", cluster.task_type,
             cluster.task_index, server.target)
    server.join()  # blocks for the life of the process
