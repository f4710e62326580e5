"""Benchmark the prediction server: the full-TensorFlow server against the slim one, same export.

    vertex-trainer benchmark-serving [--containers] [--rounds 3] [--model-dir DIR]

In one run, for each server: its image size (with --containers), cold start (process or
`docker run` to the first healthy /health), resident memory after start and at its peak, and
requests/s with p50/p99 latency at 1, 8 and 32 concurrent keep-alive clients for three bodies:
one 28x28 PNG per request (`encoded_image`), 32 PNGs per request, and one float instance
(`serving_default`). "old" is the server as it was before batching and LiteRT: TensorFlow's
signature calls, one request per model call (`--runtime tensorflow --batch-max-size 1`, in the
full-TensorFlow image); "new" is the default (LiteRT, batching; the slim image). Rounds
alternate old and new on this shared machine; the tables give medians over rounds and the ratio.

The export is the tutorial `cnn` (untrained: weights do not change the cost) with its LiteRT
conversion stored beside it, unless --model-dir names one. Servers and containers listen on
127.0.0.1 only and are always stopped. Without --containers the servers run as processes of this
Python (which then needs TensorFlow and LiteRT).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from trainer.cli import OneLineParser, run_cli
from trainer.errors import TrainerError

CLIENTS = (1, 8, 32)
BODIES = ("png", "png32", "float")
SERVERS = {"old": ("--runtime", "tensorflow", "--batch-max-size", "1"), "new": ()}
SIZE = (28, 28, 1)
_WARMUP = 1
_START_TIMEOUT = 180


def bodies(shape=SIZE) -> dict[str, bytes]:
    """The request bodies measured: one PNG, 32 PNGs, one float instance."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, *shape), dtype=np.uint8)

    def png(image):
        out = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out, "PNG")
        return {"b64": base64.b64encode(out.getvalue()).decode()}

    encoded = [png(image) for image in pixels]
    return {
        "png": json.dumps({"signature_name": "encoded_image", "instances": encoded[:1]}).encode(),
        "png32": json.dumps({"signature_name": "encoded_image", "instances": encoded}).encode(),
        "float": json.dumps({"instances": (pixels[:1] / 255).tolist()}).encode(),
    }


def tutorial_model(scratch: str) -> str:
    """A fresh export of the tutorial cnn (untrained: weights do not change the cost), with its
    LiteRT conversion stored beside it."""
    from trainer import export, models
    from trainer.serving import litert

    model_dir = os.path.join(scratch, "cnn")
    start = time.perf_counter()
    export.write_saved_model(models.build_model("cnn", SIZE, 10, 0.4), model_dir, SIZE)
    litert.write_beside(model_dir)
    print(f"exported the tutorial cnn and its LiteRT conversion in "
          f"{time.perf_counter() - start:.2f} s")
    return model_dir


def send(port: int, body: bytes, requests: int, seconds: float, concurrency: int, *,
         warmup: int = 0) -> list[tuple[int, float]]:
    """(HTTP status, seconds) of each answer to up to `requests` POSTs of `body` to /predict
    sent within `seconds` from `concurrency` keep-alive connections, each of which first sends
    `warmup` requests that are not counted."""
    answers: list[tuple[int, float]] = []
    failures: list[Exception] = []
    sent = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def post(connection: http.client.HTTPConnection) -> int:
        connection.request("POST", "/predict", body)
        response = connection.getresponse()
        response.read()
        return response.status

    def client():
        nonlocal sent
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=seconds + 60)
        try:
            connection.connect()
            # http.client sends headers and body in two writes: Nagle's algorithm would hold
            # the body until the server's delayed ACK.
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(warmup):
                post(connection)
            while time.monotonic() < deadline:
                with lock:
                    if sent >= requests or failures:
                        return
                    sent += 1
                start = time.perf_counter()
                status = post(connection)
                elapsed = time.perf_counter() - start
                with lock:
                    answers.append((status, elapsed))
        except (OSError, http.client.HTTPException) as err:
            # Raised again in the caller's thread, where `running_server` names the cause.
            with lock:
                failures.append(err)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return answers


def measure(port: int, body: bytes, requests: int, seconds: float,
            concurrency: int) -> list[float]:
    """Latencies (s) of up to `requests` requests sent within `seconds`."""
    answers = send(port, body, requests, seconds, concurrency, warmup=_WARMUP)
    failed = [status for status, _ in answers if status != 200]
    if failed:
        raise TrainerError(f"the server answered HTTP {failed[0]} to {len(failed)} of "
                           f"{len(answers)} requests")
    return [elapsed for _, elapsed in answers]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def benchmark_parser(prog: str, doc: str, *, unit: str, requests: int, seconds: float,
                     concurrency: int | None = None) -> argparse.ArgumentParser:
    """The flags both serving benchmarks take; `unit` is what --requests and --seconds count per."""
    p = OneLineParser(prog=prog, allow_abbrev=False,
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                      description=doc.split("\n\n")[0])
    p.add_argument("--model-dir", help="default: a fresh export of the tutorial cnn")
    p.add_argument("--requests", type=_positive, default=requests, help=f"per {unit}")
    p.add_argument("--seconds", type=_positive, default=seconds, help=f"per {unit}, at most")
    if concurrency is not None:
        p.add_argument("--concurrency", type=_positive, default=concurrency,
                       help="client connections")
    return p


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0]} x {len(names)}" if names else "unknown CPU"


def _healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def started(model_dir: str, flags: tuple[str, ...], image: str | None):
    """(pid, port, seconds from start to healthy) of a server process or container; always
    stopped."""
    port = _free_port()
    name = f"vt-benchmark-{os.getpid()}-{port}"
    begin = time.perf_counter()
    if image:
        command = ["docker", "run", "--detach", "--rm", "--name", name, "--network", "host",
                   "--volume", f"{os.path.abspath(model_dir)}:/model:ro",
                   "-e", f"AIP_HTTP_PORT={port}", "-e", "AIP_STORAGE_URI=/model", image,
                   "--host", "127.0.0.1", *flags]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise TrainerError(f"docker run {image} failed: {done.stderr.strip()[-300:]}")
        process = None
    else:
        process = subprocess.Popen([sys.executable, "-m", "trainer.serve", "--model-dir",
                                    model_dir, "--port", str(port), *flags],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _healthy(port):
            if process is not None and process.poll() is not None:
                raise TrainerError(f"the server exited with {process.returncode}: "
                                   f"{process.stderr.read().decode()[-300:]}")
            if time.monotonic() > deadline:
                raise TrainerError(f"the server was not healthy within {_START_TIMEOUT} s")
            time.sleep(0.01)
        seconds = time.perf_counter() - begin
        if image:
            pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", name],
                                     capture_output=True, text=True).stdout)
        else:
            pid = process.pid
        yield pid, port, seconds
    finally:
        if image:
            subprocess.run(["docker", "rm", "--force", name], capture_output=True)
        else:
            process.terminate()
            process.wait(timeout=30)


def _round(model_dir, flags, image, payloads, requests, seconds) -> dict:
    """One server's measurements: start, memory, and every (body, clients) burst."""
    result = {}
    with started(model_dir, flags, image) as (pid, port, start_seconds):
        result["cold start s"] = start_seconds
        result["RSS MiB"] = memory_mib(pid)["VmRSS"]
        for kind, payload in payloads.items():
            for clients in CLIENTS:
                began = time.perf_counter()
                latencies = measure(port, payload, requests, seconds, clients)
                result[kind, clients] = (len(latencies) / (time.perf_counter() - began),
                                         *np.percentile(latencies, [50, 99]) * 1000)
        result["peak MiB"] = memory_mib(pid)["VmHWM"]
    return result


def _image_mib(image: str) -> float:
    done = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image],
                          capture_output=True, text=True)
    if done.returncode:
        raise TrainerError(f"no image {image} ({done.stderr.strip()[-200:]})")
    return int(done.stdout) / 2**20


def _build_images() -> dict[str, str]:
    """The slim serving image and the full-TensorFlow one, built from this package."""
    from trainer.containers.base_image import ensure_base_image, run_step
    from trainer.containers.images import build_command, build_context

    base = ensure_base_image(log=print)
    images = {"old": "vertex-trainer/serving:benchmark-full-tf",
              "new": "vertex-trainer/serving:benchmark-slim"}
    with tempfile.TemporaryDirectory() as scratch:
        context = build_context(Path(scratch))
        for server, extra in (("old", {"TENSORFLOW": "tensorflow==2.21.0"}), ("new", {})):
            start = time.perf_counter()
            run_step(f"build of the {server} serving image",
                     build_command("serving", images[server], context,
                                   {"BASE_IMAGE": base, **extra}))
            print(f"built {images[server]} in {time.perf_counter() - start:.0f} s")
    return images


def _median(rounds: list[dict], key) -> float | tuple:
    values = [r[key] for r in rounds]
    if isinstance(values[0], tuple):
        return tuple(statistics.median(v[i] for v in values) for i in range(len(values[0])))
    return statistics.median(values)


def _report(results: dict[str, list[dict]], images: dict[str, str] | None,
            training_image: str | None) -> None:
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"\n{cpu_name()}; load average {load}; medians of {len(results['old'])} "
          "alternating round(s)")
    print(f"{'server':<6} {'image MiB':>9} {'cold start s':>12} {'RSS MiB':>8} {'peak MiB':>9}")
    for server, rounds in results.items():
        size = f"{_image_mib(images[server]):.0f}" if images else "-"
        print(f"{server:<6} {size:>9} {_median(rounds, 'cold start s'):>12.2f} "
              f"{_median(rounds, 'RSS MiB'):>8.0f} {_median(rounds, 'peak MiB'):>9.0f}")
    if training_image:
        print(f"training image {training_image}: {_image_mib(training_image):.0f} MiB")
    print(f"\n{'body':<6} {'clients':>7} {'old req/s':>9} {'new req/s':>9} {'ratio':>6} "
          f"{'old p50':>8} {'new p50':>8} {'old p99':>8} {'new p99':>8}  (ms)")
    for kind in BODIES:
        for clients in CLIENTS:
            old = _median(results["old"], (kind, clients))
            new = _median(results["new"], (kind, clients))
            print(f"{kind:<6} {clients:>7} {old[0]:>9.1f} {new[0]:>9.1f} {new[0] / old[0]:>6.2f} "
                  f"{old[1]:>8.2f} {new[1]:>8.2f} {old[2]:>8.2f} {new[2]:>8.2f}")


def _benchmark(args: argparse.Namespace) -> None:
    images = None
    if args.containers:
        from trainer.containers.daemon import require_docker

        require_docker("drop --containers")
        images = ({"old": args.old_image, "new": args.new_image}
                  if args.old_image and args.new_image else _build_images())
    payloads = bodies()
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir or tutorial_model(scratch)
        if images:
            os.chmod(scratch, 0o755)  # the containers' uid 1000 reads the export
            for root, dirs, names in os.walk(model_dir):
                for name in dirs + names:
                    os.chmod(os.path.join(root, name), 0o755)
        results: dict[str, list[dict]] = {"old": [], "new": []}
        for number in range(int(args.rounds)):
            order = ("old", "new") if number % 2 == 0 else ("new", "old")
            for server in order:
                print(f"round {number + 1}: {server} server", flush=True)
                flags = tuple(args.old_flags.split()) if server == "old" else SERVERS["new"]
                results[server].append(_round(model_dir, flags,
                                              images and images[server], payloads,
                                              int(args.requests), args.seconds))
    _report(results, images, args.training_image)


def run_benchmark(parser: argparse.ArgumentParser, benchmark, argv) -> int:
    """`benchmark(args)` with one-line errors for bad flags and failed runs alike."""

    def body():
        args = parser.parse_args(argv)
        benchmark(args)

    return run_cli(body)


def main(argv=None) -> int:
    parser = benchmark_parser("vertex-trainer benchmark-serving", __doc__, unit="burst",
                              requests=200, seconds=20)
    parser.add_argument("--rounds", type=_positive, default=3,
                        help="alternating old/new rounds")
    parser.add_argument("--containers", action="store_true",
                        help="run the servers as containers (docker, host network) and report "
                             "image sizes; builds both images unless --old-image/--new-image")
    parser.add_argument("--old-image", help="the full-TensorFlow serving image")
    parser.add_argument("--new-image", help="the slim serving image")
    parser.add_argument("--training-image", help="also report this training image's size")
    parser.add_argument("--old-flags", default=" ".join(SERVERS["old"]),
                        help="the old server's flags ('' for an image of the server as it was, "
                             "which knows none of them)")
    return run_benchmark(parser, _benchmark, argv)


if __name__ == "__main__":
    sys.exit(main())
