"""HeapFreezer: keeps CPython's cyclic garbage collector off the queue's long-lived objects.

A queue holds every task it has not purged: queued, running, and finished ones kept for
``keepResult``, ~4 GC-tracked objects each. CPython's full (generation 2) collection walks all of
them whenever a quarter of the heap is new since the last one, and holds the event loop while it
does: measured here, 360 ms for 200,000 held tasks, and in the 1,000/s burst full collections
every 4-6 s pausing the server 23-154 ms - the worst of the acknowledgement latencies. Those
collections find nothing: tasks, their params and results do not form reference cycles.

So the server moves every object alive at the moment out of the collector's sight:
``gc.freeze()`` every ``freeze_every_s`` (it only relinks lists, O(1)). That includes whatever
is in flight then (requests, runs), not only the long-lived tasks. Objects made since the last
freeze are still collected as usual (generations 0 and 1), and frozen objects are still freed by
reference counting the moment they are dropped. What freezing gives up is collecting *reference
cycles* among objects that were alive at a freeze and died later: to bound that, every
``full_every_s`` the heap is unfrozen and collected once in full (one pause of the size above,
growing with the heap, logged), then frozen again. ``full_every_s=None`` never does:
such cycles are then kept until the process ends. The server unfreezes the heap when it stops.

:meth:`step` is the whole policy (pure but for the ``gc`` calls, which are injected); :meth:`run`
drives it from the event loop, waiting on a ``Clock`` (the system's unless one is given).
"""

from __future__ import annotations

import gc
import logging
from typing import Any, Protocol

from cloudqueue.engine.runtime.clock import Clock, SystemClock

log = logging.getLogger("cloudqueue.heap")

DEFAULT_FREEZE_EVERY_S = 1.0
DEFAULT_FULL_EVERY_S = 900.0


class GcModule(Protocol):
    def freeze(self) -> None: ...
    def unfreeze(self) -> None: ...
    def collect(self, generation: int = 2) -> int: ...


class HeapFreezer:
    def __init__(self, *, freeze_every_s: float = DEFAULT_FREEZE_EVERY_S,
                 full_every_s: float | None = DEFAULT_FULL_EVERY_S,
                 collector: GcModule | Any = gc,
                 clock: Clock | None = None) -> None:
        if freeze_every_s <= 0:
            raise ValueError(f"freeze_every_s must be > 0, got {freeze_every_s}")
        if full_every_s is not None and full_every_s < freeze_every_s:
            raise ValueError(f"full_every_s must be None or >= freeze_every_s "
                             f"({freeze_every_s}), got {full_every_s}")
        self.freeze_every_s = freeze_every_s
        self.full_every_s = full_every_s
        self._gc = collector
        self._clock = clock or SystemClock()
        self._last_full = self._seconds()
        self.freezes = 0
        self.full_collections = 0
        self.last_full_collection_s = 0.0  # how long the last full pass held the loop

    def step(self, now: float) -> str:
        """One turn: ``"full"`` (unfreeze, collect everything, freeze again) when a full pass
        is due at ``now``, otherwise ``"freeze"``."""
        if self.full_every_s is not None and now - self._last_full >= self.full_every_s:
            self._last_full = now
            started = self._seconds()
            self._gc.unfreeze()
            found = self._gc.collect()
            self._gc.freeze()
            self.full_collections += 1
            self.last_full_collection_s = self._seconds() - started
            log.info("full garbage collection: %d unreachable objects, %.0f ms", found,
                     self.last_full_collection_s * 1000)
            return "full"
        self._gc.freeze()
        self.freezes += 1
        return "freeze"

    async def run(self) -> None:
        """Step every ``freeze_every_s`` until cancelled."""
        while True:
            await self._clock.sleep(self.freeze_every_s * 1000)
            self.step(self._seconds())

    def _seconds(self) -> float:
        return self._clock.monotonic_ms() / 1000
