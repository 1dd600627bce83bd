"""The log's waits: who waits for a seq to be durable, when the log syncs, and when it tries a
full disk again.

``DurableWaiters`` holds the futures of callers waiting for a seq, released in seq order once it
is durable, or failed with what became of it (rolled back by a full disk, an unknown outcome
after a failed fsync, the store failed).

``IntervalSync`` is the ``interval`` fsync policy's schedule: a sync is due once ``interval_ms``
has passed since the last one, and after a write it leaves unsynced the log kicks its flusher at
that moment. ``DiskFullBackoff`` is the wait between attempts to write to a full disk: 50 ms,
doubling to at most 2 s, back to 50 ms once a write goes through. Both read and wait on the
store's ``Clock``, so a test with a ``FakeClock`` sees them to the millisecond.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

from cloudqueue.engine.core.errors import LogError
from cloudqueue.engine.runtime.clock import Clock
from cloudqueue.engine.runtime.log_file import FsyncPolicy

FULL_RETRY_FIRST_MS = 50
FULL_RETRY_MAX_MS = 2_000


class DurableWaiters:
    """Futures waiting for a seq to become durable, and the seqs that never will."""

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._by_seq: dict[int, list[asyncio.Future[None]]] = {}
        self.rejected: set[int] = set()  # rolled back by a full disk: not stored
        self.unknown: dict[int, LogError] = {}  # written, but the fsync after it failed

    def add(self, seq: int, future: asyncio.Future[None]) -> None:
        if seq not in self._by_seq:
            self._by_seq[seq] = []
            heapq.heappush(self._heap, seq)
        self._by_seq[seq].append(future)

    def release_upto(self, seq: int) -> None:
        """Everything up to ``seq`` is durable: its waiters return, in seq order."""
        while self._heap and self._heap[0] <= seq:
            for future in self._by_seq.pop(heapq.heappop(self._heap), ()):
                if not future.done():
                    future.set_result(None)

    def reject(self, seq: int, error: LogError) -> None:
        self.rejected.add(seq)
        self._fail(self._by_seq.pop(seq, []), error)  # its heap entry is skipped later

    def unknown_outcome(self, seq: int, error: LogError) -> None:
        self.unknown[seq] = error
        self._fail(self._by_seq.pop(seq, []), error)

    def fail_all(self, error: LogError) -> None:
        futures = [f for fs in self._by_seq.values() for f in fs]
        self._heap.clear()
        self._by_seq.clear()
        self._fail(futures, error)

    @staticmethod
    def _fail(futures: list[asyncio.Future[None]], error: LogError) -> None:
        for future in futures:
            if not future.done():
                future.set_exception(error)


class IntervalSync:
    """The ``interval`` policy's clock: is a sync due, and a kick when the next one will be."""

    def __init__(self, policy: FsyncPolicy, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self.last_sync_ms = clock.monotonic_ms()

    @property
    def interval(self) -> bool:
        return self.policy.mode == "interval"

    def due(self) -> bool:
        """An ``interval`` policy whose interval has passed since the last sync (read in the IO
        thread too: a plain reading of the clock)."""
        return self.interval and (self.clock.monotonic_ms() - self.last_sync_ms
                                  >= self.policy.interval_ms)

    def synced(self) -> None:
        self.last_sync_ms = self.clock.monotonic_ms()

    def kick_when_due(self, kick: Callable[[], None]) -> None:
        """After a write left bytes unsynced: call ``kick`` one interval from now (on the loop),
        so they are synced even if nothing more is written."""
        self.clock.call_at(self.clock.now_ms() + self.policy.interval_ms, kick)


class DiskFullBackoff:
    """The wait before writing to a full disk again: doubles per failure, resets on success."""

    def __init__(self, clock: Clock, first_ms: int = FULL_RETRY_FIRST_MS,
                 max_ms: int = FULL_RETRY_MAX_MS) -> None:
        self.clock = clock
        self.first_ms = first_ms
        self.max_ms = max_ms
        self.next_ms = first_ms

    async def wait(self) -> None:
        """Wait the current backoff, and double it for the next failure."""
        wait_ms, self.next_ms = self.next_ms, min(self.next_ms * 2, self.max_ms)
        await self.clock.sleep(wait_ms)

    def reset(self) -> None:
        self.next_ms = self.first_ms
