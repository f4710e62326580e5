"""Prediction servers started by tests on 127.0.0.1, and a plain HTTP client for them."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time

from tests.conftest import REPO
from trainer import serve


@contextlib.contextmanager
def server_thread(model_dir: str, **options):
    """`build_app` for `model_dir` served by Uvicorn in a thread (`runtime` auto unless given);
    yields the port; always stops."""
    import uvicorn

    settings = {"model_name": "model", "predict_route": "/predict", "health_route": "/health",
                "max_request_bytes": serve.VERTEX_MAX_REQUEST_BYTES, "max_instances": 256,
                "runtime": "auto", "batch_max_size": 32, **options}
    batch_max_size = settings.pop("batch_max_size")
    model = serve.load_model(model_dir, settings.pop("runtime"), batch_max_size)
    model.warm_up()
    predictor = serve.Predictor(model, settings.pop("max_instances"),
                                settings.pop("max_image_pixels", None),
                                batch_max_size=batch_max_size)
    sock = serve.listen("127.0.0.1", 0)
    # log_config=None: Uvicorn's own config would bind handlers to pytest's captured streams.
    server = uvicorn.Server(uvicorn.Config(serve.build_app(predictor, **settings),
                                           log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        predictor.close()


@contextlib.contextmanager
def server_process(*args: str, env: dict | None = None, timeout: float = 120):
    """`python -m trainer.serve ARGS` (port from `--port 0` or $AIP_HTTP_PORT=0); yields
    (process, port) once it listens; always stops it."""
    process = subprocess.Popen([sys.executable, "-m", "trainer.serve", *args], cwd=REPO,
                               env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()

    def read_stdout():
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if not line:
                raise AssertionError(f"the server exited with {process.wait()}: "
                                     f"{process.stderr.read()[-2000:]}")
            if " on http://127.0.0.1:" in line:
                port = int(line.split(" on http://127.0.0.1:")[1].split(":")[0])
                break
        yield process, port
    finally:
        process.kill()
        process.wait()
        reader.join(timeout=10)
        process.stdout.close()
        process.stderr.close()


def request(port: int, method: str, path: str, body=None, headers: dict | None = None,
            timeout: float = 60) -> tuple[int, dict]:
    """(status, decoded JSON response); `body` is JSON-encoded unless bytes or an iterator."""
    if body is not None and not isinstance(body, bytes) and not hasattr(body, "__next__"):
        body = json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.connect()
        # Headers and body go in two writes: Nagle's algorithm would hold the second ~40 ms.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.request(method, path, body=body, headers=headers or {},
                           encode_chunked=hasattr(body, "__next__"))
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()
