"""`vertex-trainer batch-predict`: SDK-checked BatchPredictionJob requests, the bodies Vertex then
sends answered by our server, and --local through trainer.predict."""

from __future__ import annotations

import base64

import pytest
from google.cloud.aiplatform_v1 import types

from trainer.cloud import batch_predict
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


def test_local_runs_the_file_list_through_predict(capsys, tmp_path):
    _, model_dir = export_model(tmp_path / "model", class_names=DIGITS)
    paths = []
    for index, pixels in enumerate(images(3)):
        path = tmp_path / "images" / f"{index}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png(pixels))
        paths.append(str(path))
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(paths) + "\n")
    out = tmp_path / "predictions"
    assert batch_predict.main([str(listing), "--local", "--artifact-uri", model_dir,
                               "--output-dir", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for path in paths:
        (line,) = [line for line in lines if line.startswith(path + "  ")]
        assert line.split()[1] in DIGITS
    assert (out / "predictions.png").stat().st_size > 0


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
    assert "--local runs image files through `vertex-trainer predict`" in \
        capsys.readouterr().err
