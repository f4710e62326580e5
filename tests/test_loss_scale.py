"""fp16 dynamic loss scaling in the loop: overflowing steps are skipped (on every replica alike),
counted, and the scale survives a checkpoint resume.

Overflow is injected the way it happens in practice, by a scale too large for float16
gradients (single replica), or by one replica's batch overflowing float16 (two replicas).
"""

import json
import logging
import math
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from trainer.tools import local_cluster
from tests.conftest import REPO
from tests.test_training import scalars, train
from trainer import distribute, loss_scale
from trainer.precision import DeviceFacts

# Two replicas, one of which overflows at step 1: `mirrored` (two logical CPUs, one process) or
# `mwms` (one replica per process, TF_CONFIG given). Prints what each local replica holds.
REPLICAS = r"""
import json, sys
import keras, numpy as np, tensorflow as tf
mode = sys.argv[1]
if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    cpus = tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy([d.name for d in cpus])
else:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
from trainer import models
from trainer.loop import StepFunctions
from trainer.loss_scale import DynamicLossScale

rng = np.random.default_rng(0)
clean = rng.random((4, 28, 28, 1), dtype=np.float32)
labels = rng.integers(0, 10, 4).astype(np.int32)
poisoned = clean + 1e5  # beyond float16's range: this replica's gradients are NaN
task = strategy.cluster_resolver.task_id if mode == "mwms" else 0
# Batches in the order the replicas take them: step 1 poisons the last replica's batch only.
order = {"mirrored": [clean, poisoned, clean, clean],
         "mwms": [[clean, clean], [poisoned, clean]][task]}[mode]
batches = tf.data.Dataset.from_tensor_slices((np.stack(order), np.stack([labels] * len(order))))

keras.utils.set_random_seed(0)
with strategy.scope():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    keras.mixed_precision.set_global_policy("float32")
    optimizer = models.build_optimizer("adam", 0.01)
    optimizer.build(model.trainable_variables)
    scale = DynamicLossScale()
steps = StepFunctions(strategy, model, optimizer,
                      global_batch_size=4 * strategy.num_replicas_in_sync, loss_scale=scale)
iterator = iter(strategy.distribute_datasets_from_function(lambda context: batches))

def replica_weights():
    return [[float(np.abs(w).sum()) for w in strategy.experimental_local_results(v.value)]
            for v in model.trainable_variables]

initial = replica_weights()
out = {"replicas": strategy.num_replicas_in_sync, "initial": initial}
for step in (1, 2):
    totals = steps.train(iterator, tf.constant(1, tf.int64)).numpy()
    out[f"step{step}"] = {"skipped": float(totals[3]), "scale": scale.value(),
                          "iterations": int(optimizer.iterations.numpy()),
                          "weights": replica_weights()}
print("RESULT " + json.dumps(out), flush=True)
"""

AVX2_ONLY = DeviceFacts(cpu_model="AMD EPYC 7B13", cpu_flags=frozenset({"avx2"}))


def saved_scale(job_dir) -> float:
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(job_dir / "checkpoints")))
    (key,) = [k for k in reader.get_variable_to_shape_map() if k.startswith("loss_scale/scale")]
    return float(reader.get_tensor(key))


def test_fp16_skips_overflowing_steps_counts_them_and_resumes_with_the_saved_scale(
        dataset, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(distribute, "device_facts", lambda on_tpu: AVX2_ONLY)
    monkeypatch.setattr(loss_scale, "INITIAL_SCALE", 2.0 ** 28)  # float16 gradients overflow
    caplog.set_level(logging.INFO, logger="trainer")
    # float16 on a CPU is emulated and very slow: few small steps.
    flags = ["--mixed-precision", "fp16", "--batch-size", "10", "--log-every-steps", "3",
             "--eval-every-steps", "12", "--eval-steps", "2"]
    first = train(dataset, tmp_path, *flags, "--max-steps", "12")

    skipped = scalars(tmp_path / "logs" / "train", "skipped_steps")
    total = sum(v for _, v in skipped)
    assert [s for s, _ in skipped] == [3, 6, 9, 12] and 1 <= total < 12
    scale = saved_scale(tmp_path)
    assert scale == 2.0 ** (28 - total)  # halved once per skipped step, no growth yet
    assert scalars(tmp_path / "logs" / "train", "loss_scale")[-1][1] == scale
    losses = [v for _, v in scalars(tmp_path / "logs" / "train", "loss")]
    assert all(map(math.isfinite, losses)) and math.isfinite(first.metrics["loss"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "no fast native fp16" in w]) == 1
    assert any(r.getMessage().startswith("mixed precision fp16 (--mixed-precision fp16 on CPU "
                                         "AMD EPYC 7B13") for r in caplog.records)

    # Resumed without the injection: a fresh scale (2^15) would differ from the saved one.
    monkeypatch.setattr(loss_scale, "INITIAL_SCALE", 2.0 ** 15)
    assert scale != 2.0 ** 15
    second = train(dataset, tmp_path, *flags, "--max-steps", "15")
    (later,) = [v for s, v in scalars(tmp_path / "logs" / "train", "skipped_steps") if s > 12]
    # Continued from the saved scale (halved for any step skipped since), not from 2^15.
    assert second.step == 15 and saved_scale(tmp_path) == scale / 2.0 ** later


def test_a_collapsed_loss_scale_is_a_one_line_error(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(loss_scale, "FLOOR", 2.0 ** 20)  # the scale never gets there
    monkeypatch.setattr(loss_scale, "PATIENCE_STEPS", 2)
    with pytest.raises(loss_scale.LossScaleCollapsed,
                       match=r"fp16 loss scaling collapsed: the loss scale is 32768 \(below "
                             r"1\.04858e\+06 since step 1\) .* by step 3; stopped without "
                             "saving"):
        train(dataset, tmp_path, "--mixed-precision", "fp16", "--batch-size", "10",
              "--max-steps", "10", "--log-every-steps", "1", "--eval-every-steps", "10")
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")) is None


def check_agreement(out):
    assert out["replicas"] == 2
    first, second = out["step1"], out["step2"]
    # Step 1: one replica overflowed, so every replica skipped: no update, the scale halved.
    assert first["skipped"] == 1.0 and first["scale"] == 2.0 ** 14 and first["iterations"] == 0
    assert first["weights"] == out["initial"]
    # Step 2: clean everywhere, applied alike on every replica.
    assert second["skipped"] == 0.0 and second["scale"] == 2.0 ** 14
    assert second["iterations"] == 1 and second["weights"] != out["initial"]
    assert all(len(set(replicas)) == 1 for replicas in second["weights"])


def result_of(output: str) -> dict:
    line = [l for l in output.splitlines() if l.startswith("RESULT ")]
    assert line, output[-3000:]
    return json.loads(line[0][7:])


def test_two_mirrored_replicas_skip_a_step_together_when_one_overflows():
    done = subprocess.run([sys.executable, "-c", REPLICAS, "mirrored"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    check_agreement(result_of(done.stdout + done.stderr))


def test_two_workers_skip_a_step_together_when_one_overflows():
    ports = local_cluster.free_ports(2)
    workers = [f"127.0.0.1:{port}" for port in ports]
    processes = [subprocess.Popen(
        [sys.executable, "-c", REPLICAS, "mwms"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env={**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})})
        for index in range(2)]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for process in processes:
            process.kill()
            process.wait()
    results = [result_of(output) for output in outputs]
    for result in results:
        check_agreement(result)
    assert results[0]["step2"]["weights"] == results[1]["step2"]["weights"]
