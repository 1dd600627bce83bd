"""The clocks: the fake one wakes sleepers in deadline order and jumps when the loop is idle."""

from __future__ import annotations

import asyncio

import pytest

from cloudqueue.engine.runtime.clock import FakeClock, SystemClock, wait_for

T0 = 1_700_000_000_000


async def settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_sleepers_wake_in_deadline_order_ties_in_call_order() -> None:
    clock = FakeClock(T0)
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, at_ms: int) -> None:
        await clock.sleep_until(at_ms)
        woke.append((name, clock.now_ms()))

    tasks = [asyncio.ensure_future(sleeper(name, T0 + at))
             for name, at in [("c", 30), ("a", 10), ("b1", 20), ("b2", 20)]]
    await settle_loop()
    clock.advance(19)
    await settle_loop()
    assert woke == [("a", T0 + 19)]
    clock.advance(20)
    await settle_loop()
    assert woke == [("a", T0 + 19), ("b1", T0 + 39), ("b2", T0 + 39), ("c", T0 + 39)]
    await asyncio.gather(*tasks)


async def test_sleep_is_relative_and_a_past_deadline_returns_at_once() -> None:
    clock = FakeClock(T0)
    done = asyncio.ensure_future(clock.sleep(250))
    await settle_loop()
    assert clock.next_deadline_ms() == T0 + 250
    clock.advance(249)
    await settle_loop()
    assert not done.done()
    clock.advance(1)
    await settle_loop()
    assert done.done()
    await clock.sleep_until(T0)  # already past
    await clock.sleep(0)
    assert clock.next_deadline_ms() is None


async def test_a_cancelled_sleeper_leaves_no_deadline() -> None:
    clock = FakeClock(T0)
    sleeper = asyncio.ensure_future(clock.sleep(100))
    await settle_loop()
    sleeper.cancel()
    await asyncio.gather(sleeper, return_exceptions=True)
    assert clock.next_deadline_ms() is None


async def test_autojump_moves_to_each_deadline_when_the_loop_is_idle() -> None:
    clock = FakeClock(T0, autojump_threshold_s=0)
    seen: list[int] = []
    for delay in (50, 100, 200, 400):  # a backoff: each wait starts when the last one ended
        await clock.sleep(delay)
        seen.append(clock.now_ms() - T0)
    assert seen == [50, 150, 350, 750]
    assert clock.jumps == 4


async def test_autojump_waits_while_a_task_can_run() -> None:
    clock = FakeClock(T0, autojump_threshold_s=0)
    turns = 0

    async def busy() -> None:
        nonlocal turns
        for _ in range(100):
            turns += 1
            await asyncio.sleep(0)

    worker = asyncio.ensure_future(busy())
    await clock.sleep(10)
    assert turns == 100  # the clock did not move while the worker had work
    assert clock.now_ms() == T0 + 10
    await worker


async def test_autojump_off_never_moves() -> None:
    clock = FakeClock(T0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(clock.sleep(1), 0.05)  # real time passes, the fake clock does not
    assert clock.now_ms() == T0
    clock.autojump_threshold_s = 0
    await clock.sleep(1)
    assert clock.now_ms() == T0 + 1


async def test_call_at_runs_due_callbacks_in_order() -> None:
    clock = FakeClock(T0)
    calls: list[str] = []
    clock.call_at(T0 + 5, lambda: calls.append("late"))
    clock.call_at(T0 + 1, lambda: calls.append("early"))
    clock.call_at(T0 + 5, lambda: calls.append("late-second")).cancel()
    clock.call_at(T0, lambda: calls.append("now"))
    assert calls == ["now"]
    clock.set(T0 + 5)
    assert calls == ["now", "early", "late"]
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)


async def test_system_clock_sleeps_real_time() -> None:
    clock = SystemClock()
    before = clock.monotonic_ms()
    await clock.sleep(5)  # the real clock: a real, short wait
    assert clock.monotonic_ms() - before >= 5
    await clock.sleep_until(clock.now_ms() - 1000)  # past: returns at once


async def test_wait_for_on_a_clock_gives_the_result_or_times_out_at_its_limit() -> None:
    clock = FakeClock(T0)
    loop = asyncio.get_running_loop()
    soon: asyncio.Future[str] = loop.create_future()
    loop.call_soon(soon.set_result, "done")
    assert await wait_for(clock, soon, 1) == "done"  # no time had to pass
    clock.autojump_threshold_s = 0
    never: asyncio.Future[None] = loop.create_future()
    with pytest.raises(TimeoutError):
        await wait_for(clock, never, 250)
    assert clock.now_ms() == T0 + 250 and never.cancelled()
    await wait_for(clock, clock.sleep(100), 100)  # a tie: the work was first, no TimeoutError
    assert clock.now_ms() == T0 + 350
