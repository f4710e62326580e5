"""TFRecord framing, compression sniffing and first-record reading, checked against TF's writer."""

import io
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- the framing walker that guards TensorFlow's reader (trainer/data/record_guard.py) ---------

def framed(payloads, compression: str = "") -> bytes:
    """A TFRecord file's bytes, framed by hand (what TensorFlow's writer writes)."""
    import gzip

    data = b"".join(struct.pack("<Q", len(p)) + struct.pack("<I", records.masked_crc32c(
        struct.pack("<Q", len(p)))) + p + struct.pack("<I", records.masked_crc32c(p))
        for p in payloads)
    return gzip.compress(data, mtime=0) if compression == "GZIP" else data


def verdict(data: bytes, compression: str, max_record: int = records.MAX_RECORD_BYTES):
    """The walker's framing, or its error message: nothing else may come out."""
    try:
        return records.verify(io.BytesIO(data), compression, max_record)
    except records.RecordFormatError as err:
        message = str(err)
        assert message and "\n" not in message, message
        return message


@pytest.mark.parametrize("compression", ["", "GZIP"])
def test_the_walker_counts_what_tensorflow_wrote(tmp_path, compression):
    payloads = [bytes([i]) * (i * 37 % 500) for i in range(200)]
    path = write_records(tmp_path / "f", payloads, compression)
    with open(path, "rb") as raw:
        assert records.verify(raw, compression) == records.Framing(200, 499)
    if not compression:  # the hand framing below is TensorFlow's
        assert framed(payloads) == open(path, "rb").read()


def test_more_gzip_members_are_read_and_anything_after_them_is_not():
    first, second = framed([b"a" * 10]), framed([b"b" * 20, b"c"])
    import gzip

    members = gzip.compress(first, mtime=0) + gzip.compress(second, mtime=0)
    assert verdict(members, "GZIP") == records.Framing(3, 20)
    assert verdict(members + b"\0" * 8, "GZIP").startswith("unreadable GZIP data before byte ")


payload_lists = st.lists(st.binary(max_size=300), max_size=12)


def test_a_header_equal_to_the_last_good_one_is_the_only_one_not_recomputed():
    good = framed([b"", b"abc"])
    assert verdict(good, "") == records.Framing(2, 3)
    # Zero bytes look like an empty record's header but for its checksum.
    assert verdict(bytes(16), "") == "corrupt first record header at byte 0 (length checksum " \
                                     "mismatch)"
    assert verdict(good + bytes(16), "") == "corrupt record 2 header at byte 35 (length " \
                                            "checksum mismatch)"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000), st.sampled_from(["", "GZIP"]))
def test_arbitrary_bytes_give_a_framing_or_one_line(data, compression):
    verdict(data, compression)


@settings(max_examples=200, deadline=None)
@given(payload_lists, st.data())
def test_a_plain_file_cut_anywhere_but_between_records_is_refused(payloads, draw):
    data = framed(payloads)
    cut = draw.draw(st.integers(0, len(data)))
    ends = {sum(16 + len(p) for p in payloads[:n]): n for n in range(len(payloads) + 1)}
    result = verdict(data[:cut], "")
    # A plain file has no trailer: cut between two records it is a shorter file, as for
    # TensorFlow; cut anywhere else it is refused.
    if cut in ends:
        assert result == records.Framing(ends[cut], max(map(len, payloads[:ends[cut]]),
                                                        default=0))
    else:
        assert isinstance(result, str) and ("truncated" in result), result


@settings(max_examples=200, deadline=None)
@given(payload_lists.filter(bool), st.data())
def test_a_gzip_file_cut_anywhere_is_refused(payloads, draw):
    data = framed(payloads, "GZIP")
    result = verdict(data[:draw.draw(st.integers(0, len(data) - 1))], "GZIP")
    assert isinstance(result, str), result


@settings(max_examples=300, deadline=None)
@given(payload_lists.filter(bool), st.sampled_from(["", "GZIP"]), st.data())
def test_a_flipped_bit_is_refused_or_changes_nothing(payloads, compression, draw):
    data = bytearray(framed(payloads, compression))
    bit = draw.draw(st.integers(0, 8 * len(data) - 1))
    data[bit // 8] ^= 1 << (bit % 8)
    result = verdict(bytes(data), compression)
    if compression == "GZIP" and not isinstance(result, str):
        # Only GZIP header fields no checksum covers (time stamp, flags for the OS) may change.
        assert result == records.Framing(len(payloads), max(map(len, payloads)))
    else:
        assert isinstance(result, str), (bit, result)


@settings(max_examples=100, deadline=None)
@given(st.integers(records.MAX_RECORD_BYTES + 1, 2 ** 64 - 1), st.integers(0, 3),
       st.sampled_from(["", "GZIP"]))
def test_a_forged_length_costs_no_memory(length, before, compression):
    import gzip
    import tracemalloc

    header = struct.pack("<Q", length)
    data = framed([b"x" * 40] * before) + header + struct.pack(
        "<I", records.masked_crc32c(header)) + b"y" * 1000
    data = gzip.compress(data, mtime=0) if compression == "GZIP" else data
    tracemalloc.start()
    try:
        result = verdict(data, compression)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.startswith(f"{'first record' if before == 0 else f'record {before}'} at "), \
        result
    assert f"declares {length:,} bytes" in result
    assert peak < 4 * records._CHUNK, peak


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["", "GZIP"]))
def test_reading_a_first_record_never_fails_otherwise(data, compression):
    try:
        records.read_first_record(io.BytesIO(data), compression)
    except records.RecordFormatError as err:
        assert "\n" not in str(err)
