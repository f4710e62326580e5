"""Image manifests: Vertex image-classification JSONL and `PATH,LABEL` CSV (pure Python).

JSONL, one data item per line, as Vertex exports a single-label image-classification dataset
(schema image_classification_single_label_io_format_1.0.0.yaml):

    {"imageGcsUri": "gs://b/daisy/1.jpg",
     "classificationAnnotation": {"displayName": "daisy", "annotationResourceLabels": {...}},
     "dataItemResourceLabels": {"aiplatform.googleapis.com/ml_use": "training"}}

Multi-label items (`classificationAnnotations`, a list) are refused: this trainer is single-label.

CSV, one image per row: `PATH,LABEL` (the flowers sample's form) or Vertex's import form
`ML_USE,PATH,LABEL` (ML_USE one of training, validation, test). A first row in which no field
looks like a path (no '/' or '.') is a header and skipped. Relative paths resolve against the
manifest's own directory.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from dataclasses import dataclass

from trainer.errors import TrainerError

ML_USE_KEY = "aiplatform.googleapis.com/ml_use"
ML_USES = ("training", "validation", "test")
# flag -> the ml_use split it reads (from a manifest that labels its items, or a TFDS folder)
FLAG_ML_USE = {"--train-files": "training", "--eval-files": "validation", "--test-files": "test"}


@dataclass(frozen=True)
class Item:
    uri: str
    label: str
    ml_use: str  # "" when the manifest does not say
    where: str  # "MANIFEST line N", for error messages


def kind_of(first_line: str) -> str:
    """'jsonl' or 'csv', from a manifest's first non-empty line."""
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


def parse(text: str, path: str, origin: str) -> list[Item]:
    """The items of one manifest file; raises TrainerError naming the file and line."""
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise TrainerError(f"{origin}: {path} is empty; expected a JSONL or CSV image manifest")
    parse_line = _jsonl_item if kind_of(first) == "jsonl" else _csv_item
    base = posixpath.dirname(path)
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        item = parse_line(line, where, origin, is_first=not items)
        if item is not None:
            items.append(Item(_resolve(item.uri, base), item.label, item.ml_use, where))
    if not items:
        raise TrainerError(f"{origin}: {path} lists no images")
    return items


def for_split(items: list[Item], split: str | None, chosen_by: str, origin: str) -> list[Item]:
    """The items of one ml_use split when the manifest labels items by use (None: every item);
    `chosen_by` names what asked for the split, for the error."""
    if split is None or not any(item.ml_use for item in items):
        return items
    kept = [item for item in items if item.ml_use in (split, "")]
    if not kept:
        uses = sorted({item.ml_use for item in items})
        raise TrainerError(f"{origin}: the manifest has no items with ml_use {split!r} "
                           f"(it has {', '.join(uses)}); {chosen_by} reads that split")
    return kept


def _resolve(uri: str, base: str) -> str:
    if "://" in uri or uri.startswith("/") or not base:
        return uri
    return posixpath.join(base, uri)


def _fail(origin: str, where: str, problem: str) -> TrainerError:
    return TrainerError(f"{origin}: {where}: {problem}")


def _jsonl_item(line: str, where: str, origin: str, is_first: bool) -> Item:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        raise _fail(origin, where, f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(item, dict):
        raise _fail(origin, where, "expected a JSON object with imageGcsUri and "
                                   "classificationAnnotation")
    uri = item.get("imageGcsUri")
    if not isinstance(uri, str) or not uri.strip():
        raise _fail(origin, where, "lacks imageGcsUri (a gs:// or local image path)")
    annotation = item.get("classificationAnnotation")
    many = item.get("classificationAnnotations")
    if many is not None:
        if not isinstance(many, list) or len(many) != 1 or annotation is not None:
            raise _fail(origin, where, "multi-label item (classificationAnnotations); this "
                                       "trainer is single-label only: give each image one "
                                       "classificationAnnotation")
        annotation = many[0]
    label = annotation.get("displayName") if isinstance(annotation, dict) else None
    if not isinstance(label, str) or not label.strip():
        raise _fail(origin, where, "lacks classificationAnnotation.displayName (the label)")
    resource_labels = item.get("dataItemResourceLabels") or {}
    ml_use = resource_labels.get(ML_USE_KEY, "") if isinstance(resource_labels, dict) else ""
    return Item(uri.strip(), label.strip(), _ml_use(ml_use, origin, where), where)


def _looks_like_path(field: str) -> bool:
    return "/" in field or "." in field


def _csv_item(line: str, where: str, origin: str, is_first: bool) -> Item | None:
    fields = [field.strip() for field in next(csv.reader(io.StringIO(line)))]
    if is_first and not any(_looks_like_path(field) for field in fields):
        return None  # a header row
    ml_use = ""
    if len(fields) == 3 and fields[0].lower() in (*ML_USES, ""):
        ml_use, fields = fields[0].lower(), fields[1:]
    if len(fields) > 2:
        raise _fail(origin, where, f"{len(fields)} fields; expected PATH,LABEL or "
                                   "ML_USE,PATH,LABEL (single-label only: one label per image)")
    if len(fields) < 2 or not fields[0] or not fields[1]:
        raise _fail(origin, where, "expected PATH,LABEL (or ML_USE,PATH,LABEL) with both set")
    return Item(fields[0], fields[1], ml_use, where)


def _ml_use(value, origin: str, where: str) -> str:
    if value in ("", None):
        return ""
    if value not in ML_USES:
        raise _fail(origin, where, f"ml_use {value!r} is unknown; expected one of "
                                   f"{', '.join(ML_USES)}")
    return value
