"""Benchmark the prediction server on 127.0.0.1: requests/s and p50/p99 latency.

    python scripts/benchmark_serving.py [--model-dir DIR] [--signature encoded_image]

Starts `python -m trainer.serve` on a free loopback port (the tutorial `cnn`, untrained, when no
--model-dir is given: weights do not change the cost), then for 1 and 32 instances per request
sends --requests requests (at most --seconds each) from --concurrency keep-alive connections and
prints throughput and latency. The server is always stopped at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


from trainer.cli import OneLineParser, run_cli
from trainer.errors import TrainerError

SIGNATURES = ("serving_default", "encoded_image", "tf_example")
BATCH_SIZES = (1, 32)
_WARMUP = 5
_START_TIMEOUT = 120


def instances(signature: str, images: np.ndarray) -> list:
    import tensorflow as tf

    from trainer.records import serialize_example

    if signature == "serving_default":
        return (images.astype(np.float32) / 255).tolist()
    if signature == "encoded_image":
        encoded = [tf.io.encode_png(image).numpy() for image in images]
    else:
        encoded = [serialize_example(image.tobytes(), 0, *image.shape) for image in images]
    return [{"b64": base64.b64encode(data).decode()} for data in encoded]


def tutorial_model(scratch: str) -> str:
    """A fresh export of the tutorial cnn (untrained: weights do not change the cost)."""
    from trainer import export, models

    model_dir = os.path.join(scratch, "cnn")
    start = time.perf_counter()
    export.write_saved_model(models.build_model("cnn", (28, 28, 1), 10, 0.4), model_dir,
                             (28, 28, 1))
    print(f"exported the tutorial cnn in {time.perf_counter() - start:.2f} s")
    return model_dir


def start_server(model_dir: str, *flags: str) -> tuple[subprocess.Popen, int]:
    """The server on a free 127.0.0.1 port, once it listens."""
    server = subprocess.Popen([sys.executable, "-m", "trainer.serve", "--model-dir", model_dir,
                               "--host", "127.0.0.1", "--port", "0", *flags],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    found: list[int] = []

    def read_port():
        for line in server.stdout:
            if not found and " on http://127.0.0.1:" in line:
                found.append(int(line.split(" on http://127.0.0.1:")[1].split(":")[0]))

    threading.Thread(target=read_port, daemon=True).start()
    deadline = time.monotonic() + _START_TIMEOUT
    while not found:
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise TrainerError(f"the server did not start within {_START_TIMEOUT} s "
                               f"(exit code {server.poll()})")
        time.sleep(0.1)
    return server, found[0]


@contextlib.contextmanager
def running_server(model_dir: str, *flags: str):
    """Yields (process, port) of `start_server`; always stops it."""
    server, port = start_server(model_dir, *flags)
    try:
        yield server, port
    except (OSError, http.client.HTTPException) as err:
        raise TrainerError(f"the server stopped answering ({err}); exit code "
                           f"{server.poll()}") from None
    finally:
        server.terminate()
        server.wait(timeout=30)


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
                     concurrency: int) -> argparse.ArgumentParser:
    """The flags both serving benchmarks take; `unit` is what --requests and --seconds count per."""
    p = OneLineParser(prog=prog, allow_abbrev=False,
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                      description=doc.split("\n\n")[0])
    p.add_argument("--model-dir", help="default: a fresh export of the tutorial cnn")
    p.add_argument("--requests", type=_positive, default=requests, help=f"per {unit}")
    p.add_argument("--seconds", type=_positive, default=seconds, help=f"per {unit}, at most")
    p.add_argument("--concurrency", type=_positive, default=concurrency,
                   help="client connections")
    return p


def _benchmark(args: argparse.Namespace) -> None:
    from trainer import export

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir or tutorial_model(scratch)
        serving = export.load(model_dir, "--model-dir").signatures["serving_default"]
        shape = tuple(serving.structured_input_signature[1]["image"].shape[1:])
        with running_server(model_dir, "--max-instances", "64") as (_, port):
            print(f"{args.signature}, {int(args.concurrency)} connection(s), server "
                  f"127.0.0.1:{port}")
            print(f"{'instances/request':>17} {'requests':>8} {'requests/s':>10} "
                  f"{'instances/s':>11} {'p50 ms':>8} {'p99 ms':>8}")
            rng = np.random.default_rng(0)
            for batch in BATCH_SIZES:
                images = rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
                body = json.dumps({"signature_name": args.signature,
                                   "instances": instances(args.signature, images)}).encode()
                start = time.perf_counter()
                latencies = measure(port, body, int(args.requests), args.seconds,
                                    int(args.concurrency))
                rate = len(latencies) / (time.perf_counter() - start)
                p50, p99 = np.percentile(latencies, [50, 99]) * 1000
                print(f"{batch:>17} {len(latencies):>8} {rate:>10.1f} {rate * batch:>11.1f} "
                      f"{p50:>8.2f} {p99:>8.2f}")


def run_benchmark(parser: argparse.ArgumentParser, benchmark, argv) -> int:
    """`benchmark(args)` with one-line errors for bad flags and failed runs alike."""

    def body():
        args = parser.parse_args(argv)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        benchmark(args)

    return run_cli(body)


def main(argv=None) -> int:
    parser = benchmark_parser("vertex-trainer benchmark-serving", __doc__, unit="batch size",
                              requests=300, seconds=30, concurrency=1)
    parser.add_argument("--signature", choices=SIGNATURES, default="serving_default")
    return run_benchmark(parser, _benchmark, argv)


if __name__ == "__main__":
    sys.exit(main())
