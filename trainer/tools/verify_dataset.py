"""List a TFRecord dataset's shards and prove every record reads as the trainer will read it.

    python scripts/verify_dataset.py 'gs://BUCKET/mnist/train-*' [--image-height 28 ...]

Inspects the files as the trainer does (each file's framing and checksums walked to its end by
the same guard, so a damaged file is named with the byte where it breaks), prints each shard
with its size and record count, then streams the whole dataset through the trainer's own input
pipeline (the same parsing and checks as training) and reports records/s: what the data
location delivers with the trainer's interleave settings. Local paths, /gcs/ and gs:// all work.
Exits 1 with a one-line error at the first bad file or record.
"""

from __future__ import annotations

import sys
import time


from trainer.cli import OneLineParser, run_cli
from trainer.errors import TrainerError


def verify(patterns: tuple[str, ...], image_shape: tuple[int, int, int], num_classes: int,
           batch_size: int = 256) -> dict:
    """Per-shard (path, bytes, records) rows, totals and pipeline records/s; raises on bad data."""
    import tensorflow as tf

    from trainer import data

    source = data.inspect_input(patterns, "PATTERNS", image_shape, num_classes)
    rows = [(path, tf.io.gfile.stat(path).length, count)
            for path, count in zip(source.files, source.counts)]
    start = time.perf_counter()
    seen = 0
    try:
        for _, labels in data.make_dataset(source, batch_size=batch_size, training=False):
            seen += int(labels.shape[0])
    except (tf.errors.OpError, UnicodeDecodeError) as err:
        raise data.explain_pipeline_error(err, source) or err
    seconds = time.perf_counter() - start
    return {"rows": rows, "records": seen, "bytes": sum(r[1] for r in rows),
            "seconds": seconds, "records_per_sec": seen / seconds if seconds else float("inf")}


def main(argv=None) -> int:
    return run_cli(lambda: _verify(argv))


def _verify(argv) -> None:
    p = OneLineParser(prog="vertex-trainer verify", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("patterns", help="comma-separated TFRecord globs")
    p.add_argument("--image-height", type=int, default=28)
    p.add_argument("--image-width", type=int, default=28)
    p.add_argument("--image-channels", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    args = p.parse_args(argv)
    shape = (args.image_height, args.image_width, args.image_channels)
    patterns = tuple(x.strip() for x in args.patterns.split(",") if x.strip())
    try:
        report = verify(patterns, shape, args.num_classes)
    except TrainerError as err:
        raise TrainerError(str(err).replace("PATTERNS", "patterns", 1)) from None
    width = max(len(path) for path, _, _ in report["rows"])
    print(f"{'shard':<{width}}  {'bytes':>13}  {'records':>9}")
    for path, size, count in report["rows"]:
        print(f"{path:<{width}}  {size:>13,}  {count:>9,}")
    print(f"total: {len(report['rows'])} shard(s), {report['records']:,} records, "
          f"{report['bytes'] / 1e6:,.1f} MB; every record parsed as {'x'.join(map(str, shape))} "
          f"with labels in [0, {args.num_classes})")
    print(f"input pipeline: {report['records']:,} records in {report['seconds']:.2f} s "
          f"({report['records_per_sec']:,.0f} records/s)")

if __name__ == "__main__":
    sys.exit(main())
