"""A Vertex managed image dataset on GCS (the emulator, tests/fake_gcs.py): AIP_DATA_FORMAT=jsonl
with gs:// wildcards for training and validation, a gs:// CSV for --test-files, images read
from gs:// inside tf.data. Loopback only."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import FP32, REPO
from tests.image_data import make_image_set
from tests.test_gcs import gcs  # noqa: F401  (the emulator fixture, started per module)
from tests.test_image_data import served_accuracy


@pytest.fixture(scope="module")
def managed_dataset(gcs, tmp_path_factory):
    """Uploads the images and writes Vertex-style split JSONL files and a test CSV on GCS."""
    root = tmp_path_factory.mktemp("gcs-images")
    images = make_image_set(root / "images", train=64, evaluation=32, test=16, seed=5)
    lines = {"training": [], "validation": [], "test": []}
    for line in images.jsonl.read_text().splitlines():
        item = json.loads(line)
        name = os.path.relpath(item["imageGcsUri"], root)
        item["imageGcsUri"] = f"gs://bkt/{name}"
        lines[item["dataItemResourceLabels"]["aiplatform.googleapis.com/ml_use"]].append(item)
    dataset = root / "dataset"
    dataset.mkdir()
    for use in ("training", "validation"):
        (dataset / f"{use}-00000-of-00001.jsonl").write_text(
            "\n".join(json.dumps(i) for i in lines[use]))
    rows = [f"{i['imageGcsUri']},{i['classificationAnnotation']['displayName']}"
            for i in lines["test"]]
    (dataset / "test.csv").write_text("\n".join(rows) + "\n")
    for folder in ("images/train", "images/eval", "images/test", "dataset"):
        gcs.upload(root / folder, "bkt", folder)
    return images


def test_a_managed_jsonl_dataset_on_gcs_trains_with_no_data_flags(gcs, managed_dataset,
                                                                   tmp_path):
    env = {**os.environ, **gcs.env, "TF_CPP_MIN_LOG_LEVEL": "2",
           "AIP_DATA_FORMAT": "jsonl",
           "AIP_TRAINING_DATA_URI": "gs://bkt/dataset/training-*",
           "AIP_VALIDATION_DATA_URI": "gs://bkt/dataset/validation-*",
           "AIP_TEST_DATA_URI": "gs://bkt/dataset/nothing-here-*",
           "AIP_MODEL_DIR": str(tmp_path / "model")}
    result = subprocess.run(
        [sys.executable, "-m", "trainer.task", *FP32, "--test-files", "gs://bkt/dataset/test.csv",
         "--model", "dnn", "--batch-size", "16", "--max-steps", "20", "--eval-every-steps",
         "20", "--log-every-steps", "10", "--seed", "1", "--job-dir", str(tmp_path / "job")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "data: Vertex managed dataset (AIP_DATA_FORMAT=jsonl) via AIP_TRAINING_DATA_URI, " \
           "AIP_VALIDATION_DATA_URI" in lines[0]
    assert any("64 image(s) listed by 1 manifest(s) from AIP_TRAINING_DATA_URI" in line
               for line in lines)
    assert any("test at step 20" in line and "16 examples" in line for line in lines)
    # The emulator serves a few dozen images a second: the run is short, and the check is that
    # serving the original files reproduces the evaluation exactly.
    accuracy = float(result.stdout.split("done at step 20: accuracy ")[1].split(",")[0])
    assert served_accuracy(str(tmp_path / "model"), managed_dataset.eval_files) == \
        pytest.approx(accuracy, abs=1e-6)
