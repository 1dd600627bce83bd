"""Adaptive concurrency: while the event loop lags, start fewer runs, so acknowledgements stay fast.

One event loop both takes enqueues (parse, validate, log, fsync, answer) and carries runs (call
the function, read its answer, log the outcome). When the machine cannot do all of it at once,
every callback waits longer for its turn, and the callers waiting for an acknowledgement see it
first: in the 1,000/s burst on 2 cores the server's loop ran at ~95 % and ack p99 swung between
48 and 120 ms from one run to the next as the machine's speed varied.

A queue's promise is the acknowledgement: a task acknowledged is durable, and it will run. So
while the loop lags the queue lowers the number of runs it keeps in flight (multiplicative
decrease) and, once the lag clears, raises it back step by step (additive increase) up to the
app's configured ``concurrency``: the classic AIMD rule. Work is never dropped: tasks wait in the
queue (its depth grows) and run when there is room. Never fewer than ``floor`` runs stay in
flight, so tasks always progress.

The lag is measured by :class:`LagMonitor`: a sleep of ``interval_ms`` that wakes late by
``lag`` ms means every callback queued at that moment waited as long. It sleeps and reads time on
the engine's ``Clock`` (on a ``FakeClock``, moving the clock past the monitor's wake-up is a loop
held that long). :class:`RunCap` is the pure
rule; the driver applies its figure as the core's ``run_cap``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

from cloudqueue.engine.runtime.clock import Clock, SystemClock

LAG_HIGH_MS = 2.0  # a loop this late is busy enough to hold acknowledgements back (4.0: p50 ~16 ms)
DECREASE = 0.7
INTERVAL_MS = 5.0  # measuring while runs are in flight or waiting
IDLE_INTERVAL_MS = 100.0  # and while nothing runs (the cap is back at its ceiling by then)


class RunCap:
    """AIMD cap on runs in flight, between ``floor`` and ``ceiling``, from lag observations."""

    def __init__(self, ceiling: int, *, lag_high_ms: float = LAG_HIGH_MS,
                 decrease: float = DECREASE, floor: int = 1) -> None:
        if ceiling < 1 or not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor {floor}, ceiling {ceiling}")
        if not 0 < decrease < 1:
            raise ValueError(f"decrease must be between 0 and 1, got {decrease}")
        self.ceiling = ceiling
        self.floor = floor
        self.lag_high_ms = lag_high_ms
        self.decrease = decrease
        self._cap = float(ceiling)
        self.decreases = 0

    @property
    def cap(self) -> int:
        return int(self._cap)

    def observe(self, lag_ms: float) -> int:
        """Take one lag measurement; return the cap it leaves. Late by more than
        ``lag_high_ms``: the cap shrinks by ``decrease``; by less than half of it: grows by one;
        in between: stays."""
        if lag_ms > self.lag_high_ms:
            if self._cap > self.floor:
                self.decreases += 1
            self._cap = max(float(self.floor), self._cap * self.decrease)
        elif lag_ms < self.lag_high_ms / 2:
            self._cap = min(float(self.ceiling), self._cap + 1)
        return self.cap


class LagMonitor:
    """Measures the loop's lag and reports each measurement to ``on_lag(lag_ms)``; measures every
    ``INTERVAL_MS`` while ``busy()`` and every ``IDLE_INTERVAL_MS`` otherwise."""

    def __init__(self, on_lag: Callable[[float], None], busy: Callable[[], bool],
                 clock: Clock | None = None) -> None:
        self._on_lag = on_lag
        self._busy = busy
        self._clock = clock or SystemClock()

    async def run(self) -> None:
        while True:
            interval_ms = INTERVAL_MS if self._busy() else IDLE_INTERVAL_MS
            before = self._clock.monotonic_ms()
            await self._clock.sleep(interval_ms)
            self._on_lag(max(0.0, self._clock.monotonic_ms() - before - interval_ms))


class SharedLagMonitor:
    """One :class:`LagMonitor` per event loop and time source, however many engines (apps) share
    it: each subscribes ``(on_lag, busy)``; the loop is measured while anyone is subscribed, often
    while any of them is busy. Every ``SystemClock`` is one time source; a ``FakeClock`` is its
    own."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                        dict[Clock | None, SharedLagMonitor]] = \
        weakref.WeakKeyDictionary()

    def __init__(self, clock: Clock | None = None) -> None:
        self._subscribers: dict[int, tuple[Callable[[float], None], Callable[[], bool]]] = {}
        self._next = 0
        self._task: asyncio.Task[None] | None = None
        self._clock = clock

    @classmethod
    def subscribe(cls, on_lag: Callable[[float], None], busy: Callable[[], bool],
                  clock: Clock | None = None) -> Callable[[], None]:
        """Start hearing the running loop's lag, measured on ``clock`` (default: the system's);
        returns the call that stops it."""
        source = None if clock is None or isinstance(clock, SystemClock) else clock
        by_source = cls._by_loop.setdefault(asyncio.get_running_loop(), {})
        shared = by_source.get(source)
        if shared is None:
            shared = by_source[source] = cls(source)
        return shared._add(on_lag, busy)

    def _add(self, on_lag: Callable[[float], None],
             busy: Callable[[], bool]) -> Callable[[], None]:
        token = self._next
        self._next += 1
        self._subscribers[token] = (on_lag, busy)
        if self._task is None:
            monitor = LagMonitor(self._report, self._any_busy, self._clock)
            self._task = asyncio.get_running_loop().create_task(monitor.run(),
                                                                name="cloudqueue-lag")

        def unsubscribe() -> None:
            self._subscribers.pop(token, None)
            if not self._subscribers and self._task is not None:
                self._task.cancel()
                self._task = None

        return unsubscribe

    def _any_busy(self) -> bool:
        return any(busy() for _, busy in self._subscribers.values())

    def _report(self, lag_ms: float) -> None:
        for on_lag, _ in list(self._subscribers.values()):
            on_lag(lag_ms)
