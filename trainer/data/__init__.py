"""Input data: each source detected once, up front; one tf.data pipeline after parsing.

Sources (one module each, the same shape: inspected up front, then `units` to stream and a parse
step): raw-pixel TFRecords (`raw_records`), encoded-image TFRecords (`encoded_records`), image
files listed by a JSONL/CSV manifest or a class-folder tree (`image_files`). `plan` picks the
source for each file flag and builds the label map; `pipeline` turns any source into batches of
(float32 images in [0, 1] [B, H, W, C], int32 labels). The pure-Python parts (`vertex_env`,
`manifests`, `labels`) import no TensorFlow; nor does this package until a TensorFlow-backed
name is first used, so config parsing stays fast.
"""

import importlib

_LAZY = {
    "InputSource": "trainer.data.plan", "DataPlan": "trainer.data.plan",
    "inspect_input": "trainer.data.plan", "resolve": "trainer.data.plan",
    "describe": "trainer.data.plan", "save_label_map": "trainer.data.plan",
    "SkippedImages": "trainer.data.pipeline", "SkipReport": "trainer.data.pipeline",
    "make_dataset": "trainer.data.pipeline", "explain_pipeline_error": "trainer.data.pipeline",
    "find_corrupt_file": "trainer.data.tfrecords",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
