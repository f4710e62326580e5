"""Who this process is in a Vertex AI cluster, from TF_CONFIG / CLUSTER_SPEC (pure Python).

Vertex sets CLUSTER_SPEC on every replica (worker pools `workerpool0..3`) and TF_CONFIG only for
distributed jobs (`chief`/`worker`/`ps`; an evaluator is never listed in `cluster`). A tuning
trial's id arrives as `task.trial` in either variable, or as CLOUD_ML_TRIAL_ID.

Worker pool 2 holds parameter servers, or Reduction Server replicas running Vertex's own
reduction-server image. Both look the same in CLUSTER_SPEC (`workerpool2`) and TF_CONFIG (`ps`),
so the job says which: scripts/submit_job.py --reduction-servers sets REDUCTION_SERVER_ENV on the
chief and workers, and then pool 2 is left out of the training cluster (the NCCL plugin finds the
reducers itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

from trainer.errors import TrainerError

# Vertex worker pool index -> TF_CONFIG task type.
_POOL_ROLES = {"workerpool0": "chief", "workerpool1": "worker", "workerpool2": "ps",
               "workerpool3": "evaluator"}
_ROLES = ("chief", "worker", "ps", "evaluator")
REDUCTION_SERVER_ENV = "VERTEX_TRAINER_REDUCTION_SERVER"


@dataclass(frozen=True)
class Cluster:
    """This process's role. A single host is the chief of a one-task cluster."""

    task_type: str = "chief"
    task_index: int = 0
    trial: str | None = None
    spec: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # chief, worker, ps hosts
    num_reduction_servers: int = 0  # worker pool 2 as Reduction Server, outside the cluster too

    @property
    def num_workers(self) -> int:
        return len(self.spec.get("worker", ()))

    @property
    def num_ps(self) -> int:
        return len(self.spec.get("ps", ()))

    @property
    def is_chief(self) -> bool:
        # Worker 0 leads only when the cluster has no chief; treating it as chief beside a real
        # chief is the classic double-export bug.
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_index == 0 and "chief" not in self.spec

    @property
    def is_distributed(self) -> bool:
        return sum(len(hosts) for hosts in self.spec.values()) > 1


def resolve_cluster(environ: Mapping[str, str]) -> Cluster:
    """Reads TF_CONFIG, else CLUSTER_SPEC, plus CLOUD_ML_TRIAL_ID; raises TrainerError if invalid."""
    tf_config = _load_json(environ, "TF_CONFIG")
    cluster_spec = _load_json(environ, "CLUSTER_SPEC")
    reduction_server = _reduction_server(environ)
    if tf_config and tf_config.get("cluster"):
        cluster = _from_tf_config(tf_config, reduction_server)
    elif cluster_spec and cluster_spec.get("cluster"):
        cluster = _from_cluster_spec(cluster_spec, reduction_server)
    else:
        cluster = Cluster()
    trial = (_trial_of(tf_config, "TF_CONFIG") or _trial_of(cluster_spec, "CLUSTER_SPEC")
             or environ.get("CLOUD_ML_TRIAL_ID") or None)
    return Cluster(cluster.task_type, cluster.task_index, trial, cluster.spec,
                   num_reduction_servers=cluster.num_reduction_servers)


def _reduction_server(environ: Mapping[str, str]) -> bool:
    value = environ.get(REDUCTION_SERVER_ENV, "").strip().lower()
    if value not in ("", "0", "false", "1", "true"):
        raise TrainerError(f"{REDUCTION_SERVER_ENV} must be true or false, got {value!r}")
    return value in ("1", "true")


def _without_reduction_servers(spec: dict, task_type: str, name: str) -> tuple[dict, int]:
    """Takes pool 2 (`ps`) out of the training cluster when it runs Reduction Server."""
    reducers = spec.pop("ps", ())
    if not reducers:
        raise TrainerError(f"{REDUCTION_SERVER_ENV} is set but {name} has no worker pool 2 "
                           "(the Reduction Server replicas)")
    if task_type == "ps":
        raise TrainerError(f"{name}: this task is in worker pool 2, which runs Vertex's "
                           "reduction-server image, not the trainer")
    return spec, len(reducers)


def _load_json(environ: Mapping[str, str], name: str) -> dict:
    text = environ.get(name, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise TrainerError(f"{name} is not valid JSON ({err.msg} at position {err.pos})") from None
    if not isinstance(value, dict):
        raise TrainerError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _trial_of(config: dict, name: str) -> str | None:
    trial = _task_of(config, name).get("trial")
    return None if trial in (None, "") else str(trial)


def _task_of(config: dict, name: str) -> dict:
    task = config.get("task", {})
    if not isinstance(task, dict):
        raise TrainerError(f"{name}: 'task' must be an object like {{\"type\": \"worker\", \"index\": 0}}")
    return task


def _task_type(config: dict, name: str) -> str:
    task_type = _task_of(config, name).get("type")
    if not isinstance(task_type, str):
        raise TrainerError(f"{name}: task.type must be a string, got {task_type!r}")
    return task_type


def _from_tf_config(config: dict, reduction_server: bool) -> Cluster:
    spec = _hosts_by_role(config["cluster"], "TF_CONFIG", rename={"master": "chief"})
    # Vertex never lists evaluators; TF's own convention may. Either way they do not train.
    spec.pop("evaluator", None)
    task_type = _task_type(config, "TF_CONFIG")
    task_type = "chief" if task_type == "master" else task_type
    reducers = 0
    if reduction_server:
        spec, reducers = _without_reduction_servers(spec, task_type, "TF_CONFIG")
    cluster = _validated(spec, task_type, _task_of(config, "TF_CONFIG").get("index", 0),
                         "TF_CONFIG")
    return Cluster(cluster.task_type, cluster.task_index, None, spec,
                   num_reduction_servers=reducers)


def _from_cluster_spec(config: dict, reduction_server: bool) -> Cluster:
    pools = config["cluster"]
    unknown = sorted(set(pools) - set(_POOL_ROLES)) if isinstance(pools, dict) else []
    if unknown:
        raise TrainerError(f"CLUSTER_SPEC: unknown worker pool {unknown[0]!r}; expected workerpool0..3")
    spec = _hosts_by_role(pools, "CLUSTER_SPEC", rename=_POOL_ROLES)
    spec.pop("evaluator", None)  # side-cars, not part of the training cluster
    task = _task_of(config, "CLUSTER_SPEC")
    pool = _task_type(config, "CLUSTER_SPEC")
    if pool not in _POOL_ROLES:
        raise TrainerError(f"CLUSTER_SPEC: task.type {pool!r} is not one of workerpool0..3")
    reducers = 0
    if reduction_server:
        spec, reducers = _without_reduction_servers(spec, _POOL_ROLES[pool], "CLUSTER_SPEC")
    cluster = _validated(spec, _POOL_ROLES[pool], task.get("index", 0), "CLUSTER_SPEC")
    return Cluster(cluster.task_type, cluster.task_index, None, spec,
                   num_reduction_servers=reducers)


def _hosts_by_role(cluster, name: str, rename: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(cluster, dict):
        raise TrainerError(f"{name}: 'cluster' must map task types to lists of host:port")
    spec: dict[str, tuple[str, ...]] = {}
    for key, hosts in cluster.items():
        role = rename.get(key, key)
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise TrainerError(f"{name}: cluster.{key} must be a list of 'host:port' strings")
        if role in spec:
            raise TrainerError(f"{name}: cluster lists both 'chief' and 'master'; give one chief")
        if hosts:
            spec[role] = tuple(hosts)
    return spec


def _validated(spec: dict, task_type, task_index, name: str) -> Cluster:
    known = set(_ROLES) | {"master"}
    bad_roles = sorted(set(spec) - known)
    if bad_roles:
        raise TrainerError(f"{name}: unknown task type {bad_roles[0]!r} in cluster; "
                           f"expected chief/master, worker, ps")
    if task_type not in _ROLES:
        raise TrainerError(f"{name}: task.type {task_type!r} is not one of chief, master, worker, "
                           f"ps, evaluator")
    if not isinstance(task_index, int) or isinstance(task_index, bool) or task_index < 0:
        raise TrainerError(f"{name}: task.index must be a non-negative integer, got {task_index!r}")
    if len(spec.get("chief", ())) > 1:
        raise TrainerError(f"{name}: cluster has {len(spec['chief'])} chiefs; exactly one is allowed")
    if spec.get("ps") and not spec.get("worker"):
        raise TrainerError(f"{name}: cluster has parameter servers but no workers to use them")
    if task_type != "evaluator":
        hosts = spec.get(task_type, ())
        if task_index >= len(hosts):
            raise TrainerError(f"{name}: task {task_type}:{task_index} is not in the cluster "
                               f"({len(hosts)} {task_type} task(s) listed)")
    return Cluster(task_type, task_index, None, spec)
