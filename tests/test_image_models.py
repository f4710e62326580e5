"""The ResNets and keras.applications backbones: training, export, fine-tuning, warm starts."""

import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, synthetic_images
from trainer import models, task
from trainer.config import config_from_flags
from trainer.errors import TrainerError
from trainer.models import applications
from trainer.warm_start import warm_start

SHAPE = (32, 32, 3)
# resnet56 is resnet20 with more blocks: test_models builds it.
NEW_MODELS = ["resnet20", "mobilenet_v3_small", "efficientnet_v2_b0", "resnet50"]


@pytest.fixture(scope="session")
def rgb_dataset(tmp_path_factory):
    """(train glob, eval glob) of 32x32 RGB raw-pixel records, 4 classes."""
    from trainer.tools.prepare_mnist import write_shards

    directory = tmp_path_factory.mktemp("rgb")
    for prefix, count, seed in (("train", 128, 1), ("eval", 32, 2)):
        images, labels = synthetic_images(count, seed, shape=SHAPE, num_classes=4)
        write_shards(images, labels, str(directory), prefix, 1, "", progress=False)
    return str(directory / "train-*"), str(directory / "eval-*")


def flags(rgb_dataset, job_dir, model, *extra):
    return ["--train-files", rgb_dataset[0], "--eval-files", rgb_dataset[1], "--job-dir",
            str(job_dir), "--model", model, "--image-height", "32", "--image-width", "32",
            "--image-channels", "3", "--num-classes", "4", "--batch-size", "8", "--seed", "3",
            "--log-every-steps", "2", *extra]


def restored(model_name, checkpoint, **build):
    model = models.build_model(model_name, SHAPE, 4, models.MODELS[model_name].dropout, **build)
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    return model


@pytest.mark.parametrize("name", NEW_MODELS)
def test_each_model_trains_and_exports_with_the_three_signatures(rgb_dataset, tmp_path, name):
    result = task.run(config_from_flags(flags(rgb_dataset, tmp_path, name, "--max-steps", "2",
                                              "--eval-every-steps", "2"), {}))
    assert result.step == 2 and 0 <= result.metrics["accuracy"] <= 1
    model = restored(name, tf.train.latest_checkpoint(str(tmp_path / "checkpoints")))
    pixels = np.random.default_rng(0).integers(0, 256, (3, *SHAPE), dtype=np.uint8)
    scaled = pixels.astype(np.float32) / 255.0
    expected = tf.nn.softmax(model(scaled, training=False)).numpy()
    loaded = tf.saved_model.load(result.export_path)
    served = loaded.signatures["serving_default"](image=tf.constant(scaled))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-4)
    encoded = loaded.signatures["encoded_image"](
        image_bytes=tf.constant([tf.io.encode_png(p).numpy() for p in pixels]))
    np.testing.assert_allclose(encoded["probabilities"].numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v3_small"])
def test_chief_and_worker_train_a_new_model_in_sync(rgb_dataset, tmp_path, name):
    command = [sys.executable, "-m", "trainer.tools.local_cluster", "--workers", "1", "--timeout", "240",
               "--", *flags(rgb_dataset, tmp_path / "job", name, "--max-steps", "4",
                            "--eval-every-steps", "4", "--lr-schedule", "cosine",
                            "--warmup-steps", "1", "--ema-decay", "0.9")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    # Trainable weights are all-reduced; BatchNorm's moving statistics, which each replica
    # updates from its own batches, are averaged before every evaluation and checkpoint: the
    # digests of all weights, statistics included, are equal.
    finals = {task_name: re.search(rf"\[{task_name}\] .*done at step 4: (accuracy \S+).*"
                                   r"\(weights (\w+)\)", result.stdout).groups()
              for task_name in ("chief-0", "worker-0")}
    assert finals["chief-0"] == finals["worker-0"]
    assert len(list((tmp_path / "job" / "export").iterdir())) == 1


def test_a_backbone_trained_from_scratch_predicts_alike_in_inference_mode_within_60_steps():
    """MobileNetV3's depthwise layers output variances of 1e-5-1e-2, far below the moving
    variance's usual start of 1, which momentum 0.99 kept for hundreds of steps: inference
    mode then squeezed them to nothing and predicted one class for every image."""
    from trainer import loop

    images, labels = synthetic_images(64, 1, shape=SHAPE, num_classes=4)
    images = images.astype(np.float32) / 255.0
    model = models.build_model("mobilenet_v3_small", SHAPE, 4, 0.0)
    steps = loop.StepFunctions(tf.distribute.get_strategy(), model,
                               models.build_optimizer("adam", 0.001), 16)
    batches = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    steps.train(iter(batches.repeat().batch(16)), tf.constant(60, tf.int64))
    trained = np.argmax(model(images, training=True), axis=-1)
    inferred = np.argmax(model(images, training=False), axis=-1)
    assert np.mean(trained == labels) > 0.9  # it learned: the batch statistics work
    assert len(set(inferred)) == 4 and np.mean(inferred == trained) > 0.9


def backbone_weights(model):
    return [v.numpy() for v in applications.backbone_of(model).trainable_variables]


def test_fine_tuning_keeps_the_backbone_frozen_until_the_given_step(rgb_dataset, tmp_path):
    import keras

    keras.utils.set_random_seed(11)
    source = models.build_model("mobilenet_v3_small", SHAPE, 4, 0.2)
    weights_file = str(tmp_path / "backbone.weights.h5")
    applications.backbone_of(source).save_weights(weights_file)
    pretrained = backbone_weights(source)

    task.run(config_from_flags(flags(
        rgb_dataset, tmp_path / "job", "mobilenet_v3_small", "--max-steps", "5",
        "--eval-every-steps", "5", "--checkpoint-every-steps", "1",
        "--pretrained-weights", weights_file, "--freeze-backbone-steps", "3",
        "--fine-tune-learning-rate", "0.01"), {}))
    checkpoints = tmp_path / "job" / "checkpoints"
    at = {step: restored("mobilenet_v3_small", str(checkpoints / f"ckpt-{step}"))
          for step in (3, 5)}
    for before, after in zip(pretrained, backbone_weights(at[3])):
        np.testing.assert_array_equal(before, after)
    head_kernel = source.get_layer("logits").kernel.numpy()
    assert not np.array_equal(at[3].get_layer("logits").kernel.numpy(), head_kernel)
    changed = [not np.array_equal(b, a) for b, a in zip(pretrained, backbone_weights(at[5]))]
    assert sum(changed) > len(changed) // 2


def test_a_weights_file_of_another_backbone_is_refused_naming_a_layer(tmp_path):
    other = models.build_model("efficientnet_v2_b0", SHAPE, 4, 0.2)
    path = str(tmp_path / "other.weights.h5")
    applications.backbone_of(other).save_weights(path)
    with pytest.raises(TrainerError, match=r"^--pretrained-weights: .*other\.weights\.h5 does "
                                           r"not fit the backbone: its layer \w+ expects"):
        models.build_model("mobilenet_v3_small", SHAPE, 4, 0.2, weights=path)


def test_warm_start_loads_the_variables_that_match_and_skips_a_new_head(tmp_path):
    source = models.build_model("resnet20", SHAPE, 4, 0.0)
    tf.train.Checkpoint(model=source).write(str(tmp_path / "ckpt-7"))
    target = models.build_model("resnet20", SHAPE, 6, 0.0)
    loaded = warm_start(target, str(tmp_path / "ckpt-7"))
    assert "logits/kernel" not in loaded and len(loaded) == len(source.weights) - 2
    for a, b in zip(source.weights[:-2], target.weights[:-2]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    (tmp_path / "empty").mkdir()
    for missing in ("empty", "ckpt-8"):
        with pytest.raises(TrainerError, match=f"--init-checkpoint: no checkpoint at .*{missing};"):
            warm_start(target, str(tmp_path / missing))


def test_init_checkpoint_flag_warm_starts_a_run(rgb_dataset, tmp_path, caplog):
    task.run(config_from_flags(flags(rgb_dataset, tmp_path / "a", "resnet20", "--max-steps",
                                     "2", "--eval-every-steps", "2"), {}))
    with caplog.at_level("INFO"):
        result = task.run(config_from_flags(flags(
            rgb_dataset, tmp_path / "b", "resnet20", "--max-steps", "2", "--eval-every-steps",
            "2", "--init-checkpoint", str(tmp_path / "a" / "checkpoints")), {}))
    assert result.step == 2
    assert re.search(r"warm start from .*ckpt-2: loaded 97 variables: .*logits/kernel",
                     caplog.text)
