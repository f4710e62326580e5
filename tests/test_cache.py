"""--cache memory|disk (issue 23 item 8): decoded images kept after their first read, sized up
front, still shuffled and augmented anew each epoch."""

import hashlib
import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import FP32, REPO
from tests.image_data import make_image_set
from trainer import data, task
from trainer.cli import UsageError
from trainer.config import config_from_flags
from trainer.data import cache, images
from trainer.errors import TrainerError


def fake_source(flag, size, shape=(32, 32, 3), raw=False, key="abc"):
    return SimpleNamespace(flag=flag, size=size, image_shape=shape, parses_batches=raw,
                           fingerprint=lambda: key)


# --- sizing, up front (no TensorFlow) ------------------------------------------------------------

def test_memory_is_sized_per_input_pipeline_and_what_does_not_fit_is_one_line(tmp_path):
    train, evaluation = fake_source("--train-files", 60_000), fake_source("--eval-files", 10_001)
    chosen = cache.plan("memory", [train, evaluation], job_dir=str(tmp_path), pipelines=2,
                        memory=lambda: 1 << 30)
    assert chosen.covers(train) and chosen.covers(evaluation)
    assert not chosen.covers(fake_source("--test-files", 5))
    assert chosen.note == ("--cache memory: 30,000 --train-files + 5,001 --eval-files images of "
                           "32x32x3 (this input pipeline's share of 2) kept decoded after their "
                           "first read, about 136.7 MiB of 1.0 GiB available")
    assert chosen.shuffle_buffer(train, 10_000) == 60_000  # references, not copies
    with pytest.raises(TrainerError) as raised:
        cache.plan("memory", [train, evaluation], job_dir=str(tmp_path), pipelines=1,
                   memory=lambda: 300 << 20)
    assert str(raised.value) == (
        "--cache memory: 60,000 --train-files + 10,001 --eval-files images of 32x32x3 need about "
        "273.4 MiB as uint8 (plus 1,024 bytes each), more than 80% of the 300.0 MiB of memory "
        "available; use --cache disk, smaller --image-height/--image-width, or no --cache")


def test_raw_pixel_records_are_not_cached_and_no_flag_means_no_cache(tmp_path):
    raw = fake_source("--train-files", 100, raw=True)
    assert cache.plan(None, [raw], job_dir=str(tmp_path), pipelines=1) is None
    chosen = cache.plan("disk", [raw], job_dir=str(tmp_path), pipelines=1)
    assert not chosen.covers(raw)
    assert chosen.note == ("--cache disk: nothing to cache (--train-files hold raw pixels, "
                           "which need no decoding)")


def test_available_memory_is_the_lower_of_the_machine_and_the_container_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable:    2000 kB\n")
    assert cache.available_memory(str(meminfo), str(tmp_path / "none")) == 2000 * 1024
    (tmp_path / "memory.max").write_text("1048576\n")
    (tmp_path / "memory.current").write_text("524288\n")
    assert cache.available_memory(str(meminfo), str(tmp_path)) == 524288
    (tmp_path / "memory.max").write_text("max\n")
    assert cache.available_memory(str(meminfo), str(tmp_path)) == 2000 * 1024


def test_a_disk_cache_lives_under_a_local_job_dir_else_in_a_local_temporary_directory():
    assert cache.disk_root("/jobs/a") == "/jobs/a/cache"
    for remote in ("gs://bucket/job", "/gcs/bucket/job"):
        assert cache.disk_root(remote).startswith(
            os.path.join(tempfile.gettempdir(), "vertex-trainer-cache", ""))
    assert cache.disk_root("gs://bucket/a") != cache.disk_root("gs://bucket/b")


def test_a_disk_cache_is_keyed_by_its_data_and_cleared_of_a_killed_runs_leftovers(tmp_path):
    source = fake_source("--train-files", 10, key="new")
    stale = tmp_path / "cache" / "old"
    stale.mkdir(parents=True)
    (stale / "pipeline-0-of-1.index").write_bytes(b"x")
    chosen = cache.plan("disk", [source], job_dir=str(tmp_path), pipelines=1)
    assert not stale.exists()  # the data changed: its cache can never be read again
    folder = tmp_path / "cache" / "new"
    assert folder.is_dir()
    for leftover in ("pipeline-0-of-1_0.lockfile",
                     "pipeline-0-of-1_0.data-00000-of-00001.tempstate123"):
        (folder / leftover).write_bytes(b"")
    (folder / "pipeline-1-of-2_0.lockfile").write_bytes(b"")  # another pipeline's: kept
    assert chosen.target(source, None) == str(folder / "pipeline-0-of-1")
    assert sorted(p.name for p in folder.iterdir()) == ["pipeline-1-of-2_0.lockfile"]
    assert chosen.shuffle_buffer(source, 4) == 4
    with pytest.raises(TrainerError, match=r"^--cache disk: 10 --train-files images of 32x32x3 "
                                           r"need about 40.0 KiB in .*, which has 1.0 KiB free"):
        cache.plan("disk", [source], job_dir=str(tmp_path), pipelines=1,
                   free_disk=lambda path: 1024)


# --- the pipeline -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_image_set(tmp_path_factory.mktemp("cache-photos"), train=60, evaluation=20,
                          test=0, seed=3)


def digest(image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def test_cached_training_reads_each_image_once_and_reshuffles_every_epoch(photos, tmp_path):
    folder = tmp_path / "train"
    os.rename(photos.train_dir, folder)
    try:
        source = data.inspect_input((str(folder),), "--train-files", (24, 24, 3), None)
        # What each image is when evaluated, rounded to uint8: what the cache must keep.
        expected = {digest(np.round(images.eval_image(tf.io.read_file(uri), (24, 24, 3))
                                    .numpy() * 255)) for uri in source.uris}
        chosen = cache.plan("memory", [source], job_dir=str(tmp_path), pipelines=1)
        dataset = data.make_dataset(source, batch_size=20, training=True, seed=5, cache=chosen)
        batches = iter(dataset)
        first = [next(batches) for _ in range(3)]  # one epoch: the cache is complete
    finally:
        os.rename(folder, photos.train_dir)
    # The files are gone from where the source lists them: later epochs read the cache.
    epochs = [first] + [[next(batches) for _ in range(3)] for _ in range(3)]
    orders = [[digest(image) for images_, _ in epoch for image in images_.numpy()]
              for epoch in epochs]
    assert all(sorted(order) == sorted(orders[0]) for order in orders)  # the same 60 images
    assert len(set(orders[0])) == 60 and len({tuple(order) for order in orders}) == 4
    assert {digest(np.round(image * 255)) for images_, _ in first
            for image in images_.numpy()} == expected


def test_cached_augmentation_varies_per_epoch_within_the_cached_image(photos, tmp_path):
    source = data.inspect_input((str(photos.train_dir),), "--train-files", (24, 24, 3), None)
    chosen = cache.plan("memory", [source], job_dir=str(tmp_path), pipelines=1)
    dataset = data.make_dataset(source, batch_size=60, training=True, seed=5, cache=chosen,
                                augment=True)
    first, second = (images_.numpy() for images_, _ in dataset.take(2))
    assert first.shape == (60, 24, 24, 3) and first.dtype == np.float32
    assert 0 <= first.min() and first.max() <= 1
    # The same 60 images, augmented anew: only a crop of the whole image with the same flip in
    # both epochs (likely enough with crops of 50-100% of a 24x24 image) repeats one.
    repeated = {digest(i) for i in first} & {digest(i) for i in second}
    assert len(repeated) <= 6, len(repeated)


@pytest.mark.parametrize("min_area", [0.08, 0.5])
def test_batched_crop_windows_are_drawn_as_sample_distorted_bounding_box_draws_them(min_area):
    height, width, count = 24, 32, 4000
    y0, x0, h, w = (v.numpy() for v in images._random_windows(count, height, width, min_area))
    assert (y0 >= 0).all() and (x0 >= 0).all()
    assert (y0 + h <= height).all() and (x0 + w <= width).all()
    reference = [tf.image.sample_distorted_bounding_box(
        [height, width, 3], tf.zeros([1, 0, 4]), min_object_covered=0.0,
        aspect_ratio_range=images._ASPECT_RANGE, area_range=(min_area, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)[1].numpy()[:2]
        for _ in range(1000)]
    ref_h, ref_w = np.array(reference, float).T
    for ours, theirs in ((h * w / (height * width), ref_h * ref_w / (height * width)),
                         (w / h, ref_w / ref_h)):
        assert abs(ours.mean() - theirs.mean()) < 0.03
        assert abs(np.median(ours) - np.median(theirs)) < 0.05


def test_a_disk_cache_killed_while_written_is_rewritten_by_the_next_run(photos, tmp_path):
    script = (
        "import os, sys\n"
        "from trainer import data\n"
        "from trainer.data import cache\n"
        f"source = data.inspect_input(({str(photos.train_dir)!r},), '--train-files', "
        "(24, 24, 3), None)\n"
        f"chosen = cache.plan('disk', [source], job_dir={str(tmp_path)!r}, pipelines=1)\n"
        "batches = iter(data.make_dataset(source, batch_size=10, training=True, cache=chosen,\n"
        "                                 shuffle_buffer=100))\n"
        "next(batches)\n"
        "os._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    (folder,) = (tmp_path / "cache").iterdir()
    assert any(p.name.endswith(".lockfile") for p in folder.iterdir())
    source = data.inspect_input((str(photos.train_dir),), "--train-files", (24, 24, 3), None)
    chosen = cache.plan("disk", [source], job_dir=str(tmp_path), pipelines=1)
    batches = iter(data.make_dataset(source, batch_size=10, training=True, cache=chosen,
                                     shuffle_buffer=100))
    for _ in range(13):  # past the first epoch: written, then read
        next(batches)
    assert sorted(p.name for p in folder.iterdir()) == ["pipeline-0-of-1.data-00000-of-00001",
                                                        "pipeline-0-of-1.index"]


# --- runs ---------------------------------------------------------------------------------------

def train(photos, job_dir, *flags):
    return task.run(config_from_flags(
        ["--train-files", str(photos.train_dir), "--eval-files", str(photos.eval_dir),
         "--job-dir", str(job_dir), "--image-height", "24", "--image-width", "24",
         "--image-channels", "3", "--model", "dnn", "--batch-size", "20", "--seed", "3",
         "--max-steps", "9", "--eval-every-steps", "9", *FP32, *flags], {}))


def test_a_run_with_a_disk_cache_evaluates_as_without_and_its_rerun_reads_the_cache(photos,
                                                                                 tmp_path):
    cached = train(photos, tmp_path / "cached", "--cache", "disk")
    plain = train(photos, tmp_path / "plain")
    # Cached images are the evaluated ones rounded to uint8: the same model, nearly the same
    # evaluation (the weights differ only by the order of the first epoch's parallel reads).
    assert cached.metrics["accuracy"] == pytest.approx(plain.metrics["accuracy"], abs=0.1)
    written = sorted(p.name for p in (tmp_path / "cached" / "cache").glob("*/*"))
    assert written == sorted(["pipeline-0-of-1.data-00000-of-00001",
                              "pipeline-0-of-1.index"] * 2)  # the training and the eval cache
    again = train(photos, tmp_path / "cached", "--cache", "disk")  # evaluating only
    assert again.metrics == pytest.approx(cached.metrics, abs=1e-6)


def test_cache_flag_errors():
    with pytest.raises(UsageError, match=r"^argument --cache: invalid choice: 'gpu' \(choose "
                                         r"from 'memory', 'disk'\)"):
        config_from_flags(["--cache", "gpu"], {})
    cluster = '{"cluster": {"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"]}, ' \
              '"task": {"type": "chief", "index": 0}}'
    with pytest.raises(TrainerError, match="^--cache is not available with parameter_server"):
        config_from_flags(["--bundled-sample", "--cache", "memory"], {"TF_CONFIG": cluster})


def test_too_little_memory_stops_the_run_before_training(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "available_memory", lambda: 100_000)
    with pytest.raises(TrainerError, match=r"^--cache memory: 60 --train-files \+ 20 "
                                           r"--eval-files images of 24x24x3 need about"):
        train(photos, tmp_path, "--cache", "memory")
    assert not (tmp_path / "checkpoints").exists()  # before anything is written
