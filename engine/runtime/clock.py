"""Clocks: the only place the engine and its adapters read time or wait for it.

A ``Clock`` has two readings and three ways to wait:

* ``now_ms()``: epoch milliseconds that never go backwards (a wall-clock step back is held at the
  last value), so stored times and cron share one timeline;
* ``monotonic_ms()``: milliseconds for measuring an interval (an fsync due, a connection idle,
  a loop's lag): unaffected by the wall clock being set;
* ``call_at(at_ms, callback)``: run a callback once ``now_ms()`` reaches ``at_ms``;
* ``await sleep_until(at_ms)``: the same, as a coroutine;
* ``await sleep(ms)``: wait ``ms`` milliseconds (on the monotonic reading).

``wait_for(clock, awaitable, timeout_ms)`` is ``asyncio.wait_for`` on a clock.

``SystemClock`` is the real one. ``FakeClock`` moves only when told: ``advance(ms)`` moves both
readings together and wakes every sleeper and callback whose time has come, in deadline order
(ties in the order they were registered). With ``autojump_threshold_s`` set it also moves by
itself: when the event loop has had nothing to run for that long (real time), every task is
waiting, on the clock or on something outside it, and the clock jumps to its next deadline. A
test then runs a retry loop with a 15-second backoff in microseconds, and every time it sees is
exact. A task waiting on a thread or a socket looks idle too: where such IO is in flight, a test
steps the clock itself rather than let it jump past the IO.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class TimerCancel(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> int:
        """Epoch milliseconds, never going backwards."""
        ...

    def monotonic_ms(self) -> float:
        """Milliseconds from an arbitrary start, for measuring intervals."""
        ...

    def call_at(self, at_ms: int, callback: Callable[[], None]) -> TimerCancel:
        """Run ``callback`` (on the event loop) once ``now_ms() >= at_ms``."""
        ...

    async def sleep_until(self, at_ms: int) -> None:
        """Return once ``now_ms() >= at_ms``."""
        ...

    async def sleep(self, ms: float) -> None:
        """Return after ``ms`` milliseconds (at once for ``ms <= 0``, after one loop turn)."""
        ...


async def wait_for(clock: Clock, awaitable: Awaitable[T], timeout_ms: float) -> T:
    """``awaitable``'s result, or ``TimeoutError`` (and ``awaitable`` cancelled) once
    ``timeout_ms`` have passed on ``clock``."""
    work = asyncio.ensure_future(awaitable)
    limit = asyncio.ensure_future(clock.sleep(timeout_ms))
    try:
        await asyncio.wait({work, limit}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        limit.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    if work.cancelled() and limit.done() and not limit.cancelled():
        raise TimeoutError(f"not done within {timeout_ms:g} ms")
    return work.result()


class SystemClock:
    def __init__(self) -> None:
        self._last = 0

    def now_ms(self) -> int:
        now = time.time_ns() // 1_000_000
        if now < self._last:
            return self._last
        self._last = now
        return now

    def monotonic_ms(self) -> float:
        return time.monotonic() * 1000

    def call_at(self, at_ms: int, callback: Callable[[], None]) -> TimerCancel:
        delay_s = max(0.0, (at_ms - self.now_ms()) / 1000)
        return asyncio.get_running_loop().call_later(delay_s, callback)

    async def sleep_until(self, at_ms: int) -> None:
        await asyncio.sleep(max(0.0, (at_ms - self.now_ms()) / 1000))

    async def sleep(self, ms: float) -> None:
        await asyncio.sleep(max(0.0, ms / 1000))


class _FakeTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock for tests: ``advance(ms)`` moves time and wakes what is due, in deadline order;
    with ``autojump_threshold_s`` it jumps to the next deadline whenever the loop is idle."""

    def __init__(self, start_ms: int = 1_700_000_000_000, *,
                 autojump_threshold_s: float | None = None) -> None:
        self._now = start_ms
        self._timers: list[tuple[int, int, _FakeTimer, Callable[[], None]]] = []
        self._order = itertools.count()
        self._autojump: float | None = None
        self._armed: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
        self.jumps = 0  # how often autojump moved the clock
        self.autojump_threshold_s = autojump_threshold_s

    # ------------------------------------------------------------------ readings

    def now_ms(self) -> int:
        return self._now

    def monotonic_ms(self) -> float:
        return float(self._now)

    # ------------------------------------------------------------------ waits

    def call_at(self, at_ms: int, callback: Callable[[], None]) -> TimerCancel:
        timer = _FakeTimer()
        heapq.heappush(self._timers, (at_ms, next(self._order), timer, callback))
        if at_ms <= self._now:
            self._fire_due()
        else:
            self._arm()
        return timer

    async def sleep_until(self, at_ms: int) -> None:
        if at_ms <= self._now:
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        timer = self.call_at(at_ms, wake)
        try:
            await woken
        finally:
            timer.cancel()

    async def sleep(self, ms: float) -> None:
        await self.sleep_until(self._now + max(0, _ceil(ms)))

    # ------------------------------------------------------------------ moving it

    def advance(self, ms: int) -> None:
        """Move ``ms`` forward and run every callback due by then (sleepers wake on the loop's
        next turns, in deadline order)."""
        if ms < 0:
            raise ValueError(f"a clock cannot go back: advance({ms})")
        self._now += ms
        self._fire_due()

    def set(self, now_ms: int) -> None:
        self.advance(now_ms - self._now)

    def next_deadline_ms(self) -> int | None:
        """When the earliest pending sleeper or callback is due (None: nothing waits)."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    @property
    def autojump_threshold_s(self) -> float | None:
        """Real seconds the loop must have nothing to run before the clock jumps to its next
        deadline; None (the default) never jumps, 0 jumps as soon as the loop is idle."""
        return self._autojump

    @autojump_threshold_s.setter
    def autojump_threshold_s(self, threshold_s: float | None) -> None:
        if threshold_s is not None and threshold_s < 0:
            raise ValueError(f"autojump_threshold_s must be >= 0, got {threshold_s}")
        self._autojump = threshold_s
        if self._armed is not None:
            self._armed[1].cancel()
            self._armed = None
        self._arm()

    def _fire_due(self) -> None:
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer, callback = heapq.heappop(self._timers)
            if not timer.cancelled:
                callback()

    def _arm(self) -> None:
        """Look at the loop ``autojump_threshold_s`` from now, if anything waits on the clock."""
        if self._autojump is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop yet: armed by the first wait made on one
            return
        if self._armed is not None and self._armed[0] is loop:
            return
        self._armed = (loop, loop.call_later(self._autojump, self._autojump_check, loop))

    def _autojump_check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._armed = None
        deadline = self.next_deadline_ms()
        if deadline is None or self._autojump is None:
            return  # armed again by the next wait
        if not _idle(loop):
            self._arm()
            return
        self.jumps += 1
        self.advance(max(0, deadline - self._now))
        self._arm()


def _idle(loop: asyncio.AbstractEventLoop) -> bool:
    """Nothing else is ready to run on ``loop`` right now. (asyncio keeps its ready callbacks in
    ``_ready``; a loop without one is taken to be idle whenever the threshold has passed.)"""
    ready = getattr(loop, "_ready", None)
    return not ready


def _ceil(ms: float) -> int:
    whole = int(ms)
    return whole + 1 if whole < ms else whole
