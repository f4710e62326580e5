"""trainer/tools/cifar_batches.py: CIFAR pickles are read, whatever pickled them, and nothing else
is (no TensorFlow)."""

import pickle
import struct

import numpy as np
import pytest

from trainer.errors import TrainerError
from trainer.tools import cifar_batches

BATCH = {b"batch_label": b"training batch 1 of 5", b"filenames": [b"a.png", b"b.png"],
         b"data": np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072).astype(np.uint8),
         b"labels": [1, 0], b"num": np.int64(2)}


def written(tmp_path, data: bytes):
    path = tmp_path / "batch"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("core", ["numpy._core", "numpy.core"])
def test_batches_pickled_by_numpy_1_or_2_at_any_protocol_read_back(tmp_path, protocol, core):
    # numpy 1 (and the Python 2 CIFAR files) name numpy.core; numpy 2 numpy._core.
    data = pickle.dumps(BATCH, protocol=protocol)
    if protocol < 4:  # the module is a text line in the GLOBAL opcode: respell it
        data = data.replace(b"numpy._core.", core.encode() + b".")
    value = cifar_batches.load(written(tmp_path, data))
    assert value.keys() == BATCH.keys()
    np.testing.assert_array_equal(value[b"data"], BATCH[b"data"])
    assert value[b"labels"] == [1, 0] and value[b"num"] == 2
    assert value[b"filenames"] == [b"a.png", b"b.png"]


def python2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle wrote the CIFAR files (protocol 2, str as SHORT_BINSTRING /
    BINSTRING, numpy 1's numpy.core), assembled opcode by opcode: Python 3 cannot write one."""
    def text(value: bytes) -> bytes:
        if len(value) < 256:
            return b"U" + bytes([len(value)]) + value
        return b"T" + struct.pack("<i", len(value)) + value

    def small(n: int) -> bytes:
        return b"K" + bytes([n])

    rows, width = data.shape
    dtype = (b"cnumpy\ndtype\n" + text(b"u1") + small(0) + small(1) + b"\x87R(" + small(3) +
             text(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff" + small(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + small(0) + b"\x85" +
             text(b"b") + b"\x87R(" + small(1) + b"M" + struct.pack("<H", rows) + b"M" +
             struct.pack("<H", width) + b"\x86" + dtype + b"\x89" + text(data.tobytes()) + b"tb")
    return (b"\x80\x02}(" + text(b"data") + array + text(b"labels") + b"](" +
            b"".join(small(label) for label in labels) + b"eu.")


def test_a_batch_as_python_2_pickled_cifar_reads_back(tmp_path):
    data = BATCH[b"data"]
    value = cifar_batches.load(written(tmp_path, python2_batch(data, [1, 0])))
    assert value.keys() == {b"data", b"labels"} and value[b"labels"] == [1, 0]
    np.testing.assert_array_equal(value[b"data"], data)


def test_a_codec_other_than_latin1_is_refused(tmp_path):
    # _codecs.encode is admitted for Python 3's protocol-2 bytes, which always say latin1.
    data = pickle.dumps(b"\xff", protocol=2).replace(b"latin1", b"zlib_c")
    assert b"zlib_c" in data
    with pytest.raises(TrainerError, match="refers to _codecs.encode with 'zlib_c', which"):
        cifar_batches.load(written(tmp_path, data))


@pytest.mark.parametrize("global_", [b"os\nsystem", b"builtins\neval", b"numpy\nload",
                                     b"numpy.core.multiarray\n_dummy"])
def test_every_other_global_is_refused_by_name(tmp_path, global_):
    data = b"c" + global_ + b"\n(S'true'\ntR."
    module, name = global_.decode().split("\n")
    with pytest.raises(TrainerError, match=f"refers to {module}.{name}, which CIFAR batches "
                                           "never hold; refused"):
        cifar_batches.load(written(tmp_path, data))


@pytest.mark.parametrize("data, reason", [
    (b"", "EOFError"), (b"\x80\x05garbage", "UnpicklingError"),
    (pickle.dumps(BATCH)[:200], "UnpicklingError"),
])
def test_damaged_pickles_are_one_line(tmp_path, data, reason):
    with pytest.raises(TrainerError) as err:
        cifar_batches.load(written(tmp_path, data))
    assert str(err.value).startswith(f"--cifar: {tmp_path}/batch is not a readable pickle "
                                     f"({reason}")
    assert "\n" not in str(err.value)


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(TrainerError, match=r"cannot read .*/nope \(No such file or directory\)"):
        cifar_batches.load(str(tmp_path / "nope"))


def test_a_missing_folder_is_named_as_missing_and_a_wrong_one_as_not_cifar(tmp_path):
    with pytest.raises(TrainerError, match=r"^--cifar: .*/cifar-10-batches-py does not exist "
                                           r"\(expected the folder of the CIFAR-10/100"):
        cifar_batches.find(str(tmp_path / "cifar-10-batches-py"))
    with pytest.raises(TrainerError, match=r"^--cifar: .* holds neither CIFAR-10 \(data_batch_"):
        cifar_batches.find(str(tmp_path))


def test_pixels_are_the_rgb_planes_in_hwc_and_labels_index_the_meta_names(tmp_path):
    folder = tmp_path / "cifar-100"
    folder.mkdir()
    meta = {b"fine_label_names": [b"apple", b"bee"], b"coarse_label_names": [b"x"]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    for name, labels in (("train", [1, 0]), ("test", np.array([0, 0]))):
        batch = {b"data": BATCH[b"data"], b"fine_labels": labels, b"coarse_labels": [0, 0]}
        (folder / name).write_bytes(pickle.dumps(batch))
    names, batches = cifar_batches.read(str(folder))
    assert names == ["apple", "bee"]
    assert [(b.split, b.labels) for b in batches] == [("train", [1, 0]), ("eval", [0, 0])]
    pixels = batches[0].pixels
    assert pixels.shape == (2, 32, 32, 3) and pixels.dtype == np.uint8
    expected = BATCH[b"data"].reshape(2, 3, 32, 32)
    np.testing.assert_array_equal(pixels[1, 5, 7], expected[1, :, 5, 7])
