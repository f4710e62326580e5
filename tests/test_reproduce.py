"""trainer/tools/reproduce_tutorials.py: its rows are valid commands, and the fine-tuning study's own
steps (digit folders from records, a backbone weights file from a run's checkpoint) are right.
The study's training itself is tests/test_image_models.py's fine-tuning test."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from trainer.tools import reproduce_tutorials as reproduce
from tests.conftest import synthetic_images
from trainer import models
from trainer.config import config_from_flags
from trainer.models import applications


def test_budget_replaces_the_steps_and_evaluates_once_at_the_end():
    flags = ("--max-steps", "2000", "--batch-size", "100", "--warmup-steps", "100",
             "--freeze-backbone-steps", "300")
    assert reproduce._budget(flags, None) == flags + ("--eval-every-steps", "2000")
    assert reproduce._budget(flags, 10) == ("--max-steps", "10", "--batch-size", "100",
                                            "--warmup-steps", "5", "--freeze-backbone-steps",
                                            "5", "--eval-every-steps", "10")


@pytest.mark.parametrize("row", reproduce.ROWS, ids=lambda row: row.key)
def test_every_row_is_a_valid_trainer_command(dataset, tmp_path, row):
    config = config_from_flags(["--train-files", dataset[0], "--eval-files", dataset[1],
                                "--model", row.model, *reproduce._budget(row.flags, None),
                                "--job-dir", str(tmp_path)], {})
    assert config.model.name == row.model


def test_an_unknown_row_is_a_one_line_usage_error(capsys):
    assert reproduce.main(["--train-files", "x", "--eval-files", "y", "--rows",
                           "cnn,cnn_bn+magic"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith("error: --rows: unknown row 'cnn_bn+magic'")


def test_the_table_names_the_data_it_was_measured_on(dataset, tmp_path, monkeypatch):
    # The command's logging set-up stays out of this process's later tests (caplog needs the
    # trainer logger to propagate).
    monkeypatch.setattr("trainer.logs.log_to_stdout", lambda: None)
    monkeypatch.setattr(logging.getLogger("tensorflow"), "filters", [])
    output = tmp_path / "REPRODUCTION.md"
    assert reproduce.main(["--train-files", dataset[0], "--eval-files", dataset[1], "--rows",
                           "dnn", "--steps", "2", "--job-root", str(tmp_path / "jobs"),
                           "--output", str(output)]) == 0
    first = output.read_text().splitlines()[0]
    assert first.startswith(f"2,000 training / 500 test digits ({dataset[0]} / {dataset[1]})")
    assert " cores (" in first and "load average" in first


def test_digit_folders_hold_the_chosen_digits_pixel_for_pixel(dataset, tmp_path):
    written = reproduce.write_digit_folders(dataset[1], str(tmp_path), range(5, 10), per_class=3)
    images, labels = synthetic_images(500, seed=2)  # the `dataset` fixture's eval set
    assert written == 15
    for digit in range(5, 10):
        files = sorted((tmp_path / str(digit)).iterdir())
        assert [f.name for f in files] == ["00000.png", "00001.png", "00002.png"]
        first = tf.io.decode_png(files[0].read_bytes()).numpy()
        np.testing.assert_array_equal(first, images[np.flatnonzero(labels == digit)[0]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["5", "6", "7", "8", "9"]


def test_a_runs_backbone_becomes_a_weights_file_that_loads(tmp_path):
    shape = (reproduce.FINE_TUNING_SIZE, reproduce.FINE_TUNING_SIZE, 1)
    trained = models.build_model("mobilenet_v3_small", shape, 5,
                                 models.MODELS["mobilenet_v3_small"].dropout)
    tf.train.Checkpoint(model=trained).save(str(tmp_path / "job" / "checkpoints" / "ckpt"))
    weights = str(tmp_path / "backbone.weights.h5")
    reproduce.save_backbone_weights(str(tmp_path / "job"), weights, num_classes=5)

    fresh = models.build_model("mobilenet_v3_small", shape, 5, 0.0)
    loaded = models.build_model("mobilenet_v3_small", shape, 5, 0.0, weights=weights)
    expected = applications.backbone_of(trained).weights
    assert any(not np.array_equal(a, b) for a, b in zip(
        expected, applications.backbone_of(fresh).weights))
    for want, got in zip(expected, applications.backbone_of(loaded).weights):
        np.testing.assert_array_equal(got, want)
