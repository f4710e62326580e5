"""Real multi-process clusters on 127.0.0.1, launched as Vertex would lay them out."""

import json
import os
import re
import signal
import subprocess
import sys
import time


from trainer.tools import local_cluster
from tests.conftest import FP32, REPO
from trainer.cluster import resolve_cluster


def test_cluster_environments_are_what_vertex_sets():
    envs = local_cluster.cluster_environments(workers=2, ps=1, evaluator=True, trial="4")
    assert sorted(envs) == ["chief-0", "evaluator-0", "ps-0", "worker-0", "worker-1"]
    tf_config = json.loads(envs["worker-1"]["TF_CONFIG"])
    assert sorted(tf_config["cluster"]) == ["chief", "ps", "worker"]  # never the evaluator
    assert tf_config["task"] == {"type": "worker", "index": 1, "trial": "4"}
    spec = json.loads(envs["ps-0"]["CLUSTER_SPEC"])
    assert sorted(spec["cluster"]) == ["workerpool0", "workerpool1", "workerpool2", "workerpool3"]
    assert spec["task"]["type"] == "workerpool2"
    hosts = [h for hs in spec["cluster"].values() for h in hs]
    assert len(set(hosts)) == 5 and all(h.startswith("127.0.0.1:") for h in hosts)
    for name, env in envs.items():
        for variable in ("TF_CONFIG", "CLUSTER_SPEC"):
            cluster = resolve_cluster({variable: env[variable]})
            assert f"{cluster.task_type}-{cluster.task_index}" == name
            assert cluster.trial == "4"
            assert "evaluator" not in cluster.spec  # side-cars: not in the training cluster
            assert (cluster.num_workers, cluster.num_ps) == (2, 1)


def launch(dataset, tmp_path, cluster_flags, *trainer_flags, timeout=150):
    train_files, eval_files = dataset
    env = {**os.environ, "CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "hp" / "output.metrics")}
    command = [sys.executable, "-m", "trainer.tools.local_cluster", *cluster_flags, "--timeout",
               str(timeout), "--", "--train-files", train_files, "--eval-files", eval_files,
               "--job-dir", str(tmp_path / "job"), "--model", "dnn", "--batch-size", "50",
               "--log-every-steps", "10", *FP32, *trainer_flags]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout + 60)


def lines(result, task, pattern):
    return [l for l in result.stdout.splitlines()
            if l.startswith(f"[{task}] ") and re.search(pattern, l)]


def test_chief_and_worker_train_in_sync_and_only_the_chief_writes(dataset, tmp_path):
    # 2,000 records in global batches of 50: both resolve the epoch to the same 40 steps.
    result = launch(dataset, tmp_path, ["--workers", "1"], "--epochs", "1",
                    "--eval-every-epochs", "0.5")
    assert result.returncode == 0, result.stdout[-3000:]
    assert lines(result, "chief-0", "strategy multi_worker_mirrored: 2 replica")
    digests = {task: re.search(r"weights (\w+)", lines(result, task, "done at step 40")[0])[1]
               for task in ("chief-0", "worker-0")}
    assert digests["chief-0"] == digests["worker-0"]
    assert lines(result, "worker-0", r"eval at step 40: .*\(500 examples")  # sharded, summed
    assert len(list((tmp_path / "job" / "export").iterdir())) == 1
    reports = (tmp_path / "hp" / "chief-0" / "output.metrics").read_text().splitlines()
    assert [json.loads(r)["global_step"] for r in reports] == ["20", "40"]
    assert not (tmp_path / "hp" / "worker-0").exists()
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == [
        "checkpoints", "export", "logs", "results"]


def test_parameter_servers_hold_the_variables_and_an_evaluator_follows(dataset, tmp_path):
    result = launch(dataset, tmp_path, ["--workers", "2", "--ps", "1", "--evaluator"],
                    "--epochs", "1.5", "--eval-every-epochs", "0.75")  # 60 steps, as evaluated
    assert result.returncode == 0, result.stdout[-3000:]
    assert lines(result, "chief-0", r"variables on /job:ps/")
    assert lines(result, "chief-0", "done at step 60")
    assert len(list((tmp_path / "job" / "export").iterdir())) == 1
    assert lines(result, "evaluator-0", "eval at step 60")
    assert lines(result, "evaluator-0", "done at step 60")
    assert list((tmp_path / "job" / "logs" / "evaluator").glob("events.out.tfevents.*"))
    for task in ("worker-0", "worker-1", "ps-0"):
        assert lines(result, task, "serving the parameter-server cluster")


def test_a_failing_task_stops_the_whole_cluster(dataset, tmp_path):
    result = launch(dataset, tmp_path, ["--workers", "1"], "--max-steps", "40",
                    "--model", "resnet")
    assert result.returncode == 2
    assert "exited with code 2; stopping the cluster" in result.stdout


def start_task(dataset, job_dir, *flags, env=None):
    train_files, eval_files = dataset
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.task", "--train-files", train_files, "--eval-files",
         eval_files, "--job-dir", str(job_dir), "--model", "cnn", "--batch-size", "32",
         "--log-every-steps", "10", *FP32, *flags], cwd=REPO, env={**os.environ, **(env or {}),
                                                             "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process, pattern, timeout=120):
    deadline = time.monotonic() + timeout
    seen = []
    for line in process.stdout:
        seen.append(line)
        if re.search(pattern, line):
            return line
        assert time.monotonic() < deadline, "".join(seen[-20:])
    raise AssertionError(f"{pattern!r} never printed: {''.join(seen[-20:])}")


def test_sigterm_saves_at_the_next_boundary_and_the_rerun_resumes(dataset, tmp_path):
    flags = ["--max-steps", "200", "--eval-every-steps", "200", "--checkpoint-every-steps", "1000"]
    first = start_task(dataset, tmp_path, *flags)
    try:
        signalled_after = int(re.search(r"step (\d+)/", wait_for_line(first, r"step 30/"))[1])
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 143, err[-2000:]
    saved = int(re.search(r"stopped by SIGTERM at step (\d+)", err)[1])
    assert signalled_after <= saved <= signalled_after + 20  # at most one interval of lost work
    assert (tmp_path / "checkpoints" / f"ckpt-{saved}.index").exists()
    assert "Traceback" not in err

    second = start_task(dataset, tmp_path, *flags)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-2000:]
    assert f"at step {saved}" in out and "done at step 200" in out


def test_a_killed_worker_fails_the_chief_quickly_with_one_line(dataset, tmp_path):
    ports = local_cluster.free_ports(2)
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]}
    processes = {
        role: start_task(dataset, tmp_path, "--max-steps", "5000", env={"TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": role, "index": 0}})})
        for role in ("chief", "worker")}
    try:
        wait_for_line(processes["chief"], r"step 20/")
        processes["worker"].kill()
        _, err = processes["chief"].communicate(timeout=120)
    finally:
        for process in processes.values():
            process.kill()
            process.wait()
    assert processes["chief"].returncode == 1, err[-3000:]
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert "lost contact with task /job:worker/replica:0/task:0" in errors[0]
    assert "Traceback" not in err


def test_sigterm_to_the_chief_stops_every_replica_at_the_same_step(dataset, tmp_path):
    ports = local_cluster.free_ports(2)
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]}

    def start_both():
        return {role: start_task(dataset, tmp_path, "--max-steps", "100", "--eval-every-steps",
                                 "100", "--checkpoint-every-steps", "1000", env={
                                     "TF_CONFIG": json.dumps({"cluster": cluster, "task": {
                                         "type": role, "index": 0}})})
                for role in ("chief", "worker")}

    processes = start_both()
    try:
        wait_for_line(processes["chief"], r"step 20/")
        processes["chief"].send_signal(signal.SIGTERM)  # the worker is not told
        errs = {role: p.communicate(timeout=120)[1] for role, p in processes.items()}
    finally:
        for process in processes.values():
            process.kill()
    assert {p.returncode for p in processes.values()} == {143}, errs["worker"][-2000:]
    steps = {int(re.search(r"stopped by SIGTERM at step (\d+)", e)[1]) for e in errs.values()}
    assert len(steps) == 1
    saved = steps.pop()
    assert (tmp_path / "checkpoints" / f"ckpt-{saved}.index").exists()

    processes = start_both()
    try:
        outs = {role: p.communicate(timeout=300)[0] for role, p in processes.items()}
    finally:
        for process in processes.values():
            process.kill()
    assert all(p.returncode == 0 for p in processes.values())
    assert all(f"at step {saved}" in out and "done at step 100" in out for out in outs.values())
