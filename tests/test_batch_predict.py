"""`vertex-trainer batch-predict`: SDK-checked BatchPredictionJob requests, the bodies Vertex then
sends answered by our server, and --local writing the job's output files."""

from __future__ import annotations

import ast
import base64
import datetime
import json
import re

import pytest
from google.cloud.aiplatform_v1 import types

from trainer.cloud import batch_local, batch_predict
from tests.exports import DIGITS, export_model, images, png
from tests.serving import request, server_thread

EXPORT = ["--artifact-uri", "gs://b/runs/1/model"]


def dry_run(capsys, *argv):
    assert batch_predict.main(["--dry-run", *argv]) == 0, capsys.readouterr().err
    blocks = capsys.readouterr().out.split("\n\n# ")
    found = {}
    for block in blocks:
        header, _, body = block.lstrip("# ").partition("\n")
        if "(aiplatform_v1." in header:
            step, type_name = header.split(". ", 1)[1].rstrip(")").split(" (aiplatform_v1.")
            found[step] = getattr(types, type_name).from_json(body)  # unknown fields raise
    return found


def test_a_file_list_of_images_registers_the_export_and_calls_encoded_image(capsys):
    found = dry_run(capsys, "gs://b/images.txt", *EXPORT, "--output-dir", "gs://b/out",
                    "--machine-type", "n1-highcpu-8", "--replicas", "2", "--max-replicas", "4")
    assert list(found) == ["uploadModel", "batchPredictionJob"]
    model = found["uploadModel"].model
    assert model.artifact_uri == "gs://b/runs/1/model"
    assert model.container_spec.image_uri == \
        "us-docker.pkg.dev/PROJECT/vertex-trainer/serving:latest"
    job = found["batchPredictionJob"]
    assert job.model == "projects/PROJECT/locations/us-central1/models/MODEL_ID"
    assert job.input_config.instances_format == "file-list"
    assert list(job.input_config.gcs_source.uris) == ["gs://b/images.txt"]
    assert job.output_config.gcs_destination.output_uri_prefix == "gs://b/out"
    assert job.output_config.predictions_format == "jsonl"
    resources = job.dedicated_resources
    assert (resources.machine_spec.machine_type, resources.starting_replica_count,
            resources.max_replica_count) == ("n1-highcpu-8", 2, 4)
    assert dict(job.model_parameters) == {"signature_name": "encoded_image"}


def test_jsonl_instances_go_to_an_uploaded_model(capsys):
    found = dry_run(capsys, "gs://b/instances.jsonl", "--model", "42", "--output-dir",
                    "gs://b/out", "--project", "p", "--region", "europe-west4")
    assert list(found) == ["batchPredictionJob"]
    job = found["batchPredictionJob"]
    assert job.model == "projects/p/locations/europe-west4/models/42"
    assert job.input_config.instances_format == "jsonl"
    assert "model_parameters" not in job  # serving_default, the server's default


def test_what_vertex_sends_for_a_file_list_is_answered_by_our_server(tmp_path):
    """Vertex reads each listed file and sends it as {"b64": ...}, with modelParameters as
    "parameters": our server gives it to the encoded_image signature."""
    _, model_dir = export_model(tmp_path / "model", class_names=DIGITS)
    pixels = images(3)
    body = {"instances": [{"b64": base64.b64encode(png(p)).decode()} for p in pixels],
            "parameters": {"signature_name": "encoded_image"}}
    with server_thread(model_dir) as port:
        status, answer = request(port, "POST", "/predict", body)
        assert status == 200, answer
        _, one_by_one = request(port, "POST", "/predict", {
            "signature_name": "encoded_image",
            "instances": [{"image_bytes": {"b64": i["b64"]}} for i in body["instances"]]})
    assert [p["labels"] for p in answer["predictions"]] == \
        [p["labels"] for p in one_by_one["predictions"]]
    assert all(p["labels"] in DIGITS for p in answer["predictions"])


def test_local_writes_the_job_output_with_our_servers_predictions(capsys, tmp_path):
    """--local writes what the job writes: a prediction-<model>-<time> directory under
    --output-dir with JSONL `{"instance": {"b64": ...}, "prediction": ...}` lines, the prediction
    being what the server's encoded_image path returns for the same bytes; a request the server
    refuses (an undecodable image and its batch-mate) is one errors_stats line, not a crash."""
    _, model_dir = export_model(tmp_path / "model", class_names=DIGITS)
    folder = tmp_path / "images"
    folder.mkdir()
    contents = {folder / f"{index}.png": png(pixels) for index, pixels in enumerate(images(4))}
    contents[folder / "bad.png"] = b"not an image"
    for path, data in contents.items():
        path.write_bytes(data)
    listed = [folder / name for name in ("0.png", "1.png", "bad.png", "2.png", "3.png")]
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{path}\n" for path in listed))
    out = tmp_path / "predictions"
    assert batch_predict.main([str(listing), "--local", "--artifact-uri", model_dir,
                               "--output-dir", str(out), "--batch-size", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1].startswith("error: 2 of 5 instances failed")

    (job_dir,) = [path for path in out.iterdir() if path.is_dir()]
    assert re.fullmatch(r"prediction-vertex-trainer-batch-\d{4}_\d\d_\d\dT\d\d_\d\d_\d\d_\d{3}Z",
                        job_dir.name)
    assert sorted(p.name for p in job_dir.iterdir()) == [
        "prediction.errors_stats-00000-of-00001", "prediction.results-00000-of-00001"]
    lines = [json.loads(line) for line in
             (job_dir / "prediction.results-00000-of-00001").read_text().splitlines()]
    predicted = [folder / name for name in ("0.png", "1.png", "3.png")]  # bad.png took 2.png
    assert [set(line) for line in lines] == [{"instance", "prediction"}] * 3
    assert [line["instance"] for line in lines] == \
        [{"b64": base64.b64encode(contents[path]).decode()} for path in predicted]
    with server_thread(model_dir) as port:
        for line in lines:
            status, answer = request(port, "POST", "/predict", {
                "signature_name": "encoded_image",
                "instances": [{"image_bytes": line["instance"]}]})
            assert status == 200, answer
            assert line["prediction"] == answer["predictions"][0]
    assert all(line["prediction"]["labels"] in DIGITS for line in lines)

    (stats,) = (job_dir / "prediction.errors_stats-00000-of-00001").read_text().splitlines()
    message, count = ast.literal_eval(stats)
    assert count == 2
    assert "Non-OK result 400" in message and "cannot read the image's size" in message
    # predict's human-facing outputs, for the predicted images
    for path in predicted:
        assert any(line.startswith(f"{path}  ") for line in captured.out.splitlines())
    assert (out / "predictions.png").stat().st_size > 0


def test_the_job_output_directory_is_named_as_vertex_names_it():
    created = datetime.datetime(2025, 3, 25, 6, 28, 43, 123456, tzinfo=datetime.timezone.utc)
    assert batch_local.directory_name("cnn", created) == "prediction-cnn-2025_03_25T06_28_43_123Z"
    assert batch_local.errors_stats({"it's bad": 3}) == "(\"it's bad\", 3)\n"


@pytest.mark.parametrize("argv, message", [
    (["gs://b/i.txt", "--output-dir", "gs://b/o"],
     "give the model as --model (uploaded) or --artifact-uri (an export), one of them"),
    (["gs://b/i.txt", "--output-dir", "gs://b/o", *EXPORT, "--model", "1"], "one of them"),
    (["gs://b/i.txt", "--output-dir", "gs://b/o", "--model", "my-model"],
     "--model must be a model ID or projects/P/locations/R/models/ID"),
    (["/tmp/i.txt", "--output-dir", "gs://b/o", *EXPORT],
     "INPUT /tmp/i.txt is a path on this machine; a batch prediction job reads gs://"),
    (["gs://b/i.txt", "--output-dir", "/tmp/o", *EXPORT], "--output-dir must be a gs:// path"),
    (["gs://b/i.parquet", "--output-dir", "gs://b/o", *EXPORT],
     "cannot tell its format from the suffix; give --instances-format"),
    (["gs://b/i.txt", "--output-dir", "gs://b/o", *EXPORT, "--batch-size", "1000"],
     "--batch-size must be in [1, 256]"),
    (["gs://b/i.txt", "--output-dir", "gs://b/o", *EXPORT, "--replicas", "3"],
     "--replicas (3) must be >= 1 and <= --max-replicas (1)"),
    (["gs://b/i.txt", "--output-dir", "gs://b/o", "--artifact-uri", "/local/model"],
     "--artifact-uri must be a gs:// directory"),
])
def test_bad_batch_predictions_are_one_line_errors(capsys, argv, message):
    assert batch_predict.main(["--dry-run", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_local_refuses_jsonl_instances(capsys, tmp_path):
    assert batch_predict.main([str(tmp_path / "x.jsonl"), "--local", "--artifact-uri",
                               str(tmp_path), "--output-dir", str(tmp_path)]) == 2
    assert "--local runs a file list of images; JSONL instances run on Vertex" in \
        capsys.readouterr().err
