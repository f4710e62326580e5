"""Peak memory of the prediction server under a burst of worst-case requests, on 127.0.0.1.

    python scripts/benchmark_serving_memory.py [--requests 8] [--concurrency 8] [--kinds ...]

Starts `python -m trainer.serve` on a free loopback port (the tutorial `cnn`, untrained), then
for each kind of request sends --requests copies (at most --seconds per kind) from --concurrency
connections and prints the answers and the server's peak resident memory (VmHWM, which only
grows, so each row includes the rows above). The kinds, each the costliest body of its sort that
fits the server's 1.5 MB cap:

  bomb      one PNG declaring 16000 x 16000 pixels (~330 KB of base64)
  images    --max-instances PNGs each at the server's --max-image-pixels (what it accepts)
  examples  --max-instances tf.train.Examples of the largest valid size (float32 image_raw)
  floats    as many serving_default instances of long float literals as fit

The server is always stopped at the end.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import math
import struct
import sys
import tempfile
import time
import zlib


from trainer.benchmarks.serving import (benchmark_parser, cpu_name, memory_mib, run_benchmark,
                                       send, started, tutorial_model)

KINDS = ("bomb", "images", "examples", "floats")
MAX_INSTANCES = 256  # the server's default
SHAPE = (28, 28, 1)  # the tutorial cnn's input
BODY_LIMIT = 1_500_000  # the server's default --max-request-bytes
_BOMB_SIDE = 16000


def grey_png(side: int) -> bytes:
    """A side x side 8-bit grey PNG of zeros, written without ever holding its pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    compressor = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + pixels
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def body(kind: str) -> bytes:
    if kind == "bomb":
        return json.dumps({"signature_name": "encoded_image",
                           "instances": [_b64(grey_png(_BOMB_SIDE))]}).encode()
    if kind == "images":
        from trainer import serve

        side = math.isqrt(serve.default_max_image_pixels(SHAPE))
        return json.dumps({"signature_name": "encoded_image",
                           "instances": [_b64(grey_png(side))] * MAX_INSTANCES}).encode()
    if kind == "examples":
        import tensorflow as tf

        from trainer.records import LEGACY_IMAGE

        image = tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(4 * math.prod(SHAPE))]))
        record = tf.train.Example(features=tf.train.Features(
            feature={LEGACY_IMAGE: image})).SerializeToString()
        return json.dumps({"signature_name": "tf_example",
                           "instances": [_b64(record)] * MAX_INSTANCES}).encode()
    image = [[[0.123456789012]] * SHAPE[1]] * SHAPE[0]
    count = BODY_LIMIT // len(json.dumps(image)) - 1
    return json.dumps({"instances": [image] * min(count, MAX_INSTANCES)}).encode()


def _benchmark(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch, \
            started(args.model_dir or tutorial_model(scratch), (), None) as (pid, port, _):
        print(f"{cpu_name()}; server 127.0.0.1:{port}, {int(args.concurrency)} connection(s)")
        print(f"idle: RSS {memory_mib(pid)['VmRSS']:.0f} MiB")
        print(f"{'kind':>9} {'body KB':>8} {'answers':>16} {'seconds':>8} "
              f"{'peak RSS MiB':>12}")
        for kind in args.kinds:
            payload = body(kind)
            start = time.perf_counter()
            statuses = collections.Counter(
                status for status, _ in send(port, payload, int(args.requests),
                                             args.seconds, int(args.concurrency)))
            answers = ", ".join(f"{count}x{status}"
                                for status, count in sorted(statuses.items()))
            print(f"{kind:>9} {len(payload) / 1000:>8.0f} {answers:>16} "
                  f"{time.perf_counter() - start:>8.1f} "
                  f"{memory_mib(pid)['VmHWM']:>12.0f}")


def main(argv=None) -> int:
    parser = benchmark_parser("scripts/benchmark_serving_memory.py", __doc__, unit="kind",
                              requests=8, seconds=300, concurrency=8)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    return run_benchmark(parser, _benchmark, argv)


if __name__ == "__main__":
    sys.exit(main())
