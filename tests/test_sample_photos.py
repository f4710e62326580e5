"""`vertex-trainer sample-photos`: the bundled MNIST sample as a folder of small photos, every
digit in every split, and the balanced pick it shares with the photo benchmarks."""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from trainer import data
from trainer.tools import digit_photos
from trainer.tools.digit_photos import NAMES


def _files(root):
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


def test_the_sample_becomes_class_folders_of_small_photos_the_same_for_a_seed(tmp_path, capsys):
    out = tmp_path / "digits"
    assert digit_photos.main([str(out), "--count", "25", "--eval-count", "20", "--seed", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == [f"train: 25 photos (2-3 of each digit) in {out / 'train'}",
                           f"eval: 20 photos (2 of each digit) in {out / 'eval'}"]
    held_out = printed[2].rsplit("a held-out photo to send to a server: ", 1)[1]
    assert held_out.startswith(str(out / "eval")) and held_out.endswith(".png")
    assert os.path.isfile(held_out)
    files = _files(out)
    for split, count in (("train", 25), ("eval", 20)):
        in_split = [f for f in files if f.startswith(split + os.sep)]
        assert len(in_split) == count
        per_class = collections.Counter(f.split(os.sep)[1] for f in in_split)
        assert sorted(per_class) == sorted(NAMES), split
        assert set(per_class.values()) <= {count // 10, -(-count // 10)}
    formats, modes = set(), set()
    for name in files:
        with Image.open(out / name) as image:
            image.load()
            assert 20 <= image.width <= 60 and 20 <= image.height <= 60, name
            formats.add(image.format)
            modes.add(image.mode)
    assert formats == {"PNG", "JPEG"} and modes == {"L", "RGB"}
    assert not [p for p in os.listdir(tmp_path) if p != "digits"]  # the staging folder moved in

    again = tmp_path / "again"
    assert digit_photos.main([str(again), "--count", "25", "--eval-count", "20", "--seed", "3"]) == 0
    capsys.readouterr()
    assert _files(again) == files
    assert all((again / f).read_bytes() == (out / f).read_bytes() for f in files)


@pytest.mark.parametrize("argv, message", [
    (["{out}", "--count", "5"], "--count must be at least 10 (a photo of each digit), got 5"),
    (["{out}", "--eval-count", "9"],
     "--eval-count must be at least 10 (a photo of each digit), got 9"),
    (["{out}", "--seed", "-1"], "--seed must be non-negative, got -1"),
    (["{full}"], "OUT_DIR {full} is not empty; sample-photos writes into a new or empty folder"),
    (["{file}"], "OUT_DIR {file} is a file; sample-photos writes into a new or empty folder"),
    (["{out}", "--count", "20000"],
     "--count 20,000: the bundled sample holds 10,000 digits for this split"),
])
def test_bad_arguments_are_one_line_and_write_nothing(argv, message, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("a user's file")
    (tmp_path / "file").write_text("")
    places = {name: tmp_path / name for name in ("out", "full", "file")}
    assert digit_photos.main([arg.format(**places) for arg in argv]) == 2
    assert capsys.readouterr().err == f"error: {message.format(**places)}\n"
    assert sorted(os.listdir(tmp_path)) == ["file", "full"]
    assert os.listdir(tmp_path / "full") == ["mine.txt"]


def test_the_module_is_the_command():
    done = subprocess.run([sys.executable, "-m", "trainer.tools.digit_photos", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: vertex-trainer sample-photos")


def test_the_pick_takes_each_digit_in_turn_and_everything_when_asked(dataset):
    source = data.inspect_input((dataset[1],), "--eval-files", (28, 28, 1), 10)
    every = digit_photos.balanced(source, None)
    truth = collections.Counter(label for label, _ in every)
    assert len(every) == source.size == 500 and len(truth) == 10
    assert min(truth.values()) < 50 < max(truth.values())  # unequal classes, as in MNIST
    # A limit at the size takes every record although the classes are unequal.
    assert collections.Counter(label for label, _ in digit_photos.balanced(source, 500)) == truth
    first = digit_photos.balanced(source, 25)
    assert [label for label, _ in first] == [*range(10), *range(10), *range(5)]
    assert first[0][1].dtype == np.uint8 and first[0][1].shape == (28, 28)
