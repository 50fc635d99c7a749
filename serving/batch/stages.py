"""The batch command's three stages: read ahead, infer in batches, write behind.

``ReadStage`` keeps a bounded window of images being read and decoded on the
reader threads; ``InferStage`` runs the model on a batch (inline, or on one of
``lanes`` CPU lanes side by side) and hands each mask to ``WriteStage``, which
post-processes, encodes and writes on the writer threads, at most ``slots`` at a
time. Memory is bounded by the window and the slots, not by the number of
images. Every stage reports its first error into one shared list: the run
stops at the next batch and raises it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from serving.backends import Backend


class ReadStage:
    """Images read and decoded ahead of inference, in a window of ``ahead`` (raised once the model is loaded)."""

    def __init__(self, sources: Iterator[Any], read: Callable[[Any], Future], ahead: int):
        self._sources = sources
        self._read = read
        self._window: deque[Future] = deque()
        self.ahead = ahead
        self.refill()

    def refill(self) -> None:
        while len(self._window) < self.ahead:
            source = next(self._sources, None)
            if source is None:
                return
            self._window.append(self._read(source))

    def has_more(self) -> bool:
        return bool(self._window)

    def next_batch(self, size: int, record: Callable[[Any], None], is_done: Callable[[Any], bool]) -> list[Any]:
        """Up to ``size`` read images, in order; what is ready rather than wait for a full batch.

        A read that ended the image (``is_done``: an outcome, e.g. unreadable or already made) is passed
        to ``record`` instead. A storage error raised by a read stops the task here.
        """
        batch: list[Any] = []
        while self._window and len(batch) < size:
            if batch and not self._window[0].done():
                break
            result = self._window.popleft().result()
            self.refill()
            if is_done(result):
                record(result)
            else:
                batch.append(result)
        return batch


class WriteStage:
    """Post-process, encode and write each mask's image on the writer threads, at most ``slots`` at a time."""

    def __init__(
        self,
        writers: ThreadPoolExecutor,
        write: Callable[[Any, np.ndarray, str], Any],
        slots: int,
        record: Callable[[Any], None],
        errors: list[BaseException],
    ):
        self._writers = writers
        self._write = write
        self._slots = slots
        self._free = threading.BoundedSemaphore(slots)
        self._record = record
        self._errors = errors

    def submit(self, item: Any, mask: np.ndarray, label: str) -> None:
        self._free.acquire()  # waits while every slot is busy: the bound on memory
        self._writers.submit(self._write, item, mask, label).add_done_callback(self._written)

    def _written(self, future: Future) -> None:
        self._free.release()
        error = future.exception()
        if error is not None:
            self._errors.append(error)
        else:
            self._record(future.result())

    def drain(self) -> None:
        """Wait until every write has finished (every slot is back)."""
        for _ in range(self._slots):
            self._free.acquire()


class InferStage:
    """The model on one batch at a time: inline with one lane, else side by side on ``lanes`` CPU lanes."""

    def __init__(self, max_lanes: int, writer: WriteStage, errors: list[BaseException]):
        self._pool = ThreadPoolExecutor(max_lanes, thread_name_prefix="lane")
        self._free = threading.BoundedSemaphore(max_lanes)
        self._writer = writer
        self._errors = errors
        self.lanes = 1  # set from the backend once it is loaded

    def __enter__(self) -> InferStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    def run(self, backend: Backend, batch: list[Any]) -> None:
        if self.lanes == 1:
            self._infer_and_write(backend, batch)
            return
        self._free.acquire()
        self._pool.submit(self._infer_and_write, backend, batch).add_done_callback(self._lane_done)

    def _infer_and_write(self, backend: Backend, batch: list[Any]) -> None:
        masks = backend.infer(np.concatenate([item.tensor for item in batch]))
        label = f"{backend.name} {backend.artifact.precision}"
        for item, mask in zip(batch, masks):
            item.tensor = None  # the input is not needed any more: free it before the write
            self._writer.submit(item, mask[0], label)

    def _lane_done(self, future: Future) -> None:
        self._free.release()
        error = future.exception()
        if error is not None:
            self._errors.append(error)
