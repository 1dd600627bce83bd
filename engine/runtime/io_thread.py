"""IoThread: one long-lived thread that runs a log's writes and fsyncs for the event loop.

``asyncio.to_thread`` per batch goes through the default executor (a work item, a
``concurrent.futures.Future`` with its condition and lock, a copied context, a wrapping asyncio
future and a thread-safe callback to copy its state). Measured on the project's machine that
hop cost about 1.5x the CPU of the write and fsync it carried. Here a job is a tuple on a
``SimpleQueue`` and its completion one ``call_soon_threadsafe`` that resolves a plain asyncio
future. Jobs run one at a time, in order: a log's IO is sequential anyway.

``TrackedIo`` is how the log uses it: its segment IO on the ``IoThread`` (once started), other
file IO (a snapshot) in a worker thread, and every piece of it remembered until done, so closing
waits for it even when its caller was cancelled and a file is never closed under a write.
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


class TrackedIo:
    """File IO for the event loop, in order on one ``IoThread`` or beside it in a worker thread,
    with what is in flight tracked."""

    def __init__(self) -> None:
        self._ios: set[asyncio.Future[Any]] = set()
        self._thread: IoThread | None = None

    @property
    def busy(self) -> bool:
        return any(not io.done() for io in self._ios)

    def start(self, name: str) -> None:
        self._thread = IoThread(name)

    async def in_order(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the IO thread, after everything submitted before it (in a worker
        thread before ``start``)."""
        if self._thread is None:
            return await self.beside(fn, *args)
        return await self._track(self._thread.submit(fn, *args))

    async def beside(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread, beside the IO thread's jobs."""
        return await self._track(asyncio.ensure_future(asyncio.to_thread(fn, *args)))

    async def drain(self) -> None:
        """Wait for everything in flight (its errors are its callers' to hear)."""
        if self._ios:
            await asyncio.gather(*self._ios, return_exceptions=True)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    async def _track(self, io: asyncio.Future[T]) -> T:
        self._ios.add(io)
        io.add_done_callback(self._ios.discard)
        return await asyncio.shield(io)
