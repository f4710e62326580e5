"""trainer/memory.py and the models' footprints: a run that cannot fit in this machine's memory is
refused up front with the numbers (issue 22, row 8: `--batch-size 100000000` grew until the
kernel killed it, `--image-height 20000 --image-width 20000` was a ResourceExhaustedError
traceback)."""

import math

import pytest

from tests.conftest import run_task
from tests.image_data import make_image_set
from tests.test_training import one_line_error
from trainer import memory
from trainer.models import MODELS, build_model

GB = 10 ** 9


def layer_outputs(model) -> int:
    """Values per example the built model's layers output (dropout left out, nested models
    walked): what a footprint's activations count."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += layer_outputs(layer)
        elif not isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout)):
            outputs = layer.output if isinstance(layer.output, list) else [layer.output]
            total += sum(math.prod(output.shape[1:]) for output in outputs)
    return total


@pytest.mark.parametrize("name", ["dnn", "cnn_small", "cnn", "cnn_bn", "resnet20", "resnet56"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (33, 47, 3)])
def test_a_footprint_is_exactly_the_built_models(name, shape):
    model = build_model(name, shape, 7, MODELS[name].dropout)
    footprint = MODELS[name].footprint(shape, 7)
    assert (footprint.weights, footprint.activations) == (model.count_params(),
                                                          layer_outputs(model))


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_v2_b0", "resnet50"])
def test_a_backbones_footprint_is_a_close_floor(name):
    model = build_model(name, (64, 96, 1), 7, 0.2)
    footprint = MODELS[name].footprint((64, 96, 1), 7)
    assert footprint.weights == model.count_params()
    assert 0.95 * layer_outputs(model) <= footprint.activations <= layer_outputs(model)


def write(root, files: dict) -> str:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return str(root)


MEMINFO = {"proc/meminfo": "MemTotal:       24683784 kB\nMemAvailable:   21785868 kB\n"}


def test_the_room_is_memavailable_without_a_cgroup_limit(tmp_path):
    root = write(tmp_path, {**MEMINFO, "proc/self/cgroup": "4:memory:/\n0::/\n",
                            "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
                            "sys/fs/cgroup/memory/memory.usage_in_bytes": "10934910976\n"})
    assert memory.room(root) == memory.Room(21785868 * 1024, "MemAvailable in /proc/meminfo")


def test_the_room_under_a_cgroup_v2_limit_counts_droppable_cache_as_free(tmp_path):
    root = write(tmp_path, {**MEMINFO, "proc/self/cgroup": "0::/job/trainer\n",
                            "sys/fs/cgroup/job/memory.max": f"{4 * GB}\n",
                            "sys/fs/cgroup/job/memory.current": f"{GB}\n",
                            "sys/fs/cgroup/job/memory.stat": f"anon 1\ninactive_file {GB // 2}\n",
                            "sys/fs/cgroup/job/trainer/memory.max": "max\n"})
    assert memory.room(root) == memory.Room(
        int(3.5 * GB), "the room under the memory limit of cgroup /sys/fs/cgroup/job")


def test_a_cgroup_v1_limit_is_found_where_the_container_mounts_it(tmp_path):
    # Inside a container /proc/self/cgroup names the host's path; the mount is its root.
    root = write(tmp_path, {**MEMINFO, "proc/self/cgroup": "4:memory:/docker/0123abcd\n",
                            "sys/fs/cgroup/memory/memory.limit_in_bytes": f"{2 * GB}\n",
                            "sys/fs/cgroup/memory/memory.usage_in_bytes": f"{GB}\n"})
    assert memory.room(root) == memory.Room(
        GB, "the room under the memory limit of cgroup /sys/fs/cgroup/memory")


def test_no_proc_means_no_check(tmp_path):
    assert memory.room(str(tmp_path)) is None


def problem(model="cnn", shape=(28, 28, 1), batch=100, eval_batch=100, room=20 * GB,
            classes=10):
    need = memory.training_need(model, shape, classes, "adam", False, False)
    return memory.problem(need, memory.Room(room, "MemAvailable in /proc/meminfo"), model=model,
                          image_shape=shape, num_classes=classes, batch=batch,
                          eval_batch=eval_batch)


def test_the_defaults_fit_and_the_floor_counts_weights_slots_and_activations():
    assert problem() is None
    need = memory.training_need("cnn", (28, 28, 1), 10, "adam", False, False)
    # Weights, gradients and Adam's two slots; per example the image, the next one and the
    # activations, in float32.
    assert need.state == 4 * 4 * 3_274_634
    assert need.per_example == 4 * (2 * 784 + 51_210)
    averaged = memory.training_need("cnn", (28, 28, 1), 10, "sgd", True, True)
    assert (averaged.state, averaged.per_example) == (4 * 3 * 3_274_634, 8 * 784 + 2 * 51_210)


def test_a_batch_that_cannot_fit_names_how_many_would():
    assert problem(batch=100_000_000) == (
        "--batch-size 100,000,000 cannot fit in this machine's memory: a training step of --model "
        "cnn on 28 x 28 x 1 images holds at least 21,111 GB (0.2 MB per example and 52.4 MB of "
        "weights and optimizer state), more than the 20.0 GB this process can get (MemAvailable in "
        "/proc/meminfo); at most 94,488 examples fit")
    assert problem(batch=94_488) is None and problem(batch=94_489) is not None


def test_images_no_machine_could_train_name_the_model_and_the_sizes():
    assert problem(shape=(20_000, 20_000, 1)) == (
        "--model cnn on 20,000 x 20,000 x 1 images (--image-height/--image-width) with 10 classes "
        "cannot fit in this machine's memory: its 1,638,400,063,370 weights with their gradients "
        "and optimizer state take 26,214 GB and one training example takes 106 GB, more than the "
        "20.0 GB this process can get (MemAvailable in /proc/meminfo); use smaller images, fewer "
        "classes or another --model")
    # A backbone's weights do not grow with the image, its activations do.
    assert "one training example takes 32.1 GB" in problem("efficientnet_v2_b0",
                                                          (5000, 5000, 3))


def test_on_an_accelerator_only_the_input_pipeline_is_counted_on_the_host():
    # The weights, their state and the activations are in device memory, not seen here.
    need = memory.training_need("resnet50", (224, 224, 3), 10, "adam", False, True,
                                on_accelerator=True)
    assert (need.state, need.per_example) == (0, 2 * 4 * 224 * 224 * 3)
    assert memory.problem(need, memory.Room(20 * GB, "MemAvailable in /proc/meminfo"),
                          model="resnet50", image_shape=(224, 224, 3), num_classes=10,
                          batch=1024, eval_batch=1024) is None
    assert memory.problem(need, memory.Room(GB, "MemAvailable in /proc/meminfo"),
                          model="resnet50", image_shape=(224, 224, 3), num_classes=10,
                          batch=1024, eval_batch=100).startswith(
        "--batch-size 1,024 cannot fit in this machine's memory: a training step of --model "
        "resnet50 on 224 x 224 x 3 images holds at least 1.2 GB (1.2 MB per example in the input "
        "pipeline), more than the 1.0 GB")


def test_an_eval_batch_is_checked_for_its_images():
    assert problem(eval_batch=10_000_000).startswith(
        "--eval-batch-size 10,000,000 cannot fit in this machine's memory: its images alone take "
        "62.7 GB (this batch and the next)")


def test_the_trainer_refuses_a_batch_that_cannot_fit_before_building_anything(tmp_path):
    result = run_task("--batch-size", "100000000", "--job-dir", str(tmp_path / "job"))
    one_line_error(result, 2, "--batch-size 100,000,000 cannot fit in this machine's memory",
                   "examples fit")
    assert not (tmp_path / "job" / "checkpoints").exists() or not any(
        (tmp_path / "job" / "checkpoints").glob("ckpt-*"))


def test_the_trainer_refuses_images_no_machine_could_train(tmp_path):
    images = make_image_set(tmp_path / "images", train=20, evaluation=0, test=0)
    result = run_task("--train-files", str(images.train_dir), "--eval-files",
                      str(images.train_dir), "--image-height", "20000", "--image-width", "20000",
                      "--job-dir", str(tmp_path / "job"))
    one_line_error(result, 2, "--model cnn on 20,000 x 20,000 x 1 images", "cannot fit in this "
                   "machine's memory", "weights with their gradients and optimizer state take "
                   "26,214 GB")
