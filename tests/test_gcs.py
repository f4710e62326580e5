"""gs:// end to end against a real GCS API on 127.0.0.1 (tests/fake_gcs.py); loopback only."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import FP32, REPO, synthetic_images, write_idx
from tests.fake_gcs import FakeGcs


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    fake = FakeGcs(tmp_path_factory.mktemp("gcs")).start()
    fake.create_bucket("bkt")
    yield fake
    fake.stop()


def run(gcs, *command, timeout=240):
    env = {**os.environ, **gcs.env, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def popen(gcs, *command):
    env = {**os.environ, **gcs.env, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, *command], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def gcs_dataset(gcs, tmp_path_factory):
    idx = tmp_path_factory.mktemp("idx")
    for prefix, count, seed in (("train", 1200, 1), ("t10k", 300, 2)):
        images, labels = synthetic_images(count, seed)
        write_idx(idx / f"{prefix}-images-idx3-ubyte.gz", images[..., 0])
        write_idx(idx / f"{prefix}-labels-idx1-ubyte.gz", labels)
    command = ["-m", "trainer.tools.prepare_mnist", "--idx-dir", str(idx), "--output-dir",
               "gs://bkt/data", "--train-shards", "3", "--eval-shards", "1"]
    first = run(gcs, *command)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run(gcs, *command)  # everything is there with the same checksum: nothing is sent
    assert "train: 1,200 records" in again.stdout and "(3 already there)" in again.stdout, again.stderr[-3000:]
    return "gs://bkt/data/train-*", "gs://bkt/data/eval-*"


def test_prepared_shards_are_listed_and_verified_on_gcs(gcs, gcs_dataset):
    assert sorted(gcs.list("bkt", "data/")) == [
        "data/eval-00000-of-00001.tfrecord.gz", "data/train-00000-of-00003.tfrecord.gz",
        "data/train-00001-of-00003.tfrecord.gz", "data/train-00002-of-00003.tfrecord.gz"]
    result = run(gcs, "-m", "trainer.tools.verify_dataset", gcs_dataset[0])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gs://bkt/data/train-00002-of-00003.tfrecord.gz" in result.stdout
    assert re.search(r"total: 3 shard\(s\), 1,200 records", result.stdout)
    assert re.search(r"input pipeline: 1,200 records in .* records/s\)", result.stdout)


def test_train_on_gcs_survives_a_kill_and_exports_a_loadable_model(gcs, gcs_dataset):
    train_files, eval_files = gcs_dataset
    args = ["-m", "trainer.task", *FP32, "--train-files", train_files, "--eval-files", eval_files,
            "--job-dir", "gs://bkt/job", "--model", "cnn_small", "--batch-size", "32",
            "--max-steps", "100", "--eval-every-steps", "100", "--log-every-steps", "10",
            "--checkpoint-every-steps", "20"]
    def registered_step():
        # The manager's state file names a checkpoint only once it is complete.
        state = gcs.read("bkt", "job/checkpoints/checkpoint")
        found = state and re.search(rb'model_checkpoint_path: "ckpt-(\d+)"', state)
        return int(found[1]) if found else None

    first = popen(gcs, *args)
    try:
        deadline = time.monotonic() + 180
        while registered_step() is None:
            assert first.poll() is None, first.stdout.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    saved = registered_step()
    assert saved < 100

    second = run(gcs, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(rf"resumed from checkpoint gs://bkt/job/checkpoints/ckpt-{saved} ",
                     second.stdout)
    assert "done at step 100" in second.stdout
    export = re.search(r"exported the model at step 100 to (gs://\S+)", second.stdout)[1]
    assert any(n.startswith("job/logs/train/events.out.tfevents") for n in gcs.list("bkt", "job/"))

    load = run(gcs, "-c", f"""
import numpy as np, tensorflow as tf
serve = tf.saved_model.load({export!r}).signatures["serving_default"]
out = serve(image=tf.zeros([3, 28, 28, 1]))
print("PREDICTED", out["probabilities"].shape, round(float(tf.reduce_sum(out["probabilities"][0])), 4))
""")
    assert load.returncode == 0, load.stderr[-2000:]
    assert "PREDICTED (3, 10) 1.0" in load.stdout


@pytest.mark.parametrize("pattern, message", [
    ("gs://no-such-bucket/train-*", "--train-files: cannot list 'gs://no-such-bucket/train-*': "
                                    "bucket gs://no-such-bucket does not exist"),
    ("gs://bkt/nothing-*", "--train-files: no file matches 'gs://bkt/nothing-*'"),
])
def test_gcs_input_errors_are_one_line(gcs, gcs_dataset, pattern, message):
    result = run(gcs, "-m", "trainer.task", "--train-files", pattern, "--eval-files",
                 gcs_dataset[1], "--job-dir", "gs://bkt/bad-job")
    assert result.returncode == 1
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert errors == [f"error: {message}"] or message in errors[0], result.stderr[-2000:]
    assert not gcs.list("bkt", "bad-job/")


def test_an_unwritable_gcs_job_dir_is_one_line(gcs, gcs_dataset):
    result = run(gcs, "-m", "trainer.task", "--train-files", gcs_dataset[0], "--eval-files",
                 gcs_dataset[1], "--job-dir", "gs://no-such-bucket/job")
    assert result.returncode == 1
    assert "error: --job-dir: cannot write to gs://no-such-bucket/job" in result.stderr
