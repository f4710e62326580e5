"""TFRecord framing, compression sniffing and first-record reading, checked against TF's writer."""

import io
import struct
import subprocess
import sys

import pytest

from tests.conftest import REPO, example, write_records
from trainer import records


def test_crc32c_matches_the_published_check_value():
    # CRC-32C("123456789") = 0xE3069283; TFRecord masks it.
    crc = 0xE3069283
    assert records.masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("compression", ["", "GZIP"])
def test_first_record_round_trips_through_tensorflow_writer(tmp_path, compression):
    payloads = [example(label=i, image=bytes([i]) * 10) for i in range(3)]
    path = write_records(tmp_path / "f", payloads, compression)
    head = open(path, "rb").read(12)
    assert records.compression_of(head) == compression
    with open(path, "rb") as raw:
        assert records.read_first_record(raw, compression) == payloads[0]


def test_plain_file_whose_length_looks_like_gzip_magic_is_not_taken_for_gzip():
    length = struct.pack("<Q", 0x8B1F)  # low bytes 1f 8b, the gzip magic number
    head = length + struct.pack("<I", records.masked_crc32c(length))
    assert head[:2] == b"\x1f\x8b"
    assert records.compression_of(head) == ""


def test_garbage_is_neither_tfrecord_nor_gzip():
    with pytest.raises(records.RecordFormatError, match="not a TFRecord file"):
        records.compression_of(b"hello, world")


def test_empty_gzip_stream_has_no_first_record(tmp_path):
    path = write_records(tmp_path / "empty.gz", [], "GZIP")
    with open(path, "rb") as raw:
        assert records.read_first_record(raw, "GZIP") is None


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:20], "truncated first record"),
    (lambda d: d[:14] + bytes([d[14] ^ 0xFF]) + d[15:], "data checksum mismatch"),
    (lambda d: d[:3] + b"\x7f" + d[4:], "length checksum mismatch"),
])
def test_damaged_first_record_is_reported(tmp_path, damage, message):
    path = write_records(tmp_path / "f", [example(label=1, image=b"x" * 50)])
    data = damage(open(path, "rb").read())
    with pytest.raises(records.RecordFormatError, match=message):
        records.read_first_record(io.BytesIO(data), "")


def test_undecodable_gzip_data_is_reported(tmp_path):
    data = open(write_records(tmp_path / "f.gz", [b"x" * 100], "GZIP"), "rb").read()
    with pytest.raises(records.RecordFormatError, match="unreadable GZIP data"):
        records.read_first_record(io.BytesIO(data[:20] + b"\xff" * 200), "GZIP")


def test_a_forged_huge_length_reads_only_what_the_file_holds(tmp_path):
    length = struct.pack("<Q", 2**40)
    path = tmp_path / "forged"
    path.write_bytes(length + struct.pack("<I", records.masked_crc32c(length)) + b"x" * 100)
    # In a child: TensorFlow's file reader asked for 2^40 bytes at once crashes the process.
    done = subprocess.run([sys.executable, "-c", f"""
from trainer import records, storage
with storage.open_binary({str(path)!r}) as raw:
    try:
        records.read_first_record(raw, "")
    except records.RecordFormatError as err:
        print(err)
"""], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("first record at byte 0 declares 1,099,511,627,776 bytes; at "
                                  "most 268,435,456 are allowed")


def test_serialize_example_holds_the_current_schema():
    import tensorflow as tf

    parsed = tf.train.Example.FromString(records.serialize_example(b"\x01\x02", 7, 1, 2, 1))
    feature = parsed.features.feature
    assert feature["image"].bytes_list.value == [b"\x01\x02"]
    assert [feature[k].int64_list.value[0] for k in ("label", "height", "width", "depth")] == \
        [7, 1, 2, 1]
