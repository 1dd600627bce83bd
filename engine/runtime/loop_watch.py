"""LoopWatch: says where the server's event loop was stuck, when it was.

Everything a server does (requests, runs, a node's lease renewals) waits its turn on one event
loop, so code that holds the loop for seconds stalls all of it: a node whose loop is held past
its lease loses its apps. Lag alone says that it happened, not where. So a thread of its own
checks that the loop has run a small callback lately; when it has not for ``stall_ms``, it logs
the loop thread's stack (once per stall, when it is first seen), and when the loop runs again,
how long it was held.

Its own clock is ``time.monotonic``: a thread outside the loop, it cannot wait through the
loop's clock, and what it measures is the loop not running.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

log = logging.getLogger("cloudqueue.loop")

DEFAULT_STALL_MS = 1_000


class LoopWatch:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, stall_ms: int = DEFAULT_STALL_MS,
                 beat_ms: int = 100) -> None:
        self.loop = loop
        self.stall_s = stall_ms / 1000
        self.beat_s = beat_ms / 1000
        self.stalls = 0  # stalls seen
        self.longest_s = 0.0
        self._last = time.monotonic()  # the loop's last beat
        self._stalled_since: float | None = None  # the beat before the stall being logged
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cloudqueue-loop-watch",
                                        daemon=True)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """From the loop's own thread."""
        self._loop_thread = threading.get_ident()
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        self._thread.join(timeout=1)

    def _beat(self) -> None:
        self._last = time.monotonic()
        self._handle = self.loop.call_later(self.beat_s, self._beat)

    def _watch(self) -> None:
        while not self._stop.wait(self.beat_s):
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """One look, at ``now`` (the watch's thread, every ``beat_ms``)."""
        last = self._last
        if now - last >= self.stall_s and self._stalled_since != last:
            self._stalled_since = last
            self.stalls += 1
            frame = sys._current_frames().get(self._loop_thread)
            where = "".join(traceback.format_stack(frame)[-12:]) if frame else "(unknown)\n"
            log.warning("the event loop has been held for %.1f s (requests, runs and lease "
                        "renewals wait), at:\n%s", now - last, where.rstrip())
        elif self._stalled_since is not None and last != self._stalled_since:
            took = last - self._stalled_since
            self.longest_s = max(self.longest_s, took)
            log.warning("the event loop ran again after %.1f s", took)
            self._stalled_since = None
