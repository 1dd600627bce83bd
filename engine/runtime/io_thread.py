"""IoThread: one long-lived thread that runs a log's writes and fsyncs for the event loop.

``asyncio.to_thread`` per batch goes through the default executor (a work item, a
``concurrent.futures.Future`` with its condition and lock, a copied context, a wrapping asyncio
future and a thread-safe callback to copy its state). Measured on the project's machine that
hop cost about 1.5x the CPU of the write and fsync it carried. Here a job is a tuple on a
``SimpleQueue`` and its completion one ``call_soon_threadsafe`` that resolves a plain asyncio
future. Jobs run one at a time, in order: a log's IO is sequential anyway.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class IoThread:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(*args)`` on the thread; the future resolves on the calling loop."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, args, future))
        return future

    def stop(self) -> None:
        """The thread ends after the jobs already submitted."""
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, future = job
            result, error = None, None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine, never lost here
                error = exc
            try:
                future.get_loop().call_soon_threadsafe(_resolve, future, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass
