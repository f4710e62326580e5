"""Which tf.distribute strategy a task runs, and what it means for the run (pure Python).

`resolve` picks the strategy from --distribution-strategy, the cluster and --tpu while the flags
are checked, before TensorFlow is imported. The `StrategySpec` it returns answers what the rest
of the code asks of a strategy (does it vote, is training coordinated, where evaluation runs...),
so this is the only module that tells strategies apart by name; `trainer.distribute` builds the
tf.distribute object from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.cluster import Cluster
from trainer.errors import TrainerError

STRATEGIES = ("auto", "default", "mirrored", "multi_worker_mirrored", "parameter_server", "tpu")
COLLECTIVES = ("auto", "ring", "nccl")
_MULTI_WORKER = "multi_worker_mirrored"
_PARAMETER_SERVER = "parameter_server"
_TPU = "tpu"


@dataclass(frozen=True)
class StrategySpec:
    """A resolved strategy: `name` is "auto" only on a single host, where the GPU count decides
    between mirrored and default when the strategy is built."""

    name: str
    collective: str  # multi_worker_mirrored's all-reduce (auto, ring, nccl)
    tpu: str | None  # the TPU to connect to (tpu only)

    @property
    def votes(self) -> bool:
        """Replicas in several processes must agree on saving and stopping: a lone save or
        exit would leave the others waiting forever in the next collective."""
        return self.name == _MULTI_WORKER

    @property
    def coordinated(self) -> bool:
        """The chief schedules steps on workers that serve it; the variables live on ps tasks
        and the input pipelines on the workers."""
        return self.name == _PARAMETER_SERVER

    @property
    def evaluates_local_copy(self) -> bool:
        """Evaluation runs on a local copy of the weights (they live on other tasks)."""
        return self.coordinated

    @property
    def global_batch(self) -> bool:
        """--batch-size is split across the replicas in sync; else it is each worker's batch
        per (asynchronous) step."""
        return not self.coordinated

    @property
    def on_tpu(self) -> bool:
        """Training runs on a TPU: checkpoint I/O goes through the host, bf16 is native."""
        return self.name == _TPU


def resolve(choice: str, collective: str, cluster: Cluster, tpu: str | None) -> StrategySpec:
    """The strategy a training task runs, from --distribution-strategy, the cluster,
    --collective-implementation and --tpu (or $TPU_NAME, given as `tpu`)."""
    name = _strategy(choice, cluster, tpu)
    return StrategySpec(name, _collective(collective, name, cluster),
                        (tpu or "local") if name == _TPU else None)


def _strategy(choice: str, cluster: Cluster, tpu: str | None) -> str:
    """A strategy that cannot run the cluster it was given is an error, never a silent
    fallback: workers training alone would each export and overwrite the others."""
    if cluster.num_reduction_servers:
        # Reduction Server reduces what NCCL all-reduce sends: only synchronous data
        # parallelism over the chief and workers uses it.
        if choice not in ("auto", _MULTI_WORKER):
            raise TrainerError(f"--distribution-strategy {choice} cannot use Reduction Server "
                               "(worker pool 2); use multi_worker_mirrored (or auto)")
        return _MULTI_WORKER
    if cluster.num_ps:
        if choice not in ("auto", _PARAMETER_SERVER):
            raise TrainerError(f"--distribution-strategy {choice} cannot run a cluster with "
                               f"parameter servers; use parameter_server (or auto)")
        return _PARAMETER_SERVER
    if choice == _PARAMETER_SERVER:
        raise TrainerError("--distribution-strategy parameter_server needs ps tasks in "
                           "TF_CONFIG/CLUSTER_SPEC (worker pool 2)")
    if cluster.is_distributed:
        if choice not in ("auto", _MULTI_WORKER):
            raise TrainerError(f"--distribution-strategy {choice} runs on one host, but the "
                               f"cluster has {sum(map(len, cluster.spec.values()))} tasks; use "
                               "multi_worker_mirrored (or auto)")
        return _MULTI_WORKER
    if choice == "auto" and tpu:
        return _TPU
    return choice


def _collective(choice: str, strategy: str, cluster: Cluster) -> str:
    """The all-reduce of multi_worker_mirrored: NCCL with Reduction Server, else as chosen."""
    if choice != "auto" and strategy != _MULTI_WORKER:
        raise TrainerError("--collective-implementation applies only to multi_worker_mirrored, "
                           f"not {strategy}")
    if cluster.num_reduction_servers:
        if choice == "ring":
            raise TrainerError("--collective-implementation ring bypasses Reduction Server "
                               "(worker pool 2), which plugs into NCCL; use nccl (or auto)")
        return "nccl"
    return choice
