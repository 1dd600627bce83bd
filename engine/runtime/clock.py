"""Clocks: the only place the engine reads time.

``SystemClock`` gives epoch milliseconds that never go backwards (a wall-clock step back is held
at the last value), so stored times and cron share one timeline. ``FakeClock`` moves only when a
test calls ``advance``, and runs the callbacks whose time has come, in time order; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerCancel(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def call_at(self, at_ms: int, callback: Callable[[], None]) -> TimerCancel:
        """Run ``callback`` (on the event loop) once ``now_ms() >= at_ms``."""
        ...


class SystemClock:
    def __init__(self) -> None:
        self._last = 0

    def now_ms(self) -> int:
        now = time.time_ns() // 1_000_000
        if now < self._last:
            return self._last
        self._last = now
        return now

    def call_at(self, at_ms: int, callback: Callable[[], None]) -> TimerCancel:
        delay_s = max(0.0, (at_ms - self.now_ms()) / 1000)
        return asyncio.get_running_loop().call_later(delay_s, callback)


class _FakeTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock for tests: ``advance(ms)`` moves time and fires due callbacks in time order."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms
        self._timers: list[tuple[int, int, _FakeTimer, Callable[[], None]]] = []
        self._order = itertools.count()

    def now_ms(self) -> int:
        return self._now

    def call_at(self, at_ms: int, callback: Callable[[], None]) -> TimerCancel:
        timer = _FakeTimer()
        heapq.heappush(self._timers, (at_ms, next(self._order), timer, callback))
        if at_ms <= self._now:
            self._fire_due()
        return timer

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError(f"a clock cannot go back: advance({ms})")
        self._now += ms
        self._fire_due()

    def set(self, now_ms: int) -> None:
        self.advance(now_ms - self._now)

    def _fire_due(self) -> None:
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer, callback = heapq.heappop(self._timers)
            if not timer.cancelled:
                callback()
