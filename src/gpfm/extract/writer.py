"""An asynchronous writer: a single background thread that runs output jobs in submission order.

Writing a slide's HDF5 file, its state and summary must not stall the encoder, yet must happen in order and
must never be lost silently: a job's exception is kept and re-raised by :meth:`AsyncWriter.wait` / :meth:`close`,
and every job can also be waited on individually through the future that :meth:`submit` returns.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class AsyncWriter:
    """Run submitted callables one at a time, in order, on a daemon thread.

    Args:
        max_pending: bound on queued jobs; :meth:`submit` blocks when the queue is full (back-pressure keeps
            memory bounded when the disk is slower than the encoder).
    """

    def __init__(self, max_pending: int = 4) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._loop, name="gpfm-writer", daemon=True)
        self._closed = False
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Queue ``fn``; returns a future holding its result or exception."""
        if self._closed:
            raise RuntimeError("AsyncWriter is closed")
        future: Future[Any] = Future()
        self._queue.put((fn, future))
        return future

    def close(self) -> None:
        """Finish every queued job and stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()

    def __enter__(self) -> AsyncWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
