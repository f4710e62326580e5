"""End-to-end training runs with real TensorFlow on tiny generated data."""

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import FP32, REPO, good_record, run_task, write_records
from trainer import models, task
from trainer.config import config_from_flags


def train(dataset, job_dir, *flags, environ=None):
    train_files, eval_files = dataset
    argv = ["--train-files", train_files, "--eval-files", eval_files, "--job-dir", str(job_dir),
            "--model", "dnn", "--batch-size", "50", "--seed", "7", *FP32, *flags]
    return task.run(config_from_flags(argv, environ or {}))


def scalars(event_dir: Path, tag: str) -> list[tuple[int, float]]:
    values = []
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == tag:
                    values.append((event.step, float(tf.make_ndarray(value.tensor))))
    return values


def test_training_lowers_the_loss_and_writes_summaries(dataset, tmp_path):
    result = train(dataset, tmp_path, "--max-steps", "60", "--log-every-steps", "10",
                   "--eval-every-steps", "30")
    losses = scalars(tmp_path / "logs" / "train", "loss")
    assert [step for step, _ in losses] == [10, 20, 30, 40, 50, 60]
    assert losses[-1][1] < 0.5 * losses[0][1]
    assert [s for s, _ in scalars(tmp_path / "logs" / "eval", "accuracy")] == [30, 60]
    assert {s for s, _ in scalars(tmp_path / "logs" / "train", "examples_per_sec")} >= {60}
    assert scalars(tmp_path / "logs" / "train", "learning_rate")[0][1] == pytest.approx(0.05)
    assert result.step == 60 and result.metrics["accuracy"] > 0.9


def test_epochs_resolve_to_steps_and_the_progress_line_shows_the_epoch(dataset, tmp_path,
                                                                       caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("trainer"), "propagate", True)
    caplog.set_level(logging.INFO, logger="trainer")
    # 2,000 records in batches of 50: 40 steps an epoch, evaluated after each.
    result = train(dataset, tmp_path, "--epochs", "1.5", "--log-every-steps", "20")
    assert result.step == 60
    assert [s for s, _ in scalars(tmp_path / "logs" / "eval", "accuracy")] == [40, 60]
    lines = [m for m in caplog.messages if m.startswith("step ")]
    assert [line.split("  loss")[0] for line in lines] == [
        "step 20/60  epoch 0.5/1.5", "step 40/60  epoch 1/1.5", "step 60/60  epoch 1.5/1.5"]
    assert ("60 step(s) of 50 examples: 1.5 epochs of 2,000 (evaluating at the end of every "
            "epoch)") in caplog.messages
    # Given again with more epochs, the run goes on from its checkpoint.
    assert train(dataset, tmp_path, "--epochs", "2").step == 80


def test_the_progress_line_leaves_out_the_epoch_of_a_run_under_a_tenth_of_one(caplog,
                                                                              monkeypatch):
    from trainer.loop import TrainInterval
    from trainer.report import Progress

    monkeypatch.setattr(logging.getLogger("trainer"), "propagate", True)
    caplog.set_level(logging.INFO, logger="trainer")
    interval = TrainInterval(5, 5, 1.0, {"loss": 1.0, "accuracy": 0.5}, 500)
    # `reproduce --steps 5`: 5 steps of 100 of 10,000 examples said 'epoch 0/0'.
    Progress(5, steps_per_epoch=100.0).on_train(interval)
    Progress(10, steps_per_epoch=100.0).on_train(interval)
    assert [m.split("  loss")[0] for m in caplog.messages] == ["step 5/5", "step 5/10  epoch 0/0.1"]


def test_a_model_far_too_large_for_the_input_is_a_warning_naming_models_that_fit(
        tmp_path, caplog, monkeypatch):
    from tests.image_data import make_image_set

    monkeypatch.setattr(logging.getLogger("trainer"), "propagate", True)
    caplog.set_level(logging.INFO, logger="trainer")
    photos = make_image_set(tmp_path / "photos", train=40, evaluation=0, test=0)
    assert len(list(photos.train_dir.iterdir())) == 10
    argv = ["--train-files", str(photos.train_dir), "--eval-files", str(photos.train_dir),
            "--job-dir", str(tmp_path / "job"), "--model", "dnn", "--image-height", "128",
            "--image-width", "128", "--image-channels", "3", "--batch-size", "4",
            "--max-steps", "1", *FP32]
    task.run(config_from_flags(argv, {}))
    messages = [r.getMessage() for r in caplog.records]
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert messages.index(warning) < next(  # before the model is built
        i for i, m in enumerate(messages) if m.startswith("model dnn: "))
    assert warning.startswith("--model dnn on 128x128x3 images: 25,331,850 parameters, ")
    assert warning.endswith("models that fit it: mobilenet_v3_small (944,890 parameters, "
                            "36.5 MFLOPs), efficientnet_v2_b0 (5,932,122 parameters, 469.5 "
                            "MFLOPs), resnet20 (271,098 parameters, 1.30 GFLOPs)")


def test_export_reloads_and_matches_the_trained_model(dataset, tmp_path):
    result = train(dataset, tmp_path, "--max-steps", "20", "--eval-every-steps", "20")
    assert Path(result.export_path).parent == tmp_path / "export"
    model = models.build_model("dnn", (28, 28, 1), 10, 0.0)
    checkpoint = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert checkpoint.endswith("ckpt-20")
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    images = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    expected = tf.nn.softmax(model(images, training=False)).numpy()

    loaded = tf.saved_model.load(result.export_path)
    outputs = loaded.signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"].numpy(), expected.argmax(axis=1))


def test_a_finished_job_run_again_exports_only_when_its_export_is_missing(
        dataset, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("trainer"), "propagate", True)
    caplog.set_level(logging.INFO, logger="trainer")
    first = train(dataset, tmp_path, "--max-steps", "10")
    again = train(dataset, tmp_path, "--max-steps", "10")
    assert again.export_path == first.export_path
    assert list((tmp_path / "export").iterdir()) == [Path(first.export_path)]
    assert (f"the model at step 10 (weights {first.weights_digest}) is already exported to "
            f"{first.export_path}; not exporting it again") in caplog.messages
    # A run killed after its last checkpoint but before exporting: the rerun exports.
    shutil.rmtree(first.export_path)
    last = train(dataset, tmp_path, "--max-steps", "10")
    assert list((tmp_path / "export").iterdir()) == [Path(last.export_path)]
    assert (Path(last.export_path) / "saved_model.pb").exists()


def test_hypertune_gets_one_report_per_evaluation_in_a_per_trial_dir(dataset, tmp_path,
                                                                   monkeypatch):
    metric_file = tmp_path / "hypertune" / "output.metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(metric_file))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    result = train(dataset, tmp_path, "--max-steps", "50", "--eval-every-steps", "20",
                   "--hypertune-metric", "loss", environ={"CLOUD_ML_TRIAL_ID": "7"})
    reports = [json.loads(line) for line in metric_file.read_text().splitlines()]
    assert [r["global_step"] for r in reports] == ["20", "40", "50"]
    assert all(r["trial"] == "7" and "loss" in r for r in reports)
    assert float(reports[-1]["loss"]) == pytest.approx(result.metrics["loss"], rel=1e-5)
    assert Path(result.export_path).parent == tmp_path / "7" / "export"
    assert (tmp_path / "7" / "checkpoints" / "checkpoint").exists()


def test_export_best_only_exports_exactly_when_the_metric_improves(dataset, tmp_path,
                                                                  monkeypatch):
    metric_file = tmp_path / "metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(metric_file))
    train(dataset, tmp_path, "--max-steps", "60", "--eval-every-steps", "10",
          "--export-best-only", "--learning-rate", "0.2")
    values = [float(json.loads(line)["accuracy"]) for line in metric_file.read_text().splitlines()]
    improvements = sum(v > max(values[:i], default=-1) for i, v in enumerate(values))
    assert len(list((tmp_path / "export").iterdir())) == improvements


def test_vertex_aip_directories_win(dataset, tmp_path):
    environ = {"AIP_MODEL_DIR": str(tmp_path / "model"),
               "AIP_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
               "AIP_TENSORBOARD_LOG_DIR": str(tmp_path / "tb")}
    result = train(dataset, tmp_path / "job", "--max-steps", "10", environ=environ)
    assert result.export_path == str(tmp_path / "model")
    assert (tmp_path / "model" / "saved_model.pb").exists()
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-10")
    assert list((tmp_path / "tb" / "train").glob("events.out.tfevents.*"))
    assert not (tmp_path / "job").exists()


# The evaluator task of a Vertex job (worker pool 3), here run after the chief has finished.
EVALUATOR = {"TF_CONFIG": json.dumps({"cluster": {"chief": ["127.0.0.1:2222"]},
                                      "task": {"type": "evaluator", "index": 0}})}


def test_the_evaluator_task_evaluates_the_averaged_weights_as_the_chief_does(dataset, tmp_path):
    flags = ("--max-steps", "20", "--eval-every-steps", "20", "--ema-decay", "0.9")
    chief = train(dataset, tmp_path, *flags)
    evaluator = train(dataset, tmp_path, *flags, environ=EVALUATOR)
    assert evaluator.step == 20 and evaluator.export_path is None
    for name in ("accuracy", "loss"):
        assert abs(evaluator.metrics[name] - chief.metrics[name]) <= 1e-6, (evaluator, chief)
    assert [s for s, _ in scalars(tmp_path / "logs" / "evaluator", "loss")] == [20]


def test_rerun_after_completion_continues_to_a_larger_max_steps(dataset, tmp_path):
    assert train(dataset, tmp_path, "--max-steps", "20").step == 20
    result = train(dataset, tmp_path, "--max-steps", "30", "--eval-every-steps", "5")
    assert result.step == 30
    steps = [s for s, _ in scalars(tmp_path / "logs" / "eval", "accuracy")]
    assert steps == [20, 25, 30]


def test_killed_run_resumes_from_its_checkpoint_and_ends_at_max_steps(dataset, tmp_path):
    train_files, eval_files = dataset
    args = ["-m", "trainer.task", "--train-files", train_files, "--eval-files", eval_files,
            "--job-dir", str(tmp_path), "--model", "cnn", "--batch-size", "32",
            "--max-steps", "300", "--eval-every-steps", "300", "--log-every-steps", "10",
            "--checkpoint-every-steps", "20"]
    checkpoints = tmp_path / "checkpoints"
    first = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while tf.train.latest_checkpoint(str(checkpoints)) is None:
            assert first.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    killed_at = int(tf.train.latest_checkpoint(str(checkpoints)).rsplit("-", 1)[1])
    assert 20 <= killed_at < 300

    second = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"at step {killed_at}" in second.stdout
    first_progress = [line for line in second.stdout.splitlines() if "/300  epoch" in line][0]
    assert f"step {killed_at + 10}/300" in first_progress
    assert tf.train.latest_checkpoint(str(checkpoints)).endswith("ckpt-300")
    assert "done at step 300" in second.stdout


def one_line_error(result, exit_code, *expected):
    assert result.returncode == exit_code, (result.stdout[-1500:], result.stderr[-1500:])
    lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.mark.parametrize("flags, expected", [
    (["--model", "resnet"], ["--model", "invalid choice: 'resnet'"]),
    (["--batch-size", "0"], ["--batch-size must be positive, got 0"]),
    (["--max_steps=-5"], ["--max-steps must be positive and at most 2^53", "got -5"]),
    (["--seed", "-1"], ["--seed must be in [0, 4,294,967,295], got -1"]),
    (["--max-steps", "1e30"], ["--max-steps must be positive and at most 2^53", "got 1e+30"]),
    (["--learning-rate", "0.1", "--learnig-rate", "0.2"], ["unrecognized arguments: --learnig-rate"]),
])
def test_flag_errors_exit_2_with_one_line(flags, expected, tmp_path):
    one_line_error(run_task(*flags, "--job-dir", str(tmp_path / "job")), 2, *expected)
    assert not (tmp_path / "job").exists()


def test_bad_inputs_fail_before_writing_anything(dataset, tmp_path):
    train_files, eval_files = dataset
    missing = run_task("--train-files", str(tmp_path / "none-*"), "--eval-files", eval_files,
                       "--job-dir", str(tmp_path / "a"))
    one_line_error(missing, 1, "--train-files: no file matches")
    assert not (tmp_path / "a").exists()

    (tmp_path / "file").write_text("x")
    unwritable = run_task("--train-files", train_files, "--eval-files", eval_files,
                          "--job-dir", str(tmp_path / "file" / "job"))
    one_line_error(unwritable, 1, f"--job-dir: cannot write to {tmp_path / 'file' / 'job'}")


def test_a_bad_record_mid_training_is_one_line_and_keeps_earlier_checkpoints(dataset, tmp_path):
    train_files, eval_files = dataset
    records = [good_record()] * 400 + [good_record(label=11)] + [good_record()] * 10
    bad = write_records(tmp_path / "bad.tfrecord", records)
    result = run_task("--train-files", bad, "--eval-files", eval_files, "--job-dir",
                      str(tmp_path / "job"), "--model", "dnn", "--batch-size", "10",
                      "--shuffle-buffer", "1", "--max-steps", "100", "--checkpoint-every-steps",
                      "10", "--eval-every-steps", "100")
    one_line_error(result, 1, "--train-files: a record holds a label outside [0, 10)", "[11]")
    latest = tf.train.latest_checkpoint(str(tmp_path / "job" / "checkpoints"))
    assert latest is not None and int(latest.rsplit("-", 1)[1]) <= 40
    assert list((tmp_path / "job" / "export").iterdir()) == []  # probed for writing, no model
