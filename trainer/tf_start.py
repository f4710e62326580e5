"""TensorFlow started without the lines its C++ prints before its logging is set up.

Importing TensorFlow and listing its devices write straight to file descriptor 2, before absl's
logging is initialized, so TF_CPP_MIN_LOG_LEVEL does not reach them (measured with TF 2.21: not
even at 3): "WARNING: All log messages before absl::InitializeLog() ...", INFO lines (oneDNN,
"Could not find cuda drivers"), and on every machine without an NVIDIA GPU `E0000 ...
cuda_platform.cc:52] failed call to cuInit: ... UNKNOWN ERROR (303)`. CUDA_VISIBLE_DEVICES=""
does not stop that line either, and TF_CPP_MIN_LOG_LEVEL=3 would hide every real error.

TensorFlow is imported and its devices listed with descriptor 2 passed through a filter that
applies TF_CPP_MIN_LOG_LEVEL to those lines itself (commands set 2 unless it is set: INFO and
WARNING go) and drops the cuInit failure only where no NVIDIA device node exists: on a GPU
machine it means a broken driver and is kept. Any other line (errors, Python's own output)
passes unchanged.

`install` (run by `trainer.cli.run_cli`, so by every command) puts the filter around the first
`import tensorflow` of the process, wherever a command does it: commands keep importing
TensorFlow only once their flags are checked, and `--help` still imports none. The filter is
not left on for the whole command, where it would hold back lines without an end (progress).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import os
import re
import sys
import threading
from typing import Callable

_ABSL_LINE = re.compile(r"^([IWEF])\d{4} ")  # absl's prefix: severity, then MMDD
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_NO_GPU_DRIVER = "failed call to cuInit"


def has_nvidia_device() -> bool:
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/nvidiactl"))


def min_log_level(environ=os.environ) -> int:
    try:
        return int(environ.get("TF_CPP_MIN_LOG_LEVEL", "0") or 0)
    except ValueError:
        return 0


def is_noise(line: str, min_level: int, gpu: bool) -> bool:
    """Whether TensorFlow's start-up `line` is below `min_level`, or the cuInit failure of a
    machine without a GPU."""
    if line.startswith(_PREAMBLE):
        return min_level >= 1  # it only announces the INFO lines that follow
    found = _ABSL_LINE.match(line)
    if not found:
        return False
    severity = _SEVERITY[found.group(1)]
    if severity < min(min_level, 3):
        return True
    return severity == 2 and _NO_GPU_DRIVER in line and not gpu


@contextlib.contextmanager
def filtered_stderr(drop: Callable[[str], bool]):
    """Descriptor 2 (C++ and Python alike) through `drop`: the lines it rejects are written."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not drop(line.decode("utf-8", "replace")):
                    _write_all(original, line)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last writer goes: the thread reads to its end
        thread.join()
        os.close(original)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


class _QuietImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `tensorflow` as the finders after it do, and executes it (then lists its devices,
    where CUDA is probed) inside the filter. Listing physical devices does not create the
    logical ones, so a multi-worker strategy can still be made afterwards."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one import only; also keeps the search below off this
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *_: None)(name, path, target)
            if spec is not None:
                self.loader = spec.loader
                spec.loader = self
                return spec
        return None

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        level, gpu = min_log_level(), has_nvidia_device()
        module.__spec__.loader = module.__loader__ = self.loader
        with filtered_stderr(lambda line: is_noise(line, level, gpu)):
            self.loader.exec_module(module)
            module.config.list_physical_devices()


def install() -> None:
    """The first `import tensorflow` of this process, wherever it happens, made quietly."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, _QuietImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


def start():
    """TensorFlow, imported quietly (its devices listed)."""
    install()
    import tensorflow as tf

    return tf
