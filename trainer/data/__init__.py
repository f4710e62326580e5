"""Input data: each source detected once, up front; one tf.data pipeline after parsing.

Every input is a `source.Source` (what it holds, the units to stream, how to parse one, how to
explain an error), made by its kind's module after its detector recognised it: raw-pixel
TFRecords (`raw_records`), encoded-image TFRecords (`encoded_records`), TFDS dataset folders
(`tfds`), image files listed by a JSONL/CSV manifest, found in class folders or named one by one
(`image_files`). Every TFRecord file is proven readable first (`record_guard`). `plan` lists the
kinds, picks the source for each file flag and builds the label map; `pipeline` turns any source
into batches of (float32 images in [0, 1] [B, H, W, C], int32 labels). The pure-Python parts
(`vertex_env`, `manifests`, `labels`, `text`) import no TensorFlow; nor does this package until a
TensorFlow-backed name is first used, so config parsing stays fast.
"""

import importlib

_LAZY = {
    "Source": "trainer.data.source", "Request": "trainer.data.source",
    "Terms": "trainer.data.source", "DataPlan": "trainer.data.plan",
    "inspect": "trainer.data.plan", "inspect_input": "trainer.data.plan",
    "resolve": "trainer.data.plan",
    "describe": "trainer.data.plan",
    "SkippedImages": "trainer.data.pipeline", "SkipReport": "trainer.data.pipeline",
    "make_dataset": "trainer.data.pipeline", "explain_pipeline_error": "trainer.data.pipeline",
    "find_corrupt_file": "trainer.data.tfrecords",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
