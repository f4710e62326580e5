"""The loop's step functions are exact under a multi-replica strategy.

Runs in a subprocess: two logical CPUs must be configured before TensorFlow initializes.
"""

import json
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = r"""
import json, keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from trainer import models
from trainer.loop import StepFunctions

rng = np.random.default_rng(0)
images = rng.random((8, 28, 28, 1), dtype=np.float32)
labels = rng.integers(0, 10, 8).astype(np.int32)
batches = tf.data.Dataset.from_tensor_slices((images, labels))

def one_step(strategy, optimizer):
    with strategy.scope():
        model = models.build_model("cnn", (28, 28, 1), 10, 0.0)
        opt = models.build_optimizer(optimizer, 0.1)
        opt.build(model.trainable_variables)
    model.set_weights(initial)
    steps = StepFunctions(strategy, model, opt, global_batch_size=8)
    dist = strategy.experimental_distribute_dataset(batches.batch(8).repeat())
    totals = steps.train(iter(dist), tf.constant(1, tf.int64)).numpy()
    evaluation = steps.evaluate(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((images[:7], labels[:7])).batch(4))).numpy()
    slots = [v.numpy() for v in opt.variables if len(v.shape) > 0]
    return model.get_weights(), slots, totals, evaluation, int(steps.step.numpy())

keras.utils.set_random_seed(0)
initial = models.build_model("cnn", (28, 28, 1), 10, 0.0).get_weights()
devices = [d.name for d in tf.config.list_logical_devices("CPU")]
out = {}
for optimizer in ("sgd", "adam"):
    w1, m1, t1, e1, s1 = one_step(tf.distribute.get_strategy(), optimizer)
    w2, m2, t2, e2, s2 = one_step(tf.distribute.MirroredStrategy(devices), optimizer)
    out[optimizer] = {
        "replicas": len(devices),
        "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2)),
        "slot_diff": max((float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))
                          for a, b in zip(m1, m2)), default=0.0),
        "slots": len(m1),
        "moved": max(float(np.abs(a - b).max()) for a, b in zip(w1, initial)),
        "totals": [t1.tolist(), t2.tolist()], "eval": [e1.tolist(), e2.tolist()],
        "steps": [s1, s2]}
print("RESULT " + json.dumps(out))
"""


def test_one_step_on_two_mirrored_replicas_equals_one_step_on_one():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
    assert line, result.stderr[-3000:]
    for optimizer, out in json.loads(line[0][7:]).items():
        assert out["replicas"] == 2
        assert out["moved"] > 1e-3, optimizer  # the step really trained
        # Gradients summed over replicas of a loss scaled by the global batch = one big batch.
        # (cnn without dropout: BatchNorm would legitimately differ, its statistics being per
        # replica.)
        if optimizer == "sgd":
            assert out["weight_diff"] < 1e-6
        else:
            # Adam's first step is lr * sign(g): a near-zero gradient summed in another order
            # can flip, so compare its moment slots, which are proportional to the gradients.
            assert out["slots"] > 0 and out["slot_diff"] < 1e-4
        (loss1, correct1, count1), (loss2, correct2, count2) = (t[:3] for t in out["totals"])
        assert count1 == count2 == 8
        assert out["totals"][0][3] == out["totals"][1][3] == 0  # no step skipped in fp32
        assert abs(loss1 - loss2) < 1e-3 * max(1.0, abs(loss1))
        assert out["eval"][0][2] == out["eval"][1][2] == 7  # a partial last batch is counted
        assert abs(out["eval"][0][0] - out["eval"][1][0]) < 1e-3 * max(1.0, out["eval"][0][0])
        assert out["steps"] == [1, 1]
