"""Hashed timing wheel: everything that waits for a point in time (epoch milliseconds).

Theory of operation
-------------------
A timer due at ``at_ms`` is appended to bucket ``(at_ms // tick_ms) & (slots - 1)``.
The bucket index is only a hash: one bucket holds timers of several "rounds" (times
``slots * tick_ms`` apart), and every timer keeps its exact ``at_ms``, so firing is exact
to the millisecond whatever ``tick_ms`` is; ``tick_ms`` only decides which timers share
a bucket.

Non-empty buckets are indexed by a small min-heap of ``(bucket earliest at_ms, slot)``
(Kafka's DelayQueue idea).  Its top is ``next_expiry_ms()``, and ``advance(now)`` pops
only the buckets whose earliest time has come, so an idle gap of hours costs nothing
per empty tick.  A visited bucket fires its due timers, drops cancelled ones, keeps
later-round ones and is pushed back under its new earliest time.  Heap entries are
never updated in place: an entry whose time no longer equals its bucket's earliest
time is stale and skipped; once stale entries outnumber the buckets by more than
``_HEAP_SLACK``, the heap is rebuilt with exactly one entry per non-empty bucket.

Cancelling only sets a flag (O(1)).  A bucket's earliest time is *not* raised on
cancel; the bucket counts its live timers due at that time, and once the last of them is
cancelled, ``next_expiry_ms()`` re-reads the bucket (dropping its cancelled entries) for
its true earliest time, so it always names a live timer's time.
To bound memory when most timers are cancelled before they fire (run timeouts), each
bucket counts its cancelled entries and is filtered as soon as they are at least
``_PURGE_MIN`` and more than half of it: the filter costs O(bucket) and is paid for
by the > bucket/2 cancels since the previous filter, so cancel stays amortised O(1),
and stored entries never exceed ``2 * live + (_PURGE_MIN - 1) * slots``.

Worked example (``slots=8``, ``tick_ms=1``: times 8 ms apart share a bucket)::

    w = TimerWheel[str](start_ms=1000, slots=8)
    w.add("a", 1003)             # bucket 3 (1003 & 7)
    w.add("b", 1011)             # bucket 3 too, one round later
    h = w.add("c", 1002)         # bucket 2
    w.add("d", 1000)             # None: already due, caller acts now
    w.cancel(h)                  # "c" will never fire
    w.next_expiry_ms()           # 1003 (bucket 2 re-read: "c" dropped)
    w.advance(1005)              # ["a"]; "b" stays in bucket 3 for the next round
    w.advance(1_000_000)         # ["b"]; one heap pop, not 998_995 empty ticks
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush
from operator import attrgetter
from typing import Generic, TypeVar, cast

__all__ = ["TimerHandle", "TimerWheel"]

K = TypeVar("K", bound=Hashable)

# A bucket is filtered once it holds at least this many cancelled entries (and they are
# the majority); below it, re-filtering tiny buckets would cost more than the memory.
_PURGE_MIN = 8
# Stale heap entries tolerated before a rebuild, on top of one per non-empty bucket.
_HEAP_SLACK = 64


@dataclass(slots=True, eq=False)
class TimerHandle:
    """Opaque handle of one armed timer, returned by ``TimerWheel.add``.

    ``cancelled`` is True only if ``cancel`` took effect (the timer had not fired yet).
    """

    key: Hashable
    at_ms: int
    _seq: int = field(repr=False)
    _owner: object = field(repr=False)
    cancelled: bool = False
    # True while the timer is stored, not fired and not cancelled.
    _armed: bool = field(default=True, repr=False)


# Firing order: time first, then add order (seq is unique, so ties never reach the key).
_FIRE_ORDER = attrgetter("at_ms", "_seq")
_AT_MS = attrgetter("at_ms")


class _Bucket:
    __slots__ = ("entries", "min_at", "at_min", "cancelled")

    def __init__(self, entries: list[TimerHandle], min_at: int, at_min: int) -> None:
        self.entries = entries
        # The entries' earliest at_ms, and how many live entries are due then: once those are
        # all cancelled (at_min 0), min_at is only a lower bound until the bucket is re-read.
        self.min_at = min_at
        self.at_min = at_min
        self.cancelled = 0

    def reread(self) -> int | None:
        """Drop cancelled entries and make ``min_at`` exact; None if nothing is left."""
        keep = [handle for handle in self.entries if handle._armed]
        self.entries, self.cancelled = keep, 0
        if not keep:
            return None
        self.min_at = min(map(_AT_MS, keep))
        self.at_min = sum(1 for handle in keep if handle.at_ms == self.min_at)
        return self.min_at


class TimerWheel(Generic[K]):
    """Hashed timing wheel keyed by ``K``; see the module docstring."""

    __slots__ = ("_tick", "_mask", "_current", "_seq", "_live", "_buckets", "_heap")

    def __init__(self, start_ms: int, tick_ms: int = 1, slots: int = 4096) -> None:
        if tick_ms < 1:
            raise ValueError(f"tick_ms must be >= 1, got {tick_ms}")
        if slots < 1 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two, got {slots}")
        self._tick = tick_ms
        self._mask = slots - 1
        self._current = start_ms
        self._seq = 0
        self._live = 0
        self._buckets: dict[int, _Bucket] = {}
        self._heap: list[tuple[int, int]] = []

    @property
    def current_ms(self) -> int:
        """The time the wheel has advanced to (never moves backwards)."""
        return self._current

    def __len__(self) -> int:
        return self._live

    def add(self, key: K, at_ms: int) -> TimerHandle | None:
        """Arm a timer for ``key`` at ``at_ms``; None (nothing stored) if already due."""
        if at_ms <= self._current:
            # Kafka's rule: storing it would only delay it to the next advance.
            return None
        seq = self._seq
        self._seq = seq + 1
        handle = TimerHandle(key, at_ms, seq, self)
        slot = (at_ms // self._tick) & self._mask
        bucket = self._buckets.get(slot)
        if bucket is None:
            self._buckets[slot] = _Bucket([handle], at_ms, 1)
            # One more bucket and one more heap entry: no stale entry, no compaction check.
            heappush(self._heap, (at_ms, slot))
        else:
            bucket.entries.append(handle)
            if at_ms < bucket.min_at:
                bucket.min_at, bucket.at_min = at_ms, 1
                self._push_heap(at_ms, slot)
            elif at_ms == bucket.min_at:
                bucket.at_min += 1
        self._live += 1
        return handle

    def clear(self) -> None:
        """Drop every timer."""
        self._live = 0
        self._buckets.clear()
        self._heap.clear()

    def cancel(self, handle: TimerHandle) -> None:
        """Disarm ``handle``; a no-op if it already fired or was cancelled."""
        if handle._owner is not self:
            raise ValueError("timer handle belongs to another TimerWheel")
        if not handle._armed:
            return
        handle._armed = False
        handle.cancelled = True
        self._live -= 1
        slot = (handle.at_ms // self._tick) & self._mask
        bucket = self._buckets[slot]
        bucket.cancelled += 1
        if handle.at_ms == bucket.min_at:
            bucket.at_min -= 1
        if bucket.cancelled >= _PURGE_MIN and bucket.cancelled * 2 > len(bucket.entries):
            self._purge(slot, bucket)

    def advance(self, now_ms: int) -> list[K]:
        """Fire every live timer with ``at_ms <= now_ms``, in (at_ms, add order)."""
        fired = self._fire(now_ms)
        if len(fired) > 1:
            fired.sort(key=_FIRE_ORDER)
        # Handles carry an erased Hashable key; add() only ever stored K.
        return cast("list[K]", [handle.key for handle in fired])

    def advance_timed(self, now_ms: int) -> list[tuple[int, K]]:
        """``advance``, each key with its time, in no particular order (for a caller that
        orders them its own way)."""
        fired = self._fire(now_ms)
        if not fired:
            return []
        return cast("list[tuple[int, K]]", [(h.at_ms, h.key) for h in fired])

    def _fire(self, now_ms: int) -> list[TimerHandle]:
        if now_ms <= self._current:
            # Every stored timer is later than current_ms, so nothing can be due.
            return []
        self._current = now_ms
        heap = self._heap
        if not heap or heap[0][0] > now_ms:
            return []  # the common call: a driver tick with nothing due
        buckets = self._buckets
        fired: list[TimerHandle] = []
        while heap and heap[0][0] <= now_ms:
            at, slot = heappop(heap)
            bucket = buckets.get(slot)
            if bucket is not None and bucket.min_at == at:
                later = self._visit(slot, bucket, now_ms, fired)
                if later is not None:
                    # Later than now_ms, so this loop cannot pop it again.
                    heappush(heap, (later, slot))
        if len(heap) > 2 * len(buckets) + _HEAP_SLACK:
            self._rebuild_heap()
        return fired

    def next_expiry_ms(self) -> int | None:
        """Earliest live timer's at_ms; None if no timers."""
        if not self._live:
            # Only cancelled leftovers remain: drop them rather than report their times.
            self._buckets.clear()
            self._heap.clear()
            return None
        heap = self._heap
        buckets = self._buckets
        while heap:
            at, slot = heap[0]
            bucket = buckets.get(slot)
            if bucket is not None and bucket.min_at == at:
                if bucket.at_min > 0:
                    return at
                # every timer due then was cancelled: the bucket's true earliest time
                heappop(heap)
                earliest = bucket.reread()
                if earliest is None:
                    del buckets[slot]
                else:
                    heappush(heap, (earliest, slot))
                continue
            heappop(heap)
        return None  # unreachable while _live > 0: every live timer's bucket is in the heap

    def _visit(
        self, slot: int, bucket: _Bucket, now_ms: int, fired: list[TimerHandle]
    ) -> int | None:
        """Fire the bucket's due entries; return its new earliest at_ms, None if emptied."""
        keep: list[TimerHandle] = []
        fired_before = len(fired)
        for handle in bucket.entries:
            if not handle._armed:
                continue  # cancelled: dropping it here is what frees its memory
            if handle.at_ms <= now_ms:
                handle._armed = False
                fired.append(handle)
            else:
                keep.append(handle)  # a later round of this slot
        self._live -= len(fired) - fired_before
        if not keep:
            del self._buckets[slot]
            return None
        bucket.entries = keep  # only live, later entries: re-reading makes the minimum exact
        return bucket.reread()

    def _purge(self, slot: int, bucket: _Bucket) -> None:
        keep = [handle for handle in bucket.entries if handle._armed]
        if not keep:
            # Its heap entry goes stale: buckets.get(slot) no longer finds it.
            del self._buckets[slot]
            return
        # min_at and at_min stay as they are (cancelled entries were already uncounted)
        bucket.entries = keep
        bucket.cancelled = 0

    def _push_heap(self, at_ms: int, slot: int) -> None:
        heappush(self._heap, (at_ms, slot))
        if len(self._heap) > 2 * len(self._buckets) + _HEAP_SLACK:
            self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        # Entries superseded by an earlier time in their bucket would otherwise pile up
        # until their (possibly hours away) time; one entry per bucket suffices.
        heap = [(bucket.min_at, slot) for slot, bucket in self._buckets.items()]
        heapify(heap)
        self._heap = heap
