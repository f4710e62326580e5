"""gs:// through a flaky network (tests/fake_gcs.py Faults; loopback only): transient 503/429
answers and broken connections cost retries, never data; an object that always fails is a
one-line error naming it, not a traceback or a hang.

TensorFlow's gs:// client retries a failed request up to 10 times, waiting 1 s doubling to 32 s
plus up to 1 s of jitter each time; GCS_RETRY_CONFIG_INIT_DELAY_TIME_US=0 makes the retries
immediate so these tests take seconds of retrying, not minutes.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FP32, REPO, write_dataset
from tests.exports import export_model
from tests.fake_gcs import FakeGcs, Faults

TRAIN = ["-m", "trainer.task", *FP32, "--train-files", "gs://bkt/data/train-*", "--eval-files",
         "gs://bkt/data/eval-*", "--model", "cnn_small", "--batch-size", "32",
         "--log-every-steps", "10", "--checkpoint-every-steps", "20"]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    fake = FakeGcs(tmp_path_factory.mktemp("gcs")).start()
    fake.create_bucket("bkt")
    data = tmp_path_factory.mktemp("data")
    write_dataset(data, 1200, 3, "train", seed=1)
    write_dataset(data, 300, 1, "eval", seed=2)
    fake.upload(data, "bkt", "data")
    yield fake
    fake.stop()


def environment(gcs) -> dict:
    return {**os.environ, **gcs.env, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
            "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "0"}


def run(gcs, *command, timeout=300):
    return subprocess.run([sys.executable, *command], cwd=REPO, env=environment(gcs),
                          capture_output=True, text=True, timeout=timeout)


def faults_so_far(gcs) -> int:
    return sum(gcs.faults.injected.values())


def test_training_resume_and_export_survive_transient_faults(gcs):
    gcs.faults = Faults(share=0.05, seed=12)
    args = [*TRAIN, "--job-dir", "gs://bkt/flaky", "--max-steps", "60", "--eval-every-steps",
            "60"]

    def registered_step():  # read from the emulator itself, past the faults
        state = gcs.read("bkt", "flaky/checkpoints/checkpoint")
        found = state and re.search(rb'model_checkpoint_path: "ckpt-(\d+)"', state)
        return int(found[1]) if found else None

    first = subprocess.Popen([sys.executable, *args], cwd=REPO, env=environment(gcs), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while registered_step() is None:
            assert first.poll() is None, first.stdout.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        first.kill()
    finally:
        first.kill()
        first.wait()
        first.stdout.close()
    saved, injected = registered_step(), faults_so_far(gcs)
    assert saved < 60 and injected > 0

    second = run(gcs, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(rf"resumed from checkpoint gs://bkt/flaky/checkpoints/ckpt-{saved} ",
                     second.stdout), second.stdout[-2000:]
    assert "done at step 60" in second.stdout
    export = re.search(r"exported the model at step 60 to (gs://\S+)", second.stdout)[1]
    assert faults_so_far(gcs) > injected

    load = run(gcs, "-c", f"""
import tensorflow as tf
out = tf.saved_model.load({export!r}).signatures["serving_default"](image=tf.zeros([2, 28, 28, 1]))
print("PREDICTED", out["probabilities"].shape)
""")
    assert load.returncode == 0, load.stderr[-2000:]
    assert "PREDICTED (2, 10)" in load.stdout
    assert not [name for name in gcs.list("bkt", "flaky/export/") if ".tmp-" in name]


def one_line_error(done, message_start: str, object_pattern: str) -> None:
    """The last line is the error, and it names the object that failed."""
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"error: {message_start}"), last
    assert re.search(rf"when [a-z ]+ {object_pattern}\)", last), last
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_a_model_object_that_always_fails_is_one_line_at_server_start(gcs, tmp_path):
    gcs.faults = Faults()
    gcs.upload(Path(export_model(tmp_path / "model")[1]), "bkt", "models/broken")
    gcs.faults = Faults(broken="models/broken/saved_model.pb")
    done = run(gcs, "-m", "trainer.serve", "--model-dir", "gs://bkt/models/broken", "--port",
               "0")
    # The server reads gs:// with google-cloud-storage, retrying as TensorFlow does.
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1] == (
        "error: --model-dir: cannot read gs://bkt/models/broken/saved_model.pb (all 10 retry "
        "attempts failed, the last with HTTP 503)")
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_an_export_that_always_fails_is_one_line_and_keeps_the_checkpoint(gcs):
    gcs.faults = Faults(broken="saved_model.pb")  # the export dir itself stays writable
    done = run(gcs, *TRAIN, "--job-dir", "gs://bkt/stuck", "--max-steps", "20",
               "--eval-every-steps", "20")
    one_line_error(done, "cannot export the model to gs://bkt/stuck/export/",
                   r"gs://bkt/stuck/export/\d+\.tmp-\d+/saved_model\.pb\S*")
    assert b'model_checkpoint_path: "ckpt-20"' in gcs.read("bkt", "stuck/checkpoints/checkpoint")


def test_a_job_dir_the_account_may_not_write_is_one_line_naming_the_object(gcs):
    gcs.faults = Faults(broken="denied/", broken_status=403)
    done = run(gcs, *TRAIN, "--job-dir", "gs://bkt/denied", "--max-steps", "20")
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    # Whichever write comes first (the --job-dir check, the run record) names its object.
    assert re.search(r"access denied \(when [a-z ]+ gs://bkt/denied/\S+\); check the account's "
                     r"storage roles\)?$", last), last
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize("kind, message, expected", [
    # An export directory is named by a timestamp: its digits may hold "403" or "404".
    ("UnavailableError", "All 10 retry attempts failed. The last failure: Error executing an "
     "HTTP request: HTTP response code 503 with body '{\"code\": 503}'\n\t when initiating an "
     "upload to gs://bkt/export/1796404030.tmp-403/saved_model.pb",
     "All 10 retry attempts failed. The last failure: Error executing an HTTP request: HTTP "
     "response code 503 when initiating an upload to gs://bkt/export/1796404030.tmp-403/"
     "saved_model.pb"),
    ("PermissionDeniedError", "Error executing an HTTP request: HTTP response code 403 with body "
     "'{}'\n\t when reading metadata of gs://bkt/a.pb",
     "access denied (when reading metadata of gs://bkt/a.pb); check the account's storage "
     "roles"),
    ("NotFoundError", "Error executing an HTTP request: HTTP response code 404\n\t when reading "
     "gs://nobucket/", "bucket gs://bkt does not exist (or is not visible to this account)"),
])
def test_a_gcs_failure_is_worded_by_its_status_not_by_digits_in_the_path(kind, message,
                                                                         expected):
    import tensorflow as tf

    from trainer import storage

    err = getattr(tf.errors, kind)(None, None, message)
    assert storage.problem(err, "gs://bkt/export/1796404030.tmp-403/saved_model.pb") == expected
