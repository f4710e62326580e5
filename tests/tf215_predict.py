"""Runs SavedModel signatures on given inputs under whatever TensorFlow runs it (2.15 or 2.21).

    python tests/tf215_predict.py CASES.json OUT_DIR

CASES.json: a list of {"model": dir, "signature": name, "input": name, and either "npy": path
(a numeric batch) or "b64": [...] (a batch of byte strings)}. For case i it writes
OUT_DIR/<i>-eager.npz (tf.saved_model.load, as Python clients load it) and OUT_DIR/<i>-
session.npz (the TF1 session loader: tag `serve`, signature_def tensor names, as TF Serving in
Vertex's prebuilt image runs it), holding every output plus `tf_version`. It imports nothing
but TensorFlow and numpy, so it runs in the bare TF 2.15 environment.
"""

import base64
import json
import os
import sys

import numpy as np
import tensorflow as tf


def batch(case):
    if "npy" in case:
        return np.load(case["npy"])
    return np.array([base64.b64decode(value) for value in case["b64"]], dtype=object)


def save(path, outputs):
    arrays = {name: (np.array([v.decode() for v in value]) if value.dtype == object else value)
              for name, value in outputs.items()}
    np.savez(path, tf_version=np.array(tf.__version__), **arrays)


def main(cases_path, out_dir):
    with open(cases_path) as f:
        cases = json.load(f)
    loaded = {}
    for index, case in enumerate(cases):
        if case["model"] not in loaded:
            loaded[case["model"]] = tf.saved_model.load(case["model"])
        model = loaded[case["model"]]
        outputs = model.signatures[case["signature"]](**{case["input"]: tf.constant(batch(case))})
        save(os.path.join(out_dir, f"{index}-eager.npz"),
             {name: value.numpy() for name, value in outputs.items()})
    for model_dir in loaded:
        with tf.compat.v1.Session(graph=tf.Graph()) as session:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], model_dir)
            for index, case in enumerate(cases):
                if case["model"] != model_dir:
                    continue
                signature = meta_graph.signature_def[case["signature"]]
                outputs = session.run(
                    {name: info.name for name, info in signature.outputs.items()},
                    {signature.inputs[case["input"]].name: batch(case)})
                save(os.path.join(out_dir, f"{index}-session.npz"), outputs)


if __name__ == "__main__":
    main(*sys.argv[1:])
