"""Cluster + flags -> a tf.distribute strategy.

The loop is written against the strategy API alone, so every strategy runs the same code.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from trainer.config import Config
from trainer.errors import TrainerError

log = logging.getLogger(__name__)


def create_strategy(config: Config) -> tf.distribute.Strategy:
    if config.cluster.is_distributed:
        raise TrainerError("TF_CONFIG/CLUSTER_SPEC describe a multi-host cluster, which this "
                           "version of the trainer does not run yet; run a single replica")
    gpus = tf.config.list_logical_devices("GPU")
    choice = config.distribution_strategy
    if choice == "auto":
        choice = "mirrored" if len(gpus) > 1 else "default"
    if choice == "mirrored":
        # Without GPUs, mirror over the logical CPUs (one unless configured otherwise).
        devices = gpus or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    else:
        strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise TrainerError(f"--batch-size {config.batch_size} is global and must divide evenly "
                           f"across {replicas} replicas")
    log.info("strategy %s: %d replica(s), global batch %d (%d per replica), %d GPU(s)",
             choice, replicas, config.batch_size, config.batch_size // replicas, len(gpus))
    return strategy
