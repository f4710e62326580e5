"""Pure-Python data parts: manifests, the Vertex data environment, label maps (milliseconds)."""

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from trainer.config import SAMPLE_EVAL_FILES, SAMPLE_TRAIN_FILES, config_from_flags
from trainer.data import labels, manifests, text
from trainer.errors import TrainerError

ORIGIN = "--train-files"
ML_USE = manifests.ML_USE_KEY


def jsonl_line(uri="gs://b/daisy/1.jpg", label="daisy", ml_use="training", **extra):
    item = {"imageGcsUri": uri, "classificationAnnotation": {
        "displayName": label, "annotationResourceLabels": {
            "aiplatform.googleapis.com/annotation_set_name": "8066716590760001536"}},
            "dataItemResourceLabels": {"aiplatform.googleapis.com/ml_use": ml_use}, **extra}
    return json.dumps(item)


def one_line_error(call) -> str:
    with pytest.raises(TrainerError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_vertex_jsonl_items_keep_uri_label_and_ml_use():
    text = "\n".join([jsonl_line(), "", jsonl_line("gs://b/rose/2.jpg", "rose", "validation"),
                      json.dumps({"imageGcsUri": "gs://b/tulip/3.png",
                                  "classificationAnnotation": {"displayName": "tulip"},
                                  "dataItemResourceLabels": {}})])
    items = manifests.parse(text, "gs://b/export/training-00000.jsonl", ORIGIN)
    assert [(i.uri, i.label, i.ml_use) for i in items] == [
        ("gs://b/daisy/1.jpg", "daisy", "training"), ("gs://b/rose/2.jpg", "rose", "validation"),
        ("gs://b/tulip/3.png", "tulip", "")]
    assert items[1].where == "gs://b/export/training-00000.jsonl line 3"


@pytest.mark.parametrize("line, expected", [
    ('{"imageGcsUri": "gs://b/a.jpg", ', "line 2: not valid JSON"),
    ("[1, 2]", "line 2: expected a JSON object"),
    ('{"classificationAnnotation": {"displayName": "a"}}', "line 2: lacks imageGcsUri"),
    ('{"imageGcsUri": "gs://b/a.jpg"}', "line 2: lacks classificationAnnotation.displayName"),
    (json.dumps({"imageGcsUri": "gs://b/a.jpg", "classificationAnnotations": [
        {"displayName": "a"}, {"displayName": "b"}]}), "single-label only"),
    (jsonl_line(ml_use="train"), "ml_use 'train' is unknown; expected one of training, "),
])
def test_bad_jsonl_lines_name_the_file_and_line(line, expected):
    message = one_line_error(lambda: manifests.parse(jsonl_line() + "\n" + line, "m.jsonl",
                                                     ORIGIN))
    assert message.startswith("--train-files: m.jsonl line 2: ") and expected in message, message


def test_a_one_item_annotation_list_is_single_label():
    line = json.dumps({"imageGcsUri": "gs://b/a.jpg",
                       "classificationAnnotations": [{"displayName": "a"}]})
    assert manifests.parse(line, "m.jsonl", ORIGIN)[0].label == "a"


def test_csv_with_header_relative_paths_and_vertex_ml_use_column():
    text = "image,label\ndaisy/1.jpg,daisy\ngs://b/r.jpg, rose\n"
    items = manifests.parse(text, "/data/flowers.csv", ORIGIN)
    assert [(i.uri, i.label, i.ml_use) for i in items] == [
        ("/data/daisy/1.jpg", "daisy", ""), ("gs://b/r.jpg", "rose", "")]
    assert items[0].where == "/data/flowers.csv line 2"
    vertex = manifests.parse("TEST,gs://b/a.jpg,a\nvalidation,gs://b/b.jpg,b\n", "v.csv", ORIGIN)
    assert [(i.ml_use, i.uri) for i in vertex] == [("test", "gs://b/a.jpg"),
                                                   ("validation", "gs://b/b.jpg")]


@pytest.mark.parametrize("text, expected", [
    ("gs://b/a.jpg,a\ngs://b/b.jpg,b,c\n", "line 2: 3 fields; expected PATH,LABEL"),
    ("gs://b/a.jpg,a\ngs://b/b.jpg\n", "line 2: expected PATH,LABEL"),
    ("\n\n", "is empty; expected a JSONL or CSV image manifest"),
    ("path,label\n", "lists no images"),
])
def test_bad_csv(text, expected):
    assert expected in one_line_error(lambda: manifests.parse(text, "m.csv", ORIGIN))


def test_each_flag_reads_its_own_ml_use_split():
    items = manifests.parse("\n".join([jsonl_line("gs://b/1.jpg", ml_use="training"),
                                       jsonl_line("gs://b/2.jpg", ml_use="validation")]),
                            "m.jsonl", ORIGIN)
    assert [i.uri for i in manifests.for_split(items, "validation", "--eval-files", "X")] == \
        ["gs://b/2.jpg"]
    assert "no items with ml_use 'test' (it has training, validation); --test-files reads" in \
        one_line_error(lambda: manifests.for_split(items, "test", "--test-files", "X"))
    assert manifests.for_split(items, None, "FILES", "X") == items  # predict's default: all
    unlabelled = manifests.parse("gs://b/1.jpg,a\n", "m.csv", ORIGIN)
    assert manifests.for_split(unlabelled, "test", "--test-files", "X") == unlabelled


# --- the Vertex data environment -----------------------------------------------------------------

MANAGED = {"AIP_DATA_FORMAT": "jsonl",
           "AIP_TRAINING_DATA_URI": "gs://b/ds/training-*",
           "AIP_VALIDATION_DATA_URI": "gs://b/ds/validation-*",
           "AIP_TEST_DATA_URI": "gs://b/ds/test-*"}


def test_a_managed_dataset_gives_the_three_file_flags():
    config = config_from_flags([], MANAGED)
    files = config.data.files
    assert (files.train, files.eval, files.test) == (
        ("gs://b/ds/training-*",), ("gs://b/ds/validation-*",), ("gs://b/ds/test-*",))
    assert files.origin("--eval-files") == "AIP_VALIDATION_DATA_URI" and not files.bundled
    assert "AIP_DATA_FORMAT=jsonl" in files.note


def test_flags_win_over_the_managed_dataset():
    config = config_from_flags(["--train-files", "t.csv", "--test-files", "x.csv"], MANAGED)
    files = config.data.files
    assert (files.train, files.eval, files.test) == (("t.csv",), ("gs://b/ds/validation-*",),
                                                     ("x.csv",))
    assert files.origin("--train-files") == "--train-files"


def test_no_data_trains_the_bundled_sample_but_not_inside_a_vertex_job():
    files = config_from_flags([], {}).data.files
    assert files.bundled and (files.train, files.eval) == ((SAMPLE_TRAIN_FILES,),
                                                           (SAMPLE_EVAL_FILES,))
    assert "bundled MNIST sample" in files.note
    for environ in ({"CLOUD_ML_JOB_ID": "123"}, {"AIP_MODEL_DIR": "gs://b/m"}):
        message = one_line_error(lambda: config_from_flags([], environ))
        assert "no training data: this is a Vertex job" in message and "--bundled-sample" in message
    assert config_from_flags(["--bundled-sample"], {"CLOUD_ML_JOB_ID": "1"}).data.files.bundled


@pytest.mark.parametrize("environ, argv, expected", [
    ({**MANAGED, "AIP_DATA_FORMAT": "bigquery"}, [], "AIP_DATA_FORMAT=bigquery is not supported: "
                                                     "export the dataset to JSONL or CSV"),
    ({**MANAGED, "AIP_DATA_FORMAT": "tfrecord"}, [], "AIP_DATA_FORMAT='tfrecord' is unknown"),
    ({**MANAGED, "AIP_VALIDATION_DATA_URI": ""}, [], "--eval-files is required "
                                                     "(AIP_TRAINING_DATA_URI gives data; "
                                                     "AIP_TEST_DATA_URI gives data, and "
                                                     "AIP_VALIDATION_DATA_URI is empty)"),
    ({}, ["--train-files", "t-*"], "--eval-files is required (--train-files gives data, and no "
                                   "AIP_DATA_FORMAT is set)"),
    ({}, ["--test-files", "t-*"], "--train-files is required"),
    ({**MANAGED, "AIP_TRAINING_DATA_URI": " , "}, [], "AIP_TRAINING_DATA_URI is empty"),
])
def test_bad_data_environments(environ, argv, expected):
    assert expected in one_line_error(lambda: config_from_flags(argv, environ))


def test_vertex_env_stays_free_of_tensorflow():
    code = ("import sys, trainer.config, trainer.data.manifests, trainer.data.labels, "
            "trainer.data.text; "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# --- label maps ----------------------------------------------------------------------------------

def test_label_maps():
    names = labels.build(["rose", "daisy", "rose", "tulip"])
    assert names == ["daisy", "rose", "tulip"]
    assert labels.indices([("tulip", "a"), ("daisy", "b")], names, "X", "Y") == [2, 0]
    message = one_line_error(lambda: labels.indices([("lily", "e.csv line 4")], names,
                                                    "--eval-files", "--train-files"))
    assert message == ("--eval-files: e.csv line 4: label 'lily' is not one of the classes of "
                       "--train-files (daisy, rose, tulip)")
    assert labels.check_num_classes(None, names, "X") == 3
    assert "--num-classes is 5 but X has 3 classes" in one_line_error(
        lambda: labels.check_num_classes(5, names, "X"))
    assert labels.parse(labels.text_of(names), "p", "s") == names


@pytest.mark.parametrize("name, problem", [
    ("un 1 ", "starts or ends with whitespace"), (" cat", "starts or ends with whitespace"),
    ("two\nlines", "line break"), ("cr\rlf", "line break"), ("para\u2029graph", "line break"),
    ("tab\there", "control character"), ("  ", "is empty")])
def test_class_names_that_labels_txt_cannot_hold_are_refused(name, problem):
    message = one_line_error(lambda: labels.check_names([("ok", "a"), (name, "b line 2")],
                                                        "--train-files"))
    assert message.startswith(f"--train-files: b line 2: the class name {name!r} ")
    assert problem in message


def test_every_accepted_class_name_round_trips_through_labels_txt():
    names = ["un 1", "caf\u00e9", "a,b", "x y  z", "\u00e9t\u00e9 \u2014 2", "#1", "'quoted'"]
    labels.check_names(((n, "w") for n in names), "--train-files")
    assert labels.parse(labels.text_of(names), "p", "s") == names


def test_a_label_map_is_bounded_in_name_length_count_and_bytes(tmp_path, monkeypatch):
    # A 30 MB line in --label-map made a 119 MB export (issue 22, row 18).
    long = ["cat", "x" * 30_000_000, "dog"]
    assert one_line_error(lambda: labels.parse("\n".join(long), "l.txt", "--label-map")) == (
        "--label-map: l.txt line 2: a class name of 30,000,000 characters ('xxxxxxxxxxxxxxxxxxxx'"
        "...); at most 256 are taken")
    edge = ["a" * 256, "b"]
    assert labels.parse("\n".join(edge), "l.txt", "--label-map") == edge
    many = [f"c{i}" for i in range(100_001)]
    assert one_line_error(lambda: labels.parse("\n".join(many), "l.txt", "--label-map")) == (
        "--label-map: l.txt has 100,001 labels; at most 100,000 are taken")
    assert labels.parse("\n".join(many[:-1]), "l.txt", "--label-map") == many[:-1]
    assert one_line_error(lambda: labels.check_names([("a", "f 1"), ("b" * 300, "f 2")],
                                                     "--train-files")).startswith(
        "--train-files: f 2: a class name of 300 characters ('bbbbbbbbbbbbbbbbbbbb'...)")
    # A file is read no further than the largest valid label map (100,000 names of 256
    # four-byte characters), here made small.
    assert labels.MAX_FILE_BYTES == 102_600_000
    monkeypatch.setattr(labels, "MAX_FILE_BYTES", 1000)
    huge = tmp_path / "labels.txt"
    huge.write_bytes(b"a\n" * 501)
    assert one_line_error(lambda: labels.read(str(huge), "--label-map")) == (
        f"--label-map: {huge} is larger than the 1,000 bytes it may hold")


def test_the_trainer_refuses_a_label_map_with_a_30_mb_line(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(["zero", "one", "x" * 30_000_000] + [str(i) for i in range(3, 10)]))
    done = subprocess.run([sys.executable, "-m", "trainer.task", "--label-map", str(path),
                           "--max-steps", "1", "--job-dir", str(tmp_path / "job")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.splitlines()[-1] == (
        f"error: --label-map: {path} line 3: a class name of 30,000,000 characters "
        "('xxxxxxxxxxxxxxxxxxxx'...); at most 256 are taken")
    assert not (tmp_path / "job" / "export").exists()


# --- encodings, and any bytes at all -------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    (b"\xef\xbb\xbfa.jpg,x\n", "a.jpg,x\n"),
    (b"a.jpg,caf\xc3\xa9\n", "a.jpg,caf\u00e9\n"),
])
def test_utf_8_reads_with_or_without_a_byte_order_mark(data, expected):
    assert text.decode(data, "m.csv", ORIGIN) == expected


@pytest.mark.parametrize("data, expected", [
    (b"a.jpg,x\nb.jpg,caf\xe9\n", "--train-files: m.csv is not UTF-8: line 2, byte 17 (0xe9)"),
    (b"\xef\xbb\xbfa\n\xff", "--train-files: m.csv is not UTF-8: line 2, byte 5 (0xff)"),
    ("a,b\n".encode("utf-16"), "--train-files: m.csv is UTF-16 text, not UTF-8"),
])
def test_other_encodings_are_named_with_line_and_byte(data, expected):
    assert one_line_error(lambda: text.decode(data, "m.csv", ORIGIN)).startswith(expected)


def test_a_bom_never_reaches_the_first_item():
    csv_items = manifests.parse(text.decode(b"\xef\xbb\xbfdaisy/1.jpg,daisy\n", "/d/m.csv",
                                            ORIGIN), "/d/m.csv", ORIGIN)
    assert (csv_items[0].uri, csv_items[0].label) == ("/d/daisy/1.jpg", "daisy")
    jsonl = b"\xef\xbb\xbf" + jsonl_line().encode() + b"\n"
    assert manifests.parse(text.decode(jsonl, "m.jsonl", ORIGIN), "m.jsonl", ORIGIN)[0].label == \
        "daisy"


def items_or_one_line(data: bytes):
    try:
        return manifests.parse(text.decode(data, "m", ORIGIN), "m", ORIGIN)
    except TrainerError as err:
        assert str(err) and "\n" not in str(err), str(err)
        return str(err)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_give_items_or_one_line(data):
    items_or_one_line(data)


manifest_lines = st.one_of(
    st.text(max_size=80),
    st.builds(lambda uri, label, use: f"{use},{uri},{label}" if use else f"{uri},{label}",
              st.text(max_size=30), st.text(max_size=20),
              st.sampled_from(["", "training", "test", "TEST", "x"])),
    st.builds(lambda uri, label, use: jsonl_line(uri, label, use), st.text(max_size=30),
              st.text(max_size=20), st.sampled_from(["training", "validation", "", "bad"])),
    st.builds(json.dumps, st.recursive(st.none() | st.booleans() | st.integers() | st.text(
        max_size=10), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["imageGcsUri", "classificationAnnotation", "displayName",
                         "classificationAnnotations", "dataItemResourceLabels", ML_USE]),
        inner, max_size=4), max_leaves=8)))


@settings(max_examples=500, deadline=None)
@given(st.lists(manifest_lines, max_size=8), st.booleans())
def test_any_lines_give_items_with_a_uri_and_label_or_one_line(lines, bom):
    data = ("\ufeff" if bom else "") + "\n".join(lines)
    result = items_or_one_line(data.encode("utf-8", "surrogatepass"))
    if not isinstance(result, str):
        assert result and all(item.uri and item.label and item.ml_use in ("", *manifests.ML_USES)
                              for item in result)
