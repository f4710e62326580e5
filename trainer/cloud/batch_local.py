"""A Vertex BatchPredictionJob over a file list, rehearsed on this machine: `batch-predict --local`.

What the job does with a file-list input on our serving image, and this module does here: each
listed file becomes the instance {"b64": <its bytes in base64>} (InstanceConfig, aiplatform_v1);
instances go to the server in requests of manualBatchTuningParameters.batchSize, with the job's
modelParameters as the request's "parameters"; under outputConfig.gcsDestination.outputUriPrefix
the job makes a directory `prediction-<model display name>-<create time>` (the time spelt
2025_03_25T06_28_43_123Z in the paths jobs write) holding

    prediction.results-00000-of-00001        JSONL, {"instance": ..., "prediction": ...} per
                                             predicted instance (PredictionResult)
    prediction.errors_stats-00000-of-00001   when a request failed: one line per distinct error,
                                             the Python repr of (message, failed instances)

(Vertex may split either into more shards, -00000-of-0000N ...; here there is one of each.)
The requests are answered by our server's own Predictor in this process, built with the serving
image's defaults (runtime, --max-instances, --max-request-bytes, image bounds), so a prediction
is byte for byte what the server returns, and a request the server refuses fails here as on
Vertex: every instance of that request, not only the bad one.
"""

from __future__ import annotations

import base64
import collections
import datetime
import json
from dataclasses import dataclass
from typing import Mapping, Sequence

from trainer.errors import TrainerError, short_reason

RESULTS_FILE = "prediction.results-00000-of-00001"
ERRORS_FILE = "prediction.errors_stats-00000-of-00001"


def directory_name(model_display_name: str, created: datetime.datetime) -> str:
    """`prediction-<model display name>-<job create time>`, the time in UTC to milliseconds."""
    utc = created.astimezone(datetime.timezone.utc)
    return f"prediction-{model_display_name}-{utc:%Y_%m_%dT%H_%M_%S}_{utc.microsecond // 1000:03d}Z"


def instance(content: bytes) -> dict:
    """A listed file as the job sends it."""
    return {"b64": base64.b64encode(content).decode("ascii")}


def request_body(instances: Sequence[dict], parameters: Mapping | None) -> bytes:
    body = {"instances": list(instances)}
    if parameters:
        body["parameters"] = dict(parameters)
    return json.dumps(body).encode()


def result_line(sent: dict, prediction) -> str:
    return json.dumps({"instance": sent, "prediction": prediction}) + "\n"


def failure(status: int, response: bytes) -> str:
    """A failed request in the words of the job's errors_stats lines."""
    return (f"Post request fails. Cannot get predictions. Error: Non-OK result {status} "
            f"({response.decode('utf-8', 'replace')}) from server.")


def errors_stats(failed: Mapping[str, int]) -> str:
    return "".join(f"{(message, count)!r}\n" for message, count in failed.items())


def answer(predictor, body: bytes, max_request_bytes: int) -> tuple[int, bytes]:
    """(HTTP status, response body) our server's app gives this request body."""
    from starlette.responses import JSONResponse

    from trainer import serve

    try:
        if len(body) > max_request_bytes:
            raise serve.BadRequest(serve.too_large(max_request_bytes))
        response = JSONResponse(predictor.predict(body))
    except serve.BadRequest as err:
        response = JSONResponse({"error": str(err)}, status_code=400)
    except Exception as err:  # the app's 500: a failure inside the model
        response = JSONResponse({"error": f"internal error: {short_reason(err)}"},
                                status_code=500)
    return response.status_code, bytes(response.body)


@dataclass
class Outcome:
    directory: str  # the job's output directory under --output-dir
    predicted: list[str]  # files with a prediction, in input order
    failed: dict[str, list[str]]  # error line -> the files of the requests that failed so


def run(files: Sequence[str], model_dir: str, output_dir: str, model_display_name: str,
        batch_size: int, parameters: Mapping | None,
        created: datetime.datetime | None = None) -> Outcome:
    """Predicts `files` as the job would and writes its output files; returns what happened."""
    import tensorflow as tf

    from trainer import serve, storage
    from trainer.results import write_whole
    from trainer.serving import files as model_files

    for path in files:
        if not model_files.exists(path):
            raise TrainerError(f"INPUT: the listed file {path} does not exist")
    server = serve.build_parser({}).parse_args(["--model-dir", model_dir])
    predictor = serve.build_predictor(server)
    directory = storage.join(output_dir, directory_name(
        model_display_name, created or datetime.datetime.now(datetime.timezone.utc)))
    storage.ensure_writable_dir(directory, "--output-dir")
    predicted, failed = [], collections.defaultdict(list)
    try:
        with tf.io.gfile.GFile(storage.join(directory, RESULTS_FILE), "w") as results:
            for start in range(0, len(files), batch_size):
                batch = files[start:start + batch_size]
                try:
                    sent = [instance(model_files.read(path)) for path in batch]
                except model_files.FileError as err:
                    raise TrainerError(f"INPUT: {err}") from None
                status, response = answer(predictor, request_body(sent, parameters),
                                          server.max_request_bytes)
                if status != 200:
                    failed[failure(status, response)] += batch
                    continue
                for one, prediction in zip(sent, json.loads(response)["predictions"]):
                    results.write(result_line(one, prediction))
                predicted += batch
    finally:
        predictor.close()
    if failed:
        write_whole(storage.join(directory, ERRORS_FILE),
                    errors_stats({message: len(paths) for message, paths in failed.items()}))
    return Outcome(directory, predicted, dict(failed))
