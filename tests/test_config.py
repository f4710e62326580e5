"""trainer.config: flags + environment -> Config (pure Python, fast; never imports TensorFlow)."""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import config as config_module
from trainer.config import RecipeConfig, build_parser, config_from_flags
from trainer.errors import TrainerError
from trainer.models import MODELS

REPO = Path(__file__).resolve().parent.parent


def error_of(argv, environ=None) -> str:
    with pytest.raises(TrainerError) as info:
        config_from_flags(argv, environ or {})
    message = str(info.value)
    assert "\n" not in message, message
    return message


# --- defaults ------------------------------------------------------------------------------------

def test_defaults():
    config = config_from_flags([], {})
    cnn = MODELS["cnn"]
    model = config.model
    assert model.name == "cnn"
    assert (model.optimizer, model.learning_rate, model.dropout) == (
        cnn.optimizer, cnn.learning_rate, cnn.dropout)
    assert model.batch_size == 100
    assert model.eval_batch_size == 100
    assert config.loop.checkpoint_every_steps == config.loop.eval_every_steps
    assert config.loop.eval_steps is None
    assert config.loop.loss_upper_bound == math.inf
    assert config.data.image_shape == (28, 28, 1)
    assert config.data.num_classes is None  # inferred from the data (10 for the bundled sample)
    assert config.outputs.export_best_only is False
    assert config.outputs.hypertune_metric == "accuracy"
    assert config.cluster.role.is_chief and config.cluster.role.trial is None


def test_default_files_are_the_bundled_sample():
    files = config_from_flags([], {}).data.files
    assert files.train == (config_module.SAMPLE_TRAIN_FILES,)
    assert files.eval == (config_module.SAMPLE_EVAL_FILES,)
    sample = Path(config_module.__file__).resolve().parent / "sample"
    assert glob.glob(files.train[0]) and glob.glob(files.eval[0])
    assert all(Path(p).parent == sample for p in files.train + files.eval)


def test_derived_defaults_follow_their_source_flags():
    config = config_from_flags(["--batch-size", "64", "--eval-every-steps", "200"], {})
    assert config.model.eval_batch_size == 64
    assert config.loop.checkpoint_every_steps == 200


def test_derived_defaults_can_be_overridden():
    config = config_from_flags(["--batch-size", "64", "--eval-batch-size", "256",
                                "--eval-every-steps", "200", "--checkpoint-every-steps", "50"], {})
    assert (config.model.batch_size, config.model.eval_batch_size) == (64, 256)
    assert (config.loop.eval_every_steps, config.loop.checkpoint_every_steps) == (200, 50)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_per_model_hyperparameter_defaults(model):
    spec = MODELS[model]
    size = str(max(28, spec.min_size))
    config = config_from_flags(["--model", model, "--image-height", size, "--image-width", size],
                               {})
    assert (config.model.optimizer, config.model.learning_rate, config.model.dropout,
            config.recipe.weight_decay) == (spec.optimizer, spec.learning_rate, spec.dropout,
                                            spec.weight_decay)


def test_recipe_defaults_change_nothing_and_flags_reach_the_recipe():
    assert config_from_flags([], {}).recipe == RecipeConfig(weight_decay=0.0)
    recipe = config_from_flags([
        "--model", "mobilenet_v3_small", "--image-height", "32", "--image-width", "32",
        "--lr-schedule", "cosine", "--warmup_steps=10", "--weight-decay", "0.05",
        "--label-smoothing", "0.1", "--clip-norm", "2", "--ema-decay", "0.999",
        "--pretrained-weights", "imagenet", "--freeze-backbone-steps", "100"], {}).recipe
    assert recipe == RecipeConfig(lr_schedule="cosine", warmup_steps=10, weight_decay=0.05,
                            label_smoothing=0.1, clip_norm=2.0, ema_decay=0.999,
                            pretrained_weights="imagenet", freeze_backbone_steps=100,
                            fine_tune_learning_rate=1e-4)


BACKBONE = ["--model", "resnet50", "--image-height", "32", "--image-width", "32"]


@pytest.mark.parametrize("argv, message", [
    (["--model", "cnn", "--freeze-backbone-steps", "10"],
     "--freeze-backbone-steps needs a model with a backbone (mobilenet_v3_small, "
     "efficientnet_v2_b0, resnet50); --model cnn has none"),
    (["--model", "resnet20", "--pretrained-weights", "imagenet"],
     "--pretrained-weights needs a model with a backbone"),
    (["--model", "resnet50"], "--model resnet50 needs images of at least 32x32"),
    (BACKBONE + ["--image-channels", "4"], "--model resnet50 takes images of 1 or 3 channels"),
    (["--warmup-steps", "1000"], "--warmup-steps must be in [0, --max-steps 1000), got 1000"),
    (["--warmup-steps", "-1"], "--warmup-steps must be in [0, --max-steps 1000), got -1"),
    (BACKBONE + ["--freeze-backbone-steps", "1000"], "--freeze-backbone-steps must be in [0, "),
    (["--weight-decay", "-0.1"], "--weight-decay must not be negative, got -0.1"),
    (["--ema-decay", "-0.5"], "--ema-decay must be in [0, 1), got -0.5"),
    (["--ema-decay", "1"], "--ema-decay must be in [0, 1), got 1.0"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1), got 1.0"),
    (["--clip-norm", "0"], "--clip-norm must be positive, got 0.0"),
    (BACKBONE + ["--fine-tune-learning-rate", "-1"], "--fine-tune-learning-rate must be "
                                                     "positive"),
])
def test_bad_recipe_flags_are_one_line_errors(argv, message):
    with pytest.raises(TrainerError) as error:
        config_from_flags(argv, {})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_backbone_is_a_flag_error():
    with pytest.raises(TrainerError, match="--model: invalid choice: 'mobilenet_v9'"):
        config_from_flags(["--model", "mobilenet_v9"], {})


def test_dnn_defaults_to_adagrad():
    model = config_from_flags(["--model", "dnn"], {}).model
    assert (model.optimizer, model.learning_rate, model.dropout) == ("adagrad", 0.05, 0.0)


def test_explicit_hyperparameters_override_model_defaults():
    model = config_from_flags(["--model", "dnn", "--optimizer", "sgd", "--learning-rate", "0.2",
                               "--dropout", "0.1"], {}).model
    assert (model.optimizer, model.learning_rate, model.dropout) == ("sgd", 0.2, 0.1)


def test_explicit_zero_dropout_is_not_replaced_by_the_model_default():
    assert MODELS["cnn"].dropout > 0
    assert config_from_flags(["--model", "cnn", "--dropout", "0"], {}).model.dropout == 0.0


@pytest.mark.parametrize("metric, higher", [("accuracy", True), ("loss", False)])
def test_metric_direction(metric, higher):
    config = config_from_flags(["--hypertune-metric", metric], {})
    assert config.outputs.metric_higher_is_better is higher


# --- spellings and parse errors ------------------------------------------------------------------

def test_every_dashed_flag_has_an_underscore_spelling():
    checked = []
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and "-" in option[2:]:
                assert "--" + option[2:].replace("-", "_") in action.option_strings, option
                checked.append(option)
    assert "--learning-rate" in checked and "--export-best-only" in checked


@pytest.mark.parametrize("argv, field, value", [
    (["--learning_rate=0.01"], "model.learning_rate", 0.01),
    (["--batch_size", "32"], "model.batch_size", 32),
    (["--max_steps=7"], "loop.max_steps", 7),
    (["--num_classes=3"], "data.num_classes", 3),
    (["--distribution_strategy=mirrored"], "cluster.strategy.name", "mirrored"),
    (["--train_files=a", "--eval_files=b"], "data.files.train", ("a",)),
])
def test_underscore_spellings_parse(argv, field, value):
    value_of = config_from_flags(argv, {})
    for name in field.split("."):
        value_of = getattr(value_of, name)
    assert value_of == value


def test_unknown_flag_is_an_error():
    assert "--bogus-flag" in error_of(["--bogus-flag", "1"])


@pytest.mark.parametrize("argv", [["--learning", "0.1"], ["--learning=0.1"], ["--batch", "5"],
                                  ["--learning_rat=0.1"]])
def test_abbreviated_flag_is_an_error(argv):
    assert argv[0].split("=")[0] in error_of(argv)


@pytest.mark.parametrize("argv, flag", [
    (["--batch-size", "ten"], "--batch-size"),
    (["--learning-rate=fast"], "--learning-rate"),
    (["--max-steps", "1.5"], "--max-steps"),
    (["--export-best-only=maybe"], "--export-best-only"),
])
def test_bad_type_is_an_error(argv, flag):
    assert flag in error_of(argv)


@pytest.mark.parametrize("argv, flag", [
    (["--model", "resnet"], "--model"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--distribution-strategy", "horovod"], "--distribution-strategy"),
    (["--hypertune-metric", "auc"], "--hypertune-metric"),
])
def test_bad_choice_is_an_error(argv, flag):
    message = error_of(argv)
    assert flag in message and argv[1] in message


# --- value validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [
    ("--batch-size", "0"), ("--batch-size", "-5"), ("--eval-batch-size", "0"),
    ("--max-steps", "0"), ("--eval-every-steps", "0"), ("--eval-steps", "0"),
    ("--log-every-steps", "0"), ("--checkpoint-every-steps", "0"),
    ("--checkpoint-every-secs", "0"), ("--keep-checkpoints", "0"), ("--image-height", "0"),
    ("--image-width", "0"), ("--image-channels", "0"), ("--learning-rate", "0"),
    ("--learning-rate", "-0.1"), ("--shuffle-buffer", "0"),
])
def test_non_positive_values_are_errors(flag, value):
    message = error_of([f"{flag}={value}"])
    assert flag in message and "positive" in message


def test_underscore_spelling_error_names_the_flag():
    assert "--batch-size" in error_of(["--batch_size=0"])


@pytest.mark.parametrize("flag", ["--learning-rate", "--dropout", "--checkpoint-every-secs",
                                  "--evaluator-timeout-secs", "--loss-upper-bound"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_every_float_flag_rejects_non_finite_values(flag, value):
    message = error_of([f"{flag}={value}"])
    assert flag in message and "expected a finite number" in message


@pytest.mark.parametrize("value", ["-0.1", "1", "1.5", "nan"])
def test_dropout_out_of_range_is_an_error(value):
    assert "--dropout" in error_of([f"--dropout={value}"])


@pytest.mark.parametrize("value", ["0", "0.99"])
def test_dropout_in_range_is_accepted(value):
    assert config_from_flags([f"--dropout={value}"], {}).model.dropout == float(value)


@pytest.mark.parametrize("value", ["-1", "1e30", "4294967296"])
def test_a_seed_numpy_cannot_take_is_an_error_naming_the_range(value):
    # NumPy's ValueError traceback before (issue 22, row 6).
    assert error_of(["--seed", value]) == (
        f"--seed must be in [0, 4,294,967,295], got {'1e+30' if value == '1e30' else value}")


@pytest.mark.parametrize("value", ["0", "4294967295"])
def test_seeds_at_the_ends_of_the_range_are_accepted(value):
    assert config_from_flags(["--seed", value], {}).model.seed == int(value)


@pytest.mark.parametrize("value, shown", [("1e30", "1e+30"), (str(2 ** 53 + 1), str(2 ** 53 + 1))])
def test_max_steps_beyond_2_to_the_53_is_an_error(value, shown):
    # 1e30 trained "forever" before (issue 22, row 17).
    assert error_of(["--max-steps", value]) == (
        f"--max-steps must be positive and at most 2^53 = 9,007,199,254,740,992, got {shown}")
    assert config_from_flags(["--max-steps", str(2 ** 53)], {}).loop.max_steps == 2 ** 53


@pytest.mark.parametrize("flag", ["--shuffle-buffer", "--eval-steps", "--keep-checkpoints",
                                  "--log-every-steps", "--image-height"])
def test_an_integer_beyond_64_bits_is_an_error(flag):
    # --shuffle-buffer 1e30 and --eval-steps 1e30 were ValueError tracebacks in tf.data.
    assert error_of([flag, "1e30"]) == (
        f"{flag} must fit a 64-bit integer (at most 9,223,372,036,854,775,807), got 1e+30")


@pytest.mark.parametrize("value", ["1", "0", "-3"])
def test_num_classes_below_two_is_an_error(value):
    assert "--num-classes" in error_of([f"--num-classes={value}"])


def test_two_classes_are_accepted():
    assert config_from_flags(["--num-classes=2"], {}).data.num_classes == 2


# --- data files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, missing", [
    (["--train-files", "gs://b/train-*"], "--eval-files"),
    (["--eval-files", "gs://b/eval-*"], "--train-files"),
])
def test_train_and_eval_files_come_together(argv, missing):
    assert missing in error_of(argv)


def test_file_patterns_are_split_and_stripped():
    config = config_from_flags(["--train-files", " gs://b/a-* , /gcs/b/c-*,,",
                                "--eval-files", "eval-*"], {})
    assert config.data.files.train == ("gs://b/a-*", "/gcs/b/c-*")
    assert config.data.files.eval == ("eval-*",)


@pytest.mark.parametrize("argv, flag", [
    (["--train-files", " , ", "--eval-files", "e-*"], "--train-files"),
    (["--train-files", "t-*", "--eval-files", ","], "--eval-files"),
])
def test_blank_file_patterns_are_errors(argv, flag):
    assert flag in error_of(argv)


@pytest.mark.parametrize("argv, flag", [
    (["--train-files=", "--eval-files=e-*"], "--train-files"),
    (["--train-files=t-*", "--eval-files="], "--eval-files"),
])
def test_empty_file_patterns_are_errors(argv, flag):
    assert flag in error_of(argv)


# --- epochs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--epochs", "2", "--max-steps", "100"], "--max-steps and --epochs both set the same thing"),
    (["--eval-every-epochs", "1", "--eval-every-steps", "10"],
     "--eval-every-steps and --eval-every-epochs both set the same thing"),
    (["--epochs", "0"], "--epochs must be positive, got 0.0"),
    (["--epochs", "nan"], "--epochs: expected a finite number"),
])
def test_epoch_flag_errors(argv, message):
    assert message in error_of(argv)


def test_steps_are_the_default_budget_without_epochs():
    loop = config_from_flags([], {}).loop
    assert (loop.max_steps, loop.eval_every_steps, loop.epochs) == (1000, 500, None)
    assert config_module.with_data_size(config_from_flags([], {}), 10_000).loop.max_steps == 1000


def resolved(argv, examples):
    return config_module.with_data_size(config_from_flags(argv, {}), examples).loop


def test_epochs_resolve_to_steps_of_the_batch_and_evaluate_every_epoch():
    unresolved = config_from_flags(["--epochs", "2.5"], {}).loop
    assert (unresolved.max_steps, unresolved.eval_every_steps) == (None, None)
    loop = resolved(["--epochs", "2.5"], 10_000)
    assert (loop.max_steps, loop.eval_every_steps, loop.checkpoint_every_steps) == (250, 100, 100)
    assert loop.steps_per_epoch == 100
    # A partial last batch counts as a step: every example is seen.
    assert resolved(["--epochs", "1", "--batch-size", "100"], 1001).max_steps == 11
    assert resolved(["--epochs", "3", "--batch-size", "64"], 1000).max_steps == 47
    loop = resolved(["--max-steps", "500", "--eval-every-epochs", "0.5",
                     "--checkpoint-every-steps", "7"], 10_000)
    assert (loop.max_steps, loop.eval_every_steps, loop.checkpoint_every_steps) == (500, 50, 7)
    assert resolved(["--epochs", "1", "--eval-every-steps", "30"], 10_000).eval_every_steps == 30
    assert resolved(["--max-steps", "40"], 10_000).steps_per_epoch == 100


def test_the_budget_in_epochs_is_singular_for_one_epoch():
    assert resolved(["--max-steps", "600"], 60_000).epochs_note() == "1 epoch"
    assert resolved(["--epochs", "1", "--batch-size", "100"], 1001).epochs_note() == "1.1 epochs"
    assert resolved(["--max-steps", "300"], 60_000).epochs_note() == "0.5 epochs"
    assert resolved(["--epochs", "2"], 60_000).epochs_note() == "2 epochs"


def due_steps(loop, due) -> list[int]:
    """The steps the controller stops at for which `due(step)` holds, the final one included."""
    steps, step = [], 0
    while step < loop.max_steps:
        step = loop.next_boundary(step)
        if due(step):
            steps.append(step)
    return steps


def test_epoch_evaluations_end_on_the_step_each_epoch_ends_the_last_on_the_final_step():
    # 1,000 examples at batch 32: 31.25 steps an epoch, 20 epochs are 625 steps. Periods of a
    # rounded 31 steps evaluated at 620 and then at 625.
    loop = resolved(["--epochs", "20", "--batch-size", "32"], 1000)
    ends = [math.ceil(epoch * 31.25) for epoch in range(1, 21)]
    assert ends[:4] == [32, 63, 94, 125] and ends[-1] == loop.max_steps == 625
    assert due_steps(loop, loop.evaluates_at) == ends
    assert due_steps(loop, loop.checkpoints_at) == ends  # the default follows evaluation
    half = resolved(["--max-steps", "63", "--batch-size", "32", "--eval-every-epochs", "0.5"],
                    1000)
    assert due_steps(half, half.evaluates_at) == [16, 32, 47, 63]
    # Whole periods stay multiples.
    steps = resolved(["--max-steps", "95", "--eval-every-steps", "40",
                      "--checkpoint-every-steps", "25"], 1000)
    assert due_steps(steps, steps.evaluates_at) == [40, 80]
    assert due_steps(steps, steps.checkpoints_at) == [25, 50, 75]


@pytest.mark.parametrize("argv, examples, note", [
    (["--max-steps", "50"], 10_000, "evaluating at the end"),  # the default 500 never comes
    (["--max-steps", "500"], 10_000, "evaluating at the end"),
    ([], 10_000, "evaluating every 500 steps"),
    (["--max-steps", "3000", "--eval-every-steps", "1000"], 10, "evaluating every 1,000 steps"),
    (["--epochs", "3"], 1000, "evaluating at the end of every epoch"),
    (["--epochs", "1"], 1000, "evaluating at the end"),
    (["--epochs", "1", "--eval-every-epochs", "0.25"], 1000, "evaluating every 0.25 epochs"),
    (["--max-steps", "50", "--eval-every-epochs", "2"], 10_000, "evaluating at the end"),
])
def test_the_announced_evaluation_is_the_one_that_happens(argv, examples, note):
    assert resolved(argv, examples).evaluation_note() == note


def test_phases_are_checked_against_the_steps_the_epochs_resolve_to():
    config = config_from_flags(["--epochs", "1", "--warmup-steps", "200"], {})
    with pytest.raises(TrainerError, match=r"--warmup-steps must be in \[0, the 100 steps of "
                                           r"--epochs 1\), got 200"):
        config_module.with_data_size(config, 10_000)
    with pytest.raises(TrainerError, match="--epochs needs the size of the training data"):
        config_module.with_data_size(config, None)


# --- augmentation --------------------------------------------------------------------------------

def test_augment_min_area_defaults_for_small_images_and_needs_augment():
    assert config_from_flags(["--augment"], {}).data.augment_min_area == 0.5
    assert config_from_flags(["--augment", "--augment-min-area", "0.08"],
                             {}).data.augment_min_area == 0.08
    assert "--augment-min-area needs --augment" in error_of(["--augment-min-area", "0.5"])
    for value in ("0", "1.5"):
        assert "--augment-min-area must be in (0, 1]" in error_of(
            ["--augment", "--augment-min-area", value])


# --- --export-best-only --------------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    ([], False),
    (["--export-best-only"], True),
    (["--export_best_only"], True),
    (["--export_best_only=false"], False),
    (["--export_best_only=true"], True),
    (["--export-best-only=0"], False),
    (["--export-best-only", "yes"], True),
])
def test_export_best_only(argv, expected):
    assert config_from_flags(argv, {}).outputs.export_best_only is expected


# --- output directories --------------------------------------------------------------------------

def dirs_of(config) -> tuple[str, str, str]:
    outputs = config.outputs
    return outputs.checkpoint_dir, outputs.tensorboard_dir, outputs.export_dir


def under(root, *parts) -> tuple[str, str, str]:
    kinds = ("checkpoints", "logs", "export")
    return tuple(os.path.join(str(root), *parts, kind) for kind in kinds)


def test_default_output_dirs_are_one_absolute_dir_per_run_under_trainer_output(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_from_flags([], {})
    run = Path(config.outputs.job_dir)
    assert run.parent == Path.cwd() / "trainer-output" and run.name.startswith("cnn-")
    assert dirs_of(config) == under(run)
    assert all(os.path.isabs(d) for d in dirs_of(config))
    assert config.outputs.export_timestamped is True
    assert config.outputs.job_dir_given is False
    assert [origin for _, origin in config.outputs.origins] == ["--job-dir"] * 4
    assert [d for d, _ in config.outputs.origins] == [*dirs_of(config),
                                                      config.outputs.results_dir]
    assert config.outputs.results_dir == str(run / "results")


def job_dir_of(*argv) -> str:
    return config_from_flags(list(argv), {}).outputs.job_dir


def test_the_default_job_dir_is_the_same_for_the_same_run_and_differs_for_another(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    mnist = job_dir_of()
    photos = ("--train-files", "photos", "--eval-files", "photos")
    assert job_dir_of("--max-steps", "50", "--learning-rate", "0.1", "--batch-size", "7") == mnist
    assert job_dir_of(*photos) != mnist
    assert job_dir_of(*photos) == job_dir_of("--train-files", f"{tmp_path}/photos/",
                                             "--eval-files", "elsewhere", "--epochs", "3")
    others = [job_dir_of(*photos, *flags) for flags in (
        ("--model", "cnn_small"), ("--image-height", "32"), ("--image-channels", "3"),
        ("--num-classes", "12"), ("--label-map", "labels.txt"))]
    assert len({mnist, job_dir_of(*photos), *others}) == 7
    assert Path(job_dir_of(*photos, "--model", "resnet20")).name.startswith("resnet20-")
    assert job_dir_of(*photos, "--job-dir", "mine") == str(tmp_path / "mine")


def test_relative_job_dir_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_from_flags(["--job-dir", "jobs/run1"], {})
    assert dirs_of(config) == under(Path.cwd() / "jobs" / "run1")


def test_absolute_job_dir(tmp_path):
    config = config_from_flags([f"--job_dir={tmp_path}"], {})
    assert dirs_of(config) == under(tmp_path)


@pytest.mark.parametrize("environ", [
    {"CLOUD_ML_TRIAL_ID": "4"},
    {"TF_CONFIG": json.dumps({"task": {"trial": "4"}})},
    {"TF_CONFIG": json.dumps({"cluster": {"chief": ["c:1"]},
                              "task": {"type": "chief", "index": 0, "trial": "4"}})},
])
def test_trial_gets_its_own_subdirectory(tmp_path, environ):
    config = config_from_flags(["--bundled-sample", "--job-dir", str(tmp_path)], environ)
    assert config.cluster.role.trial == "4"
    assert dirs_of(config) == under(tmp_path, "4")


def test_default_job_dir_also_gets_the_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_from_flags(["--bundled-sample"], {"CLOUD_ML_TRIAL_ID": "2"})
    run = config_from_flags(["--bundled-sample"], {}).outputs.job_dir
    assert dirs_of(config) == under(run, "2")


@pytest.mark.parametrize("trial, expected", [
    (None, ("gs://bucket/job/checkpoints", "gs://bucket/job/logs", "gs://bucket/job/export")),
    ("5", ("gs://bucket/job/5/checkpoints", "gs://bucket/job/5/logs", "gs://bucket/job/5/export")),
])
def test_gcs_job_dir_is_joined_with_slashes_and_not_made_absolute(trial, expected):
    environ = {"CLOUD_ML_TRIAL_ID": trial} if trial else {}
    config = config_from_flags(["--bundled-sample", "--job-dir", "gs://bucket/job"], environ)
    assert dirs_of(config) == expected


@pytest.mark.parametrize("variable, index", [
    ("AIP_CHECKPOINT_DIR", 0), ("AIP_TENSORBOARD_LOG_DIR", 1), ("AIP_MODEL_DIR", 2)])
def test_aip_variable_overrides_its_own_kind(tmp_path, variable, index):
    environ = {variable: "gs://vertex/out/", "CLOUD_ML_TRIAL_ID": "3"}
    config = config_from_flags(["--bundled-sample", "--job-dir", str(tmp_path)], environ)
    expected = list(under(tmp_path, "3"))
    expected[index] = "gs://vertex/out/"  # used as given: Vertex already makes it per trial
    assert dirs_of(config) == tuple(expected)
    origins = ["--job-dir"] * 3
    origins[index] = variable
    assert config.outputs.origins[:3] == tuple(zip(expected, origins))
    assert config.outputs.export_timestamped is (variable != "AIP_MODEL_DIR")


def test_all_aip_variables_together():
    environ = {"AIP_CHECKPOINT_DIR": "gs://v/ckpt", "AIP_TENSORBOARD_LOG_DIR": "gs://v/tb",
               "AIP_MODEL_DIR": "gs://v/model"}
    config = config_from_flags(["--bundled-sample", "--job-dir", "gs://bucket/job"], environ)
    assert dirs_of(config) == ("gs://v/ckpt", "gs://v/tb", "gs://v/model")
    assert config.outputs.origins == (("gs://v/ckpt", "AIP_CHECKPOINT_DIR"),
                                     ("gs://v/tb", "AIP_TENSORBOARD_LOG_DIR"),
                                     ("gs://v/model", "AIP_MODEL_DIR"),
                                     ("gs://v/results", "AIP_CHECKPOINT_DIR"))
    assert config.outputs.export_timestamped is False


def test_results_go_beside_the_checkpoints_in_vertex_output_directory():
    environ = {"AIP_CHECKPOINT_DIR": "gs://b/out/7/checkpoints/",
               "AIP_MODEL_DIR": "gs://b/out/7/model/", "CLOUD_ML_TRIAL_ID": "7"}
    assert config_from_flags(["--bundled-sample"], environ).outputs.results_dir == \
        "gs://b/out/7/results"


def test_empty_aip_variable_is_ignored(tmp_path):
    config = config_from_flags(["--job-dir", str(tmp_path)], {"AIP_MODEL_DIR": ""})
    assert config.outputs.export_dir == os.path.join(str(tmp_path), "export")
    assert config.outputs.export_timestamped is True


# --- cluster from the environment ----------------------------------------------------------------

def test_cluster_is_resolved_from_environ():
    environ = {"TF_CONFIG": json.dumps({"cluster": {"chief": ["c:1"], "worker": ["w:1"]},
                                        "task": {"type": "worker", "index": 0}})}
    cluster = config_from_flags([], environ).cluster.role
    assert (cluster.task_type, cluster.is_chief, cluster.num_workers) == ("worker", False, 1)


def test_cluster_error_propagates():
    assert "TF_CONFIG" in error_of([], {"TF_CONFIG": "{"})


# --- the entry point, without TensorFlow ---------------------------------------------------------

_WRAPPER = """
import runpy, sys
sys.argv = ['trainer.task'] + sys.argv[1:]
code = 0
try:
    runpy.run_module('trainer.task', run_name='__main__')
except SystemExit as exit:
    code = exit.code
finally:
    print('TF_IMPORTED=' + str('tensorflow' in sys.modules))
sys.exit(code)
"""


def run_entry_point(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CONFIG", "CLUSTER_SPEC", "CLOUD_ML_TRIAL_ID")}
    return subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env=env)


@pytest.mark.parametrize("args, code", [(["--help"], 0), (["--bogus-flag"], 2)])
def test_entry_point_answers_without_importing_tensorflow(args, code):
    result = run_entry_point(*args)
    assert result.returncode == code, result.stderr
    assert result.stdout.splitlines()[-1] == "TF_IMPORTED=False"
    if code == 0:
        assert result.stdout.startswith("usage: vertex-trainer train")
        assert "--learning-rate" in result.stdout
    else:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
        assert "--bogus-flag" in lines[0]


@pytest.mark.parametrize("environ, choice, expected", [
    ({}, "auto", "auto"),
    ({}, "mirrored", "mirrored"),
    ({}, "multi_worker_mirrored", "multi_worker_mirrored"),
    ({"TPU_NAME": "my-tpu"}, "auto", "tpu"),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                               "task": {"type": "worker", "index": 0}})}, "auto",
     "multi_worker_mirrored"),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"]},
                               "task": {"type": "ps", "index": 0}})}, "auto", "parameter_server"),
])
def test_strategy_follows_the_cluster(environ, choice, expected):
    assert config_from_flags(["--distribution-strategy", choice],
                             environ).cluster.strategy.name == expected


def test_tpu_flag_selects_tpu_and_defaults_to_local():
    def tpu(*argv):
        return config_from_flags(list(argv), {}).cluster.strategy.tpu

    assert (tpu("--tpu", "t1"), tpu("--distribution-strategy", "tpu"), tpu()) == ("t1", "local",
                                                                                   None)


@pytest.mark.parametrize("environ, choice, message", [
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                               "task": {"type": "chief", "index": 0}})}, "mirrored",
     "runs on one host, but the cluster has 2 tasks"),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"]},
                               "task": {"type": "chief", "index": 0}})}, "multi_worker_mirrored",
     "cannot run a cluster with parameter servers"),
    ({}, "parameter_server", "needs ps tasks"),
])
def test_a_strategy_that_cannot_run_the_cluster_is_an_error(environ, choice, message):
    with pytest.raises(TrainerError, match=message):
        config_from_flags(["--distribution-strategy", choice], environ)


def test_collective_implementation_only_for_multi_worker():
    with pytest.raises(TrainerError, match="applies only to multi_worker_mirrored"):
        config_from_flags(["--collective-implementation", "ring"], {})
    assert config_from_flags(["--distribution-strategy", "multi_worker_mirrored",
                              "--collective-implementation", "ring"],
                             {}).cluster.strategy.collective == "ring"


REDUCTION_SERVER_JOB = {
    "CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["a:1"], "workerpool1": ["b:1"],
                                            "workerpool2": ["r:1"]},
                                "task": {"type": "workerpool1", "index": 0}}),
    "VERTEX_TRAINER_REDUCTION_SERVER": "true"}


@pytest.mark.parametrize("argv", [[], ["--distribution-strategy", "multi_worker_mirrored"],
                                  ["--collective-implementation", "nccl"]])
def test_reduction_server_runs_multi_worker_mirrored_over_nccl(argv):
    config = config_from_flags(argv, REDUCTION_SERVER_JOB)
    assert (config.cluster.strategy.name, config.cluster.strategy.collective) == (
        "multi_worker_mirrored", "nccl")
    assert dict(config.cluster.role.spec) == {"chief": ("a:1",), "worker": ("b:1",)}


@pytest.mark.parametrize("argv, message", [
    (["--distribution-strategy", "parameter_server"], "cannot use Reduction Server"),
    (["--collective-implementation", "ring"], "ring bypasses Reduction Server"),
])
def test_reduction_server_with_another_strategy_or_ring_is_an_error(argv, message):
    with pytest.raises(TrainerError, match=message):
        config_from_flags(argv, REDUCTION_SERVER_JOB)


def test_integer_flags_accept_whole_numbers_sent_as_doubles():
    # Vertex's discrete parameter values are doubles: --batch_size=64.0 must mean 64.
    assert config_from_flags(["--batch_size=64.0"], {}).model.batch_size == 64
    with pytest.raises(TrainerError, match="expected a whole number, got '64.5'"):
        config_from_flags(["--batch-size", "64.5"], {})
    with pytest.raises(TrainerError, match="invalid int value: 'many'"):
        config_from_flags(["--batch-size", "many"], {})


@pytest.mark.parametrize("environ, argv, answers", [
    ({}, [], dict(votes=False, coordinated=False, evaluates_local_copy=False, global_batch=True,
                  on_tpu=False)),
    ({}, ["--tpu", "t1"], dict(votes=False, coordinated=False, on_tpu=True)),
    (REDUCTION_SERVER_JOB, [], dict(votes=True, coordinated=False, evaluates_local_copy=False,
                                    global_batch=True)),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"]},
                               "task": {"type": "chief", "index": 0}})}, [],
     dict(votes=False, coordinated=True, evaluates_local_copy=True, global_batch=False,
          on_tpu=False)),
])
def test_the_strategy_answers_what_the_loop_asks(environ, argv, answers):
    strategy = config_from_flags(argv, environ).cluster.strategy
    assert {name: getattr(strategy, name) for name in answers} == answers



def test_help_groups_are_the_config_sections_and_each_flag_reaches_its_field():
    from trainer.config import SECTIONS
    from trainer.options import options_of

    groups = {group.title: [a.dest for a in group._group_actions]
              for group in build_parser()._action_groups}
    assert [title for title in groups if title in SECTIONS] == list(SECTIONS)
    config = config_from_flags(["--keep-checkpoints", "9", "--shuffle_buffer=7", "--augment",
                                "--export-best-only", "--evaluator-timeout-secs", "5"], {})
    for title, section in SECTIONS.items():
        assert groups[title] == [option.dest for _, option in options_of(section)]
    assert (config.loop.keep_checkpoints, config.data.shuffle_buffer, config.data.augment,
            config.outputs.export_best_only, config.cluster.evaluator_timeout_secs) == (
        9, 7, True, True, 5.0)
