"""A progress line for the converters and uploads, with no dependency beyond the standard library.

On a terminal the line is rewritten in place; in a log (a Vertex job, CI, a pipe) a line is
printed every `LOG_SECONDS` and at the end, so a long conversion shows signs of life without
flooding the log: `train: 12,000/50,000 images (24%), 850 images/s, 45 s left`.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

LOG_SECONDS = 30.0
_TERMINAL_SECONDS = 0.2


class Progress:
    def __init__(self, label: str, total: int, unit: str, enabled: bool = True,
                 stream: TextIO | None = None):
        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.done = 0
        self.started = self.shown = time.monotonic()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        # A failure has its own error line; the final count is only for a finished task.
        if exc_info[0] is None:
            self._show(final=True)
        elif self.terminal and self.enabled:
            self.stream.write("\n")

    def update(self, count: int = 1) -> None:
        self.done += count
        interval = _TERMINAL_SECONDS if self.terminal else LOG_SECONDS
        if time.monotonic() - self.shown >= interval:
            self._show(final=False)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        text = f"{self.label}: {self.done:,}/{self.total:,} {self.unit}"
        if self.total:
            text += f" ({100 * self.done // self.total}%)"
        if elapsed > 0 and self.done:
            rate = self.done / elapsed
            text += f", {rate:,.0f} {self.unit}/s"
            if self.done < self.total:
                text += f", {(self.total - self.done) / rate:,.0f} s left"
        return text

    def _show(self, final: bool) -> None:
        if not self.enabled:
            return
        self.shown = time.monotonic()
        if self.terminal:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
