"""Requests gathered into one model call, as TF Serving's batching does.

A `Batcher` owns one worker thread. Submitted items (a request's prepared inputs and its instance
count) queue up; the worker takes the first, adds whatever else is queued, and while requests
are still being prepared (`Arrivals`) waits up to `timeout` seconds for them, until `max_size`
instances are gathered. A lone client therefore never waits: with nothing on its way the batch
runs at once. `run` gets the payloads of one batch and returns one result per payload (outputs,
or the exception for that payload alone), so a bad request never fails its batch-mates.

`InstanceBudget` bounds the instances held between preparation and their answer: what prepared
requests cost in memory while they wait for a batch.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence


class Arrivals:
    """How many requests are being prepared now (and will likely be submitted soon)."""

    def __init__(self):
        self._count = 0
        self._changed = threading.Condition()

    def __enter__(self):
        with self._changed:
            self._count += 1

    def __exit__(self, *exc):
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    @property
    def pending(self) -> int:
        return self._count


@dataclass
class _Item:
    count: int
    payload: object
    future: Future = field(default_factory=Future)


class Batcher:
    def __init__(self, run: Callable[[Sequence[object]], Sequence[object]], *, max_size: int,
                 timeout: float, arrivals: Arrivals, name: str = "batcher"):
        self._run = run
        self._max_size = max_size
        self._timeout = timeout
        self._arrivals = arrivals
        self._queue: collections.deque[_Item] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, count: int, payload: object) -> Future:
        item = _Item(count, payload)
        with self._ready:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(item)
            self._ready.notify_all()
        return item.future

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._thread.join()

    def _gather(self) -> list[_Item] | None:
        with self._ready:
            while not self._queue:
                if self._closed:
                    return None
                self._ready.wait()
            batch = [self._queue.popleft()]
            size = batch[0].count
            deadline = time.monotonic() + self._timeout
            while size < self._max_size:
                if self._queue:
                    if size + self._queue[0].count > self._max_size:
                        break
                    item = self._queue.popleft()
                    batch.append(item)
                    size += item.count
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._arrivals.pending or self._closed:
                    break
                # Woken by a submission; a request that fails while being prepared submits
                # nothing, so wake up now and then to see whether any are still coming.
                self._ready.wait(min(remaining, 0.0005))
            return batch

    def _work(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            self.batch_sizes[sum(item.count for item in batch)] += 1
            try:
                results = self._run([item.payload for item in batch])
            except BaseException as err:  # the model failed: every caller gets the failure
                results = [err] * len(batch)
            for item, result in zip(batch, results):
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)


class InstanceBudget:
    """At most `limit` instances between `acquire` and `release`; a request over the limit on
    its own is admitted when nothing else holds any."""

    def __init__(self, limit: int):
        self._limit = limit
        self._used = 0
        self._changed = threading.Condition()

    def acquire(self, count: int) -> None:
        with self._changed:
            while self._used and self._used + count > self._limit:
                self._changed.wait()
            self._used += count

    def release(self, count: int) -> None:
        with self._changed:
            self._used -= count
            self._changed.notify_all()
