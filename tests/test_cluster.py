"""trainer.cluster: TF_CONFIG / CLUSTER_SPEC / CLOUD_ML_TRIAL_ID -> Cluster (pure Python, fast)."""

from __future__ import annotations

import json

import pytest

from trainer.cluster import Cluster, resolve_cluster
from trainer.errors import TrainerError

FULL = {"chief": ["c:1"], "worker": ["w0:1", "w1:1"], "ps": ["p0:1"]}
POOLS = {"workerpool0": ["c:1"], "workerpool1": ["w0:1", "w1:1"], "workerpool2": ["p0:1"],
         "workerpool3": ["e:1"]}


def tf_config(cluster, task_type, index=0, **task) -> dict:
    return {"TF_CONFIG": json.dumps({"cluster": cluster,
                                     "task": {"type": task_type, "index": index, **task}})}


def cluster_spec(pools, pool, index=0, **task) -> dict:
    return {"CLUSTER_SPEC": json.dumps({"cluster": pools, "environment": "cloud",
                                        "task": {"type": pool, "index": index, **task}})}


def error_of(environ: dict) -> str:
    with pytest.raises(TrainerError) as info:
        resolve_cluster(environ)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- single host ---------------------------------------------------------------------------------

@pytest.mark.parametrize("environ", [{}, {"TF_CONFIG": ""},
                                     {"TF_CONFIG": "  ", "CLUSTER_SPEC": ""}])
def test_no_cluster_env_is_single_host_chief(environ):
    cluster = resolve_cluster(environ)
    assert (cluster.task_type, cluster.task_index, cluster.trial) == ("chief", 0, None)
    assert cluster.is_chief
    assert not cluster.is_distributed
    assert (cluster.num_workers, cluster.num_ps) == (0, 0)


def test_chief_only_tf_config_is_not_distributed():
    cluster = resolve_cluster(tf_config({"chief": ["c:1"]}, "chief"))
    assert cluster.is_chief
    assert not cluster.is_distributed


# --- TF_CONFIG -----------------------------------------------------------------------------------

@pytest.mark.parametrize("task_type, index, is_chief", [
    ("chief", 0, True),
    ("worker", 0, False),  # a real chief exists: worker 0 must not also export
    ("worker", 1, False),
    ("ps", 0, False),
])
def test_tf_config_roles_with_chief(task_type, index, is_chief):
    cluster = resolve_cluster(tf_config(FULL, task_type, index))
    assert (cluster.task_type, cluster.task_index) == (task_type, index)
    assert (cluster.num_workers, cluster.num_ps) == (2, 1)
    assert cluster.is_chief is is_chief
    assert cluster.is_distributed
    assert cluster.spec == {"chief": ("c:1",), "worker": ("w0:1", "w1:1"), "ps": ("p0:1",)}


@pytest.mark.parametrize("index, is_chief", [(0, True), (1, False)])
def test_worker_zero_leads_when_there_is_no_chief(index, is_chief):
    cluster = resolve_cluster(tf_config({"worker": ["w0:1", "w1:1"]}, "worker", index))
    assert cluster.task_type == "worker"
    assert cluster.is_chief is is_chief
    assert cluster.is_distributed


@pytest.mark.parametrize("cluster_key", ["chief", "master"])
@pytest.mark.parametrize("task_type", ["chief", "master"])
def test_master_is_accepted_as_chief(cluster_key, task_type):
    cluster = resolve_cluster(tf_config({cluster_key: ["c:1"], "worker": ["w0:1"]}, task_type))
    assert cluster.task_type == "chief"
    assert cluster.is_chief
    assert "master" not in cluster.spec
    assert cluster.spec["chief"] == ("c:1",)


def test_worker_zero_is_not_chief_beside_a_master():
    cluster = resolve_cluster(tf_config({"master": ["c:1"], "worker": ["w0:1"]}, "worker", 0))
    assert not cluster.is_chief


def test_tf_config_evaluator_is_allowed_outside_the_cluster():
    cluster = resolve_cluster(tf_config({"chief": ["c:1"], "worker": ["w0:1"]}, "evaluator"))
    assert cluster.task_type == "evaluator"
    assert not cluster.is_chief
    assert "evaluator" not in cluster.spec


def test_tf_config_wins_over_cluster_spec():
    environ = {**tf_config(FULL, "worker", 1), **cluster_spec(POOLS, "workerpool0")}
    cluster = resolve_cluster(environ)
    assert (cluster.task_type, cluster.task_index) == ("worker", 1)


# --- CLUSTER_SPEC --------------------------------------------------------------------------------

@pytest.mark.parametrize("pool, index, role, is_chief", [
    ("workerpool0", 0, "chief", True),
    ("workerpool1", 0, "worker", False),
    ("workerpool1", 1, "worker", False),
    ("workerpool2", 0, "ps", False),
    ("workerpool3", 0, "evaluator", False),
])
def test_cluster_spec_pools_map_to_roles(pool, index, role, is_chief):
    cluster = resolve_cluster(cluster_spec(POOLS, pool, index))
    assert (cluster.task_type, cluster.task_index) == (role, index)
    assert cluster.is_chief is is_chief
    # The evaluator pool is not part of the training cluster.
    assert cluster.spec == {"chief": ("c:1",), "worker": ("w0:1", "w1:1"), "ps": ("p0:1",)}
    assert (cluster.num_workers, cluster.num_ps) == (2, 1)
    assert cluster.is_distributed


def test_single_replica_cluster_spec_is_not_distributed():
    cluster = resolve_cluster(cluster_spec({"workerpool0": ["h:1"]}, "workerpool0"))
    assert cluster.task_type == "chief"
    assert cluster.is_chief
    assert not cluster.is_distributed


# --- trial ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("environ", [
    tf_config(FULL, "chief", trial="7"),
    {"TF_CONFIG": json.dumps({"task": {"trial": "7"}})},  # trial only, no cluster
    tf_config(FULL, "chief", trial=7),
    cluster_spec(POOLS, "workerpool0", trial="7"),
    {"CLOUD_ML_TRIAL_ID": "7"},
])
def test_trial_sources(environ):
    assert resolve_cluster(environ).trial == "7"


def test_tf_config_trial_wins_over_cloud_ml_trial_id():
    environ = {**tf_config(FULL, "worker", 1, trial="3"), "CLOUD_ML_TRIAL_ID": "9"}
    cluster = resolve_cluster(environ)
    assert cluster.trial == "3"
    assert (cluster.task_type, cluster.task_index) == ("worker", 1)


@pytest.mark.parametrize("environ", [{"CLOUD_ML_TRIAL_ID": ""}, tf_config(FULL, "chief", trial="")])
def test_empty_trial_is_none(environ):
    assert resolve_cluster(environ).trial is None


def test_trial_is_kept_with_single_host():
    cluster = resolve_cluster({"CLOUD_ML_TRIAL_ID": "12"})
    assert cluster == Cluster("chief", 0, "12", {})


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("environ, name, fragment", [
    ({"TF_CONFIG": "{not json"}, "TF_CONFIG", "not valid JSON"),
    ({"CLUSTER_SPEC": '{"cluster": '}, "CLUSTER_SPEC", "not valid JSON"),
    ({"TF_CONFIG": "[1, 2]"}, "TF_CONFIG", "must be a JSON object"),
    ({"CLUSTER_SPEC": '"workerpool0"'}, "CLUSTER_SPEC", "must be a JSON object"),
    ({"TF_CONFIG": "null"}, "TF_CONFIG", "must be a JSON object"),
])
def test_unparsable_json_is_an_error(environ, name, fragment):
    message = error_of(environ)
    assert name in message and fragment in message


@pytest.mark.parametrize("environ, name, fragment", [
    (tf_config(FULL, "boss"), "TF_CONFIG", "'boss'"),
    (tf_config({**FULL, "boss": ["b:1"]}, "chief"), "TF_CONFIG", "unknown task type 'boss'"),
    (cluster_spec(POOLS, "workerpool9"), "CLUSTER_SPEC", "'workerpool9'"),
    (cluster_spec(POOLS, "chief"), "CLUSTER_SPEC", "task.type 'chief'"),
])
def test_unknown_task_type_is_an_error(environ, name, fragment):
    message = error_of(environ)
    assert name in message and fragment in message


@pytest.mark.parametrize("environ, name", [
    (tf_config(FULL, "worker", 2), "TF_CONFIG"),
    (tf_config(FULL, "chief", 1), "TF_CONFIG"),
    (tf_config({"worker": ["w0:1"]}, "ps", 0), "TF_CONFIG"),
    (cluster_spec(POOLS, "workerpool1", 2), "CLUSTER_SPEC"),
])
def test_task_index_out_of_range_is_an_error(environ, name):
    message = error_of(environ)
    assert name in message and "is not in the cluster" in message


@pytest.mark.parametrize("index", [-1, "0", 1.5, 0.0, True, None])
@pytest.mark.parametrize("make, pool, name", [(tf_config, "worker", "TF_CONFIG"),
                                              (cluster_spec, "workerpool1", "CLUSTER_SPEC")])
def test_bad_task_index_is_an_error(index, make, pool, name):
    cluster = FULL if make is tf_config else POOLS
    message = error_of(make(cluster, pool, index))
    assert name in message and "task.index must be a non-negative integer" in message


@pytest.mark.parametrize("environ, name", [
    (tf_config({"chief": ["c0:1", "c1:1"], "worker": ["w0:1"]}, "chief"), "TF_CONFIG"),
    (cluster_spec({"workerpool0": ["c0:1", "c1:1"]}, "workerpool0"), "CLUSTER_SPEC"),
])
def test_more_than_one_chief_is_an_error(environ, name):
    message = error_of(environ)
    assert name in message and "2 chiefs" in message


def test_chief_and_master_together_is_an_error():
    message = error_of(tf_config({"chief": ["c:1"], "master": ["m:1"]}, "chief"))
    assert "TF_CONFIG" in message and "'chief' and 'master'" in message


@pytest.mark.parametrize("environ, name", [
    (tf_config({"chief": ["c:1"], "ps": ["p0:1"]}, "chief"), "TF_CONFIG"),
    (cluster_spec({"workerpool0": ["c:1"], "workerpool2": ["p0:1"]}, "workerpool0"),
     "CLUSTER_SPEC"),
])
def test_ps_without_workers_is_an_error(environ, name):
    message = error_of(environ)
    assert name in message and "parameter servers but no workers" in message


def test_unknown_worker_pool_is_an_error():
    message = error_of(cluster_spec({**POOLS, "workerpool4": ["x:1"]}, "workerpool0"))
    assert "CLUSTER_SPEC" in message and "unknown worker pool 'workerpool4'" in message


@pytest.mark.parametrize("config, fragment", [
    ({"cluster": {"worker": "w0:1"}, "task": {"type": "worker", "index": 0}},
     "cluster.worker must be a list"),
    ({"cluster": {"worker": ["w0:1", 5]}, "task": {"type": "worker", "index": 0}},
     "cluster.worker must be a list"),
    ({"cluster": ["w0:1"], "task": {"type": "worker", "index": 0}}, "'cluster' must map"),
    ({"cluster": {"worker": ["w0:1"]}, "task": "worker"}, "'task' must be an object"),
])
def test_malformed_tf_config_structure_is_an_error(config, fragment):
    message = error_of({"TF_CONFIG": json.dumps(config)})
    assert "TF_CONFIG" in message and fragment in message


@pytest.mark.parametrize("environ, name", [
    (tf_config({"worker": ["w0:1"]}, ["worker"]), "TF_CONFIG"),
    (cluster_spec({"workerpool0": ["c:1"]}, ["workerpool0"]), "CLUSTER_SPEC"),
])
def test_non_string_task_type_is_an_error(environ, name):
    message = error_of(environ)
    assert name in message and "task.type" in message


# --- Reduction Server in worker pool 2 ------------------------------------------------------------

REDUCING = {"VERTEX_TRAINER_REDUCTION_SERVER": "true"}
REDUCER_POOLS = {"workerpool0": ["c:1"], "workerpool1": ["w0:1", "w1:1"],
                 "workerpool2": ["r0:1", "r1:1", "r2:1"]}


@pytest.mark.parametrize("environ", [
    cluster_spec(REDUCER_POOLS, "workerpool1", 1),
    tf_config({"chief": ["c:1"], "worker": ["w0:1", "w1:1"], "ps": ["r0:1", "r1:1", "r2:1"]},
              "worker", 1),
], ids=["CLUSTER_SPEC", "TF_CONFIG"])
def test_reduction_servers_leave_the_training_cluster(environ):
    cluster = resolve_cluster({**environ, **REDUCING})
    assert (cluster.task_type, cluster.task_index, cluster.is_chief) == ("worker", 1, False)
    assert dict(cluster.spec) == {"chief": ("c:1",), "worker": ("w0:1", "w1:1")}
    assert (cluster.num_ps, cluster.num_reduction_servers, cluster.is_distributed) == (0, 3, True)
    # The same layout without the job's word is a parameter-server cluster.
    assert resolve_cluster(environ).num_ps == 3


@pytest.mark.parametrize("environ, fragment", [
    ({**cluster_spec(REDUCER_POOLS, "workerpool2"), **REDUCING},
     "worker pool 2, which runs Vertex's reduction-server image"),
    ({**cluster_spec({"workerpool0": ["c:1"], "workerpool1": ["w:1"]}, "workerpool0"),
      **REDUCING}, "VERTEX_TRAINER_REDUCTION_SERVER is set but CLUSTER_SPEC has no worker pool 2"),
    ({**cluster_spec(REDUCER_POOLS, "workerpool0"), "VERTEX_TRAINER_REDUCTION_SERVER": "yes"},
     "VERTEX_TRAINER_REDUCTION_SERVER must be true or false, got 'yes'"),
])
def test_reduction_server_misconfigurations_are_errors(environ, fragment):
    assert fragment in error_of(environ)
