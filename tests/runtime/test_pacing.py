"""Adaptive concurrency (engine/runtime/pacing.py): the AIMD rule with exact numbers, the lag
monitor on the fake clock, and the engine keeping fewer runs in flight while its loop lags."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cloudqueue import Engine, FakeClock, RunContext, SystemClock
from cloudqueue.engine.runtime.pacing import (
    IDLE_INTERVAL_MS,
    INTERVAL_MS,
    LagMonitor,
    RunCap,
    SharedLagMonitor,
)
from cloudqueue.testing import settle
from tests.waiting import turns

T0 = 1_700_000_000_000


def test_lag_above_the_mark_shrinks_the_cap_and_calm_grows_it_back_by_one() -> None:
    cap = RunCap(32, lag_high_ms=4.0, decrease=0.5)
    assert [cap.observe(10.0) for _ in range(6)] == [16, 8, 4, 2, 1, 1]  # never below 1
    assert cap.decreases == 5  # the last observation found it at its floor already
    assert cap.observe(3.0) == 1  # between half the mark and the mark: holds
    assert [cap.observe(0.5) for _ in range(3)] == [2, 3, 4]
    for _ in range(100):
        cap.observe(0.0)
    assert cap.cap == 32  # never above the configured concurrency


def test_the_floor_keeps_runs_going() -> None:
    cap = RunCap(8, floor=3, decrease=0.1)
    assert cap.observe(100.0) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"ceiling": 0}, "floor <= ceiling"),
    ({"ceiling": 4, "floor": 5}, "floor <= ceiling"),
    ({"ceiling": 4, "decrease": 1.0}, "decrease must be between 0 and 1"),
])
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunCap(**kwargs)


async def test_the_monitor_measures_how_late_its_sleep_wakes() -> None:
    clock = FakeClock(T0)
    seen: list[float] = []
    busy = True
    monitor = asyncio.ensure_future(LagMonitor(seen.append, lambda: busy, clock).run())
    try:
        await turns()
        assert clock.next_deadline_ms() == T0 + INTERVAL_MS  # measuring often while busy
        clock.advance(55)  # the loop was held 50 ms past the monitor's wake-up
        await turns()
        assert seen == [50.0]
        busy = False
        clock.advance(5)  # on time
        await turns()
        assert seen == [50.0, 0.0]
        assert clock.next_deadline_ms() == T0 + 60 + IDLE_INTERVAL_MS  # seldom while idle
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)


async def test_an_overloaded_engine_keeps_fewer_runs_in_flight_and_loses_nothing() -> None:
    clock = FakeClock(start_ms=1_700_000_000_000)
    engine = Engine(clock=clock, concurrency=8, adaptive_concurrency=True)
    release = asyncio.Event()
    in_flight = 0
    most = 0

    @engine.define
    async def work(params: Any, ctx: RunContext) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await release.wait()
        in_flight -= 1
        return params

    await engine.start()
    try:
        driver = engine._driver
        for _ in range(3):
            driver._on_lag(50.0)  # the loop was 50 ms late three times: 8 -> 5 -> 3 -> 2
        assert engine.run_cap == 2
        ids = [await engine.enqueue("work", {"i": i}) for i in range(20)]
        await settle(engine)
        assert (in_flight, most) == (2, 2)
        for _ in range(6):
            driver._on_lag(0.0)  # calm again: one more slot per measurement, up to 8
        assert engine.run_cap == 8
        await settle(engine)
        assert in_flight == 8  # the driver was woken to fill the new slots
        release.set()
        infos = [await engine.wait(uid, timeout=10_000) for uid in ids]
        assert [info.status for info in infos] == ["success"] * 20
    finally:
        release.set()
        await engine.close(grace_ms=0)


async def test_without_adaptive_concurrency_lag_changes_nothing() -> None:
    engine = Engine(clock=FakeClock(start_ms=0), concurrency=8)
    await engine.start()
    try:
        assert engine._driver.run_cap is None and engine.run_cap == 8
    finally:
        await engine.close(grace_ms=0)


async def test_engines_on_one_loop_share_one_monitor() -> None:
    clock = FakeClock(T0)
    heard: dict[str, list[float]] = {"a": [], "b": []}
    stop_a = SharedLagMonitor.subscribe(heard["a"].append, lambda: True, clock)
    stop_b = SharedLagMonitor.subscribe(heard["b"].append, lambda: False, clock)
    shared = SharedLagMonitor._by_loop[asyncio.get_running_loop()][clock]
    task = shared._task
    assert task is not None
    for late in (0, 3, 7):
        await turns()
        clock.advance(int(INTERVAL_MS) + late)  # a is busy: measured every INTERVAL_MS
    await turns()
    assert heard["a"] == heard["b"] == [0.0, 3.0, 7.0]  # the same measurements, from one monitor
    stop_a()
    assert shared._task is task  # b still listens
    stop_b()
    assert shared._task is None
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_an_enqueue_behind_full_slots_does_not_wake_the_driver() -> None:
    engine = Engine(clock=FakeClock(start_ms=0), concurrency=1)
    release = asyncio.Event()

    @engine.define
    async def hold(params: Any, ctx: RunContext) -> Any:
        await release.wait()
        return None

    await engine.start()
    try:
        first = await engine.enqueue("hold", {})
        await settle(engine)
        assert not engine._driver.poked
        await engine.enqueue("hold", {})  # ready, but the one slot is taken
        assert not engine._driver.poked
        release.set()
        await engine.wait(first, timeout=10_000)
    finally:
        release.set()
        await engine.close(grace_ms=0)


async def test_engines_on_the_system_clock_share_one_monitor() -> None:
    stops = [SharedLagMonitor.subscribe(lambda lag: None, lambda: False, SystemClock())
             for _ in range(2)]
    monitors = SharedLagMonitor._by_loop[asyncio.get_running_loop()]
    assert list(monitors) == [None]  # one time source, one monitor
    task = monitors[None]._task
    for stop in stops:
        stop()
    assert task is not None
    await asyncio.gather(task, return_exceptions=True)
