"""Where the training data comes from: file flags, a Vertex managed dataset, or the bundled sample.

Pure Python (no TensorFlow), so flag errors answer at once. A custom job given a managed dataset
gets `AIP_DATA_FORMAT` (jsonl | csv | bigquery) and `AIP_TRAINING_DATA_URI`,
`AIP_VALIDATION_DATA_URI`, `AIP_TEST_DATA_URI` (gs:// wildcards such as
gs://bucket/dataset-…/training-*); those are the defaults of --train-files, --eval-files and
--test-files, and each flag given wins over its variable. With no data at all the bundled MNIST
sample trains, except inside a Vertex job, where that would silently train the wrong model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from trainer.errors import TrainerError

FORMATS = ("jsonl", "csv")
# flag -> the variable Vertex sets for it
URI_VARIABLES = {"--train-files": "AIP_TRAINING_DATA_URI",
                 "--eval-files": "AIP_VALIDATION_DATA_URI",
                 "--test-files": "AIP_TEST_DATA_URI"}
# Set by Vertex for every custom or tuning job (the AIP_* locations only when an output
# directory is configured), and by this package's local tuner, which rehearses a Vertex trial.
_JOB_PREFIXES = ("AIP_", "CLOUD_ML_")


@dataclass(frozen=True)
class DataFiles:
    """Patterns per flag and, per flag, what gave them (the flag or a Vertex variable)."""

    train: tuple[str, ...]
    eval: tuple[str, ...]
    test: tuple[str, ...] | None
    origins: tuple[tuple[str, str], ...]  # (flag, origin) for each flag in use
    bundled: bool
    note: str  # one line for the log: where the data comes from

    def origin(self, flag: str) -> str:
        return dict(self.origins)[flag]


def in_vertex_job(environ: Mapping[str, str]) -> bool:
    return any(name.startswith(_JOB_PREFIXES) and value for name, value in environ.items())


def patterns(text: str, origin: str) -> tuple[str, ...]:
    found = tuple(p.strip() for p in text.split(",") if p.strip())
    if not found:
        raise TrainerError(f"{origin} is empty; expected comma-separated file patterns")
    return found


def resolve_data_files(flags: Mapping[str, str | None], environ: Mapping[str, str], *,
                       bundled_sample: bool, sample_train: str, sample_eval: str) -> DataFiles:
    """The data patterns a run reads, from the three file flags and the Vertex environment."""
    data_format = environ.get("AIP_DATA_FORMAT", "").strip().lower()
    if data_format == "bigquery":
        raise TrainerError("AIP_DATA_FORMAT=bigquery is not supported: export the dataset to "
                           "JSONL or CSV (Vertex's managed image datasets export JSONL)")
    if data_format and data_format not in FORMATS:
        raise TrainerError(f"AIP_DATA_FORMAT={environ['AIP_DATA_FORMAT']!r} is unknown; "
                           f"expected one of {', '.join(FORMATS)} (or bigquery, unsupported)")
    chosen: dict[str, tuple[str, str]] = {}  # flag -> (text, origin)
    for flag, variable in URI_VARIABLES.items():
        if flags.get(flag) is not None:
            chosen[flag] = (flags[flag], flag)
        elif data_format and environ.get(variable, "").strip():
            chosen[flag] = (environ[variable], variable)
    if not chosen:
        if in_vertex_job(environ) and not bundled_sample:
            raise TrainerError("no training data: this is a Vertex job (AIP_*/CLOUD_ML_* are set) "
                               "but neither --train-files/--eval-files nor a managed dataset "
                               "(AIP_DATA_FORMAT) gives data; pass --bundled-sample to train the "
                               "bundled MNIST sample on purpose")
        return DataFiles((sample_train,), (sample_eval,), None,
                         (("--train-files", "--train-files"), ("--eval-files", "--eval-files")),
                         True, "data: the bundled MNIST sample (no --train-files/--eval-files "
                               "and no AIP_DATA_FORMAT given)")
    for flag in ("--train-files", "--eval-files"):
        if flag not in chosen:
            variable = URI_VARIABLES[flag]
            source = f"{variable} is empty" if data_format else "no AIP_DATA_FORMAT is set"
            other = "--eval-files" if flag == "--train-files" else "--train-files"
            given = "; ".join(f"{origin} gives data" for _, origin in chosen.values())
            raise TrainerError(f"{flag} is required ({given}, and {source}); "
                               f"give both {other} and {flag}")
    origins = tuple((flag, origin) for flag, (_, origin) in chosen.items())
    managed = [origin for _, origin in origins if origin.startswith("AIP_")]
    note = (f"data: Vertex managed dataset (AIP_DATA_FORMAT={data_format}) via "
            f"{', '.join(managed)}" if managed else "data: from the file flags")
    test = chosen.get("--test-files")
    return DataFiles(patterns(*chosen["--train-files"]), patterns(*chosen["--eval-files"]),
                     patterns(*test) if test else None, origins, False, note)
