"""The resolved --distribution-strategy (a `StrategySpec`) -> this process's `Strategy`.

Cluster-based strategies are built from our own `Cluster` (from TF_CONFIG or CLUSTER_SPEC)
through a SimpleClusterResolver, so either variable alone is enough. The loop is written
against the strategy API, so every strategy runs the same training code.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import NoReturn

import tensorflow as tf

from trainer.cluster import Cluster
from trainer.config import ClusterConfig
from trainer.errors import TrainerError
from trainer.precision import DeviceFacts, cpu_flags, cpu_model
from trainer.strategies import StrategySpec

log = logging.getLogger(__name__)

_COLLECTIVES = {"auto": "AUTO", "ring": "RING", "nccl": "NCCL"}


@dataclass(frozen=True)
class Strategy(StrategySpec):
    """The tf.distribute strategy of this task and what it means for the run (`StrategySpec`:
    does it vote, is training coordinated, where evaluation runs); `name` is resolved."""

    tf_strategy: tf.distribute.Strategy
    checkpoint_options: tf.train.CheckpointOptions | None

    @property
    def num_replicas(self) -> int:
        return self.tf_strategy.num_replicas_in_sync

    @property
    def replicas_keep_own_state(self) -> bool:
        """Several replicas in sync, each updating its own copy of the variables Keras creates
        without an aggregation (BatchNorm's moving statistics); on parameter servers there is
        one copy."""
        return self.num_replicas > 1 and not self.coordinated


def _resolver(cluster: Cluster) -> tf.distribute.cluster_resolver.ClusterResolver:
    spec = tf.train.ClusterSpec({role: list(hosts) for role, hosts in cluster.spec.items()})
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, task_type=cluster.task_type, task_id=cluster.task_index, rpc_layer="grpc")


def _multi_worker(spec: StrategySpec, cluster: Cluster) -> tf.distribute.Strategy:
    implementation = getattr(tf.distribute.experimental.CommunicationImplementation,
                             _COLLECTIVES[spec.collective])
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=_resolver(cluster),
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=implementation))


def _parameter_server(spec: StrategySpec, cluster: Cluster) -> tf.distribute.Strategy:
    if "chief" not in cluster.spec:
        raise TrainerError("parameter_server needs a chief (worker pool 0) to coordinate")
    return tf.distribute.experimental.ParameterServerStrategy(_resolver(cluster))


def _tpu(spec: StrategySpec, cluster: Cluster) -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=spec.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _mirrored(spec: StrategySpec, cluster: Cluster) -> tf.distribute.Strategy:
    # Without GPUs, mirror over the logical CPUs (one unless configured otherwise).
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def _default(spec: StrategySpec, cluster: Cluster) -> tf.distribute.Strategy:
    return tf.distribute.get_strategy()


_BUILDERS = {"multi_worker_mirrored": _multi_worker, "parameter_server": _parameter_server,
             "tpu": _tpu, "mirrored": _mirrored, "default": _default}


def create_strategy(config: ClusterConfig, batch_size: int) -> Strategy:
    """Creates the strategy; must run before any other TensorFlow op (multi-worker needs it)."""
    spec, cluster = config.strategy, config.role
    name = spec.name
    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    tf_strategy = _BUILDERS[name](spec, cluster)
    # A TPU worker cannot write the host's file system; route checkpoint I/O through the host.
    options = (tf.train.CheckpointOptions(experimental_io_device="/job:localhost")
               if spec.on_tpu else None)
    strategy = Strategy(name, spec.collective, spec.tpu, tf_strategy, options)
    replicas = strategy.num_replicas
    if batch_size % replicas:
        raise TrainerError(f"--batch-size {batch_size} is global and must divide evenly "
                           f"across {replicas} replicas")
    if strategy.global_batch:
        log.info("strategy %s: %d replica(s) in sync, global batch %d (%d per replica)", name,
                 replicas, batch_size, batch_size // replicas)
    else:
        log.info("strategy %s: %d worker(s), %d ps; --batch-size %d is each worker's batch per "
                 "(asynchronous) step", name, cluster.num_workers, cluster.num_ps, batch_size)
    return strategy


def device_facts(on_tpu: bool, cpuinfo_path: str = "/proc/cpuinfo") -> DeviceFacts:
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
    return DeviceFacts(gpu_capabilities=tuple(capabilities), tpu=on_tpu,
                       cpu_model=cpu_model(cpuinfo), cpu_flags=cpu_flags(cpuinfo))


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
