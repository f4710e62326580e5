"""Run a Vertex-AI-shaped training cluster on this machine, one process per task.

    python scripts/local_cluster.py --workers 2 --ps 1 --evaluator -- --max-steps 500 ...

starts a chief (worker pool 0), N workers (pool 1), M parameter servers (pool 2) and optionally
an evaluator (pool 3), each `python -m trainer.task <trainer flags>` with TF_CONFIG and
CLUSTER_SPEC set as Vertex sets them, on free 127.0.0.1 ports. Every output line is prefixed
with its task (`[worker-1]`). The first task to fail stops the whole cluster with its exit code;
--timeout bounds the run (exit 124). SIGINT/SIGTERM are passed on to every task, so a SIGTERM
here rehearses a Vertex preemption. With CLOUD_ML_HP_METRIC_FILE set, each task gets its own
file in a subdirectory named after it, as separate VMs would.

    python scripts/local_cluster.py --image IMAGE --volume /tmp/job:/job -- --job-dir /job ...

runs each task as a container of the training image instead (`docker run --network host`, so
the cluster's 127.0.0.1 ports are shared; TF_CONFIG and CLUSTER_SPEC passed in): the image's
answer to `gcloud ai custom-jobs local-run`, for a whole cluster. The image runs as uid 1000, so
a --volume it writes to must be writable by uid 1000 (`chown 1000 DIR`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from trainer.cli import OneLineParser, run_cli, parse_command
from trainer.config import integer, number
from trainer.containers.daemon import require_docker

_POOLS = {"chief": "workerpool0", "worker": "workerpool1", "ps": "workerpool2",
          "evaluator": "workerpool3"}
_GRACE_SECS = 30


@dataclass
class Task:
    role: str
    index: int
    process: subprocess.Popen | None = None
    container: str | None = None  # the docker container's name when the task runs in one

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"


def free_ports(count: int) -> list[int]:
    """Ports the OS says are free now (bound together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_environments(workers: int, ps: int, evaluator: bool,
                         trial: str | None = None) -> dict[str, dict[str, str]]:
    """TF_CONFIG and CLUSTER_SPEC for every task, keyed by task name, as Vertex writes them."""
    counts = {"chief": 1, "worker": workers, "ps": ps, "evaluator": int(evaluator)}
    ports = iter(free_ports(sum(counts.values())))
    hosts = {role: [f"127.0.0.1:{next(ports)}" for _ in range(n)] for role, n in counts.items()}
    training = {role: hosts[role] for role in ("chief", "worker", "ps") if hosts[role]}
    pools = {_POOLS[role]: hosts[role] for role in _POOLS if hosts[role]}
    environments = {}
    for role, count in counts.items():
        for index in range(count):
            task = {"type": role, "index": index, **({"trial": trial} if trial else {})}
            pool_task = {**task, "type": _POOLS[role]}
            environments[f"{role}-{index}"] = {
                "TF_CONFIG": json.dumps({"cluster": training, "task": task,
                                         "environment": "cloud", "job": {}}),
                "CLUSTER_SPEC": json.dumps({"cluster": pools, "task": pool_task,
                                            "environment": "cloud", "job": {}}),
            }
    return environments


def _pump(task: Task, lock: threading.Lock) -> None:
    for line in task.process.stdout:
        with lock:
            sys.stdout.write(f"[{task.name}] {line}")
            sys.stdout.flush()


def _stop(tasks: list[Task]) -> None:
    running = [t for t in tasks if t.process and t.process.poll() is None]
    for task in running:
        task.process.terminate()
    deadline = time.monotonic() + _GRACE_SECS
    for task in running:
        try:
            task.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            task.process.kill()
            task.process.wait()
            if task.container:  # killing the docker client leaves its container running
                subprocess.run(["docker", "rm", "--force", task.container],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def task_command(task: Task, trainer_args: list[str], image: str | None,
                 volumes: list[str]) -> list[str]:
    """The command line that runs `task`: a local process, or a container of `image`."""
    if not image:
        return [sys.executable, "-m", "trainer.task", *trainer_args]
    mounts = [arg for volume in volumes for arg in ("--volume", volume)]
    # `-e NAME` copies NAME from the docker client's environment, which holds the task's.
    return ["docker", "run", "--rm", "--name", task.container, "--network", "host",
            "-e", "TF_CONFIG", "-e", "CLUSTER_SPEC", "-e", "PYTHONUNBUFFERED=1", *mounts, image,
            *trainer_args]


def run_cluster(workers: int, ps: int, evaluator: bool, trainer_args: list[str],
                timeout: float, trial: str | None = None, image: str | None = None,
                volumes: tuple[str, ...] = ()) -> int:
    environments = cluster_environments(workers, ps, evaluator, trial)
    tasks = [Task(role, int(index)) for role, index in
             (name.rsplit("-", 1) for name in environments)]
    if image:
        for task in tasks:
            task.container = f"local-cluster-{os.getpid()}-{task.name}"
    lock = threading.Lock()
    pumps = []
    forwarded = []

    def forward(signum, frame):
        forwarded.append(signum)
        for t in tasks:
            if t.process and t.process.poll() is None:
                t.process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        metric_file = os.environ.get("CLOUD_ML_HP_METRIC_FILE")
        for task in tasks:
            env = {**os.environ, **environments[task.name], "PYTHONUNBUFFERED": "1"}
            if metric_file:
                # One file per task, as on separate VMs; Vertex reads the chief's.
                env["CLOUD_ML_HP_METRIC_FILE"] = os.path.join(
                    os.path.dirname(metric_file), task.name, os.path.basename(metric_file))
            task.process = subprocess.Popen(
                task_command(task, trainer_args, image, list(volumes)), env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
            pumps.append(threading.Thread(target=_pump, args=(task, lock), daemon=True))
            pumps[-1].start()
        return _supervise(tasks, ps > 0, timeout, forwarded)
    finally:
        _stop(tasks)
        for pump in pumps:
            pump.join(timeout=5)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _supervise(tasks: list[Task], serving: bool, timeout: float, forwarded: list) -> int:
    """Waits for the cluster; returns the exit code for the whole run."""
    deadline = time.monotonic() + timeout
    chief = next(t for t in tasks if t.role == "chief")
    # With parameter servers, workers and ps serve until stopped: the chief's end is the end.
    must_finish = [t for t in tasks if not (serving and t.role in ("worker", "ps"))]
    while time.monotonic() < deadline:
        if forwarded:  # we passed a signal on: the chief's answer is the cluster's
            if chief.process.poll() is not None:
                return _exit_code(chief.process.returncode)
        else:
            for task in tasks:
                if task.process.poll() not in (None, 0):
                    print(f"[local_cluster] {task.name} exited with code "
                          f"{task.process.returncode}; stopping the cluster", flush=True)
                    return _exit_code(task.process.returncode)
            if all(t.process.poll() == 0 for t in must_finish):
                print(f"[local_cluster] done; stopping {len(tasks) - len(must_finish)} serving "
                      "task(s)" if serving else "[local_cluster] done", flush=True)
                return 0
        time.sleep(0.2)
    print(f"[local_cluster] --timeout {timeout:g} s reached; stopping the cluster", flush=True)
    return 124


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode  # killed by signal N -> 128 + N


def main(argv=None) -> int:
    return run_cli(lambda: _cluster(argv))


def _cluster(argv) -> int:
    p = OneLineParser(prog="vertex-trainer cluster", description=__doc__.split("\n\n")[0],
                      allow_abbrev=False, usage="%(prog)s [options] -- TRAINER_FLAGS...")
    p.add_argument("--workers", type=integer, default=1, help="worker pool 1 replicas")
    p.add_argument("--ps", type=integer, default=0, help="parameter servers (worker pool 2)")
    p.add_argument("--evaluator", action="store_true", help="add an evaluator (worker pool 3)")
    p.add_argument("--trial", help="a tuning trial id to put in task.trial")
    p.add_argument("--timeout", type=number, default=3600, help="seconds for the whole run")
    p.add_argument("--image", help="run each task as a container of this training image")
    p.add_argument("--volume", action="append", default=[], metavar="HOST:CONTAINER[:ro]",
                   help="with --image: a directory for every task's container (repeatable)")
    args, trainer_args = parse_command(p, argv)
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    if args.ps < 0:
        p.error(f"--ps must be >= 0, got {args.ps}")
    if args.timeout <= 0:
        p.error(f"--timeout must be positive, got {args.timeout:g}")
    if args.ps and not args.workers:
        p.error("--ps needs at least one worker")
    if args.volume and not args.image:
        p.error("--volume needs --image: local processes already see this machine's files")
    if args.image:
        require_docker("run the tasks as processes of this Python (drop --image)")
    return run_cluster(args.workers, args.ps, args.evaluator, trainer_args, args.timeout,
                       args.trial, args.image, tuple(args.volume))


if __name__ == "__main__":
    sys.exit(main())
