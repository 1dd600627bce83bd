"""The embedded Engine on a FakeClock: define, enqueue, run, retry, timeout, cancel, wait; each
behaviour against every store."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloudqueue import (
    DuplicateTaskError,
    Engine,
    EngineClosedError,
    EngineConfig,
    FakeClock,
    InvalidTransitionError,
    LogOptions,
    RunContext,
    TaskState,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.errors import ConfigError
from cloudqueue.engine.core.task import iso_ms
from cloudqueue.engine.runtime.store import MemoryStore
from cloudqueue.testing import settle


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=1_700_000_000_000)


@pytest.fixture
async def queue(clock: FakeClock, store_options: dict[str, Any]) -> AsyncIterator[Engine]:
    engine = Engine(clock=clock, **store_options)  # once per store (tests/runtime/conftest.py)
    await engine.start()
    yield engine
    await engine.close(grace_ms=0)


async def test_enqueued_task_runs_with_params_and_context(queue: Engine, clock: FakeClock) -> None:
    seen: list[tuple[Any, RunContext]] = []

    @queue.define
    async def add(params: Any, ctx: RunContext) -> Any:
        seen.append((params, ctx))
        return params["a"] + params["b"]

    uid = await queue.enqueue("add", {"a": 2, "b": 3}, timeout=5_000)
    await settle(queue)
    info = await queue.get_task_info(uid)
    assert info.status == "success" and info.result == {"result": 5} and info.return_value == 5
    ((params, ctx),) = seen
    assert params == {"a": 2, "b": 3}
    assert ctx == RunContext(uid, "add", 1, clock.now_ms() + 5_000)


async def test_exception_fails_the_run_and_retries_after_backoff(queue: Engine,
                                                                 clock: FakeClock) -> None:
    calls = 0

    async def flaky(params: Any, ctx: RunContext) -> str:
        nonlocal calls
        calls += 1
        if ctx.attempt < 3:
            raise RuntimeError(f"boom (attempt {ctx.attempt})")
        return "ok"

    queue.define("flaky")(flaky)

    uid = await queue.enqueue("flaky", attempts=2, backoff=1_000)
    t0 = clock.now_ms()
    await settle(queue)
    wire = (await queue.get_task_info(uid)).to_wire()
    assert (wire["status"], wire["error"], wire["retryAt"]) == (
        "queued", "RuntimeError: boom (attempt 1)", iso_ms(t0 + 1_000))
    clock.advance(999)
    await settle(queue)
    assert calls == 1
    clock.advance(1)
    await settle(queue)
    assert calls == 2
    clock.advance(1_000)
    await settle(queue)
    info = await queue.get_task_info(uid)
    assert (calls, info.status, info.return_value, info.error) == (3, "success", "ok", None)


async def test_run_past_its_timeout_is_cancelled_and_fails_under_at_most_once(
        queue: Engine, clock: FakeClock) -> None:
    cancelled = asyncio.Event()

    @queue.define
    async def hang(params: Any, ctx: RunContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    uid = await queue.enqueue("hang", timeout=500, attempts=3, delivery_mode="atMostOnce")
    await settle(queue)
    clock.advance(499)
    await settle(queue)
    assert (await queue.get_task_info(uid)).state is TaskState.RUNNING
    clock.advance(1)
    await settle(queue)
    info = await queue.get_task_info(uid)
    assert (info.status, info.error, info.attempt) == (
        "failed", "cloud function timed out after 500 ms", 1)
    assert cancelled.is_set()


async def test_timeout_under_at_least_once_runs_again(queue: Engine, clock: FakeClock) -> None:
    runs = 0

    @queue.define
    async def slow_once(params: Any, ctx: RunContext) -> int:
        nonlocal runs
        runs += 1
        if ctx.attempt == 1:
            await asyncio.Event().wait()
        return ctx.attempt

    uid = await queue.enqueue("slow_once", timeout=100, attempts=1, backoff=50)
    await settle(queue)
    clock.advance(150)
    await settle(queue)
    info = await queue.get_task_info(uid)
    assert (runs, info.status, info.return_value) == (2, "success", 2)


async def test_wait_returns_the_final_info(queue: Engine, clock: FakeClock) -> None:
    @queue.define
    async def noop(params: Any, ctx: RunContext) -> None:
        return None

    uid = await queue.enqueue("noop", delay=1_000)
    waiter = asyncio.ensure_future(queue.wait(uid))
    await settle(queue)
    assert not waiter.done()
    clock.advance(1_000)
    info = await asyncio.wait_for(waiter, 5)
    assert info.status == "success" and info.result == {"result": None}


async def test_cancel_a_queued_task(queue: Engine, clock: FakeClock) -> None:
    ran = False

    @queue.define
    async def never(params: Any, ctx: RunContext) -> None:
        nonlocal ran
        ran = True

    uid = await queue.enqueue("never", delay=10_000)
    info = await queue.cancel(uid)
    assert (info.status, info.state) == ("failed", TaskState.CANCELLED)
    clock.advance(20_000)
    await settle(queue)
    assert not ran
    with pytest.raises(InvalidTransitionError):
        await queue.cancel(uid)


async def test_unknown_function_fails_the_run_with_a_clear_error(queue: Engine) -> None:
    uid = await queue.enqueue("missing", attempts=0)
    await settle(queue)
    info = await queue.get_task_info(uid)
    assert (info.status, info.error) == ("failed", "No such cloud function 'missing'")


async def test_a_return_value_that_is_not_json_fails_the_run(queue: Engine) -> None:
    @queue.define
    async def returns_set(params: Any, ctx: RunContext) -> Any:
        return {1, 2}

    uid = await queue.enqueue("returns_set", attempts=0)
    await settle(queue)
    assert "a set cannot be stored" in ((await queue.get_task_info(uid)).error or "")


async def test_bad_options_create_nothing(queue: Engine) -> None:
    with pytest.raises(ValidationError, match="unique_id must be 1 to 32 characters"):
        await queue.enqueue("f", unique_id="x" * 33)
    with pytest.raises(ValidationError, match="timeout 700000 ms is over"):
        await queue.enqueue("f", timeout=700_000, unique_id="t1")
    with pytest.raises(ValidationError, match="params must be JSON"):
        await queue.enqueue("f", {"when": object()}, unique_id="t1")
    assert len(queue.core) == 0
    with pytest.raises(UnknownTaskError):
        await queue.get_task_info("t1")


async def test_duplicate_unique_id_is_refused_while_held(queue: Engine, clock: FakeClock) -> None:
    @queue.define
    async def noop(params: Any, ctx: RunContext) -> None:
        return None

    await queue.enqueue("noop", unique_id="once", keep_result=1_000)
    with pytest.raises(DuplicateTaskError, match="uniqueId 'once' already exists"):
        await queue.enqueue("noop", unique_id="once")
    await settle(queue)
    clock.advance(1_000)
    await settle(queue)
    with pytest.raises(UnknownTaskError):
        await queue.get_task_info("once")
    assert await queue.enqueue("noop", unique_id="once") == "once"


async def test_closed_engine_refuses_new_tasks(clock: FakeClock) -> None:
    engine = Engine(clock=clock)
    await engine.start()
    await engine.close()
    with pytest.raises(EngineClosedError, match="the engine is closed"):
        await engine.enqueue("f")


async def test_close_lets_a_run_in_flight_finish_within_the_grace(clock: FakeClock) -> None:
    engine = Engine(clock=clock)
    await engine.start()
    release = asyncio.Event()

    @engine.define
    async def gated(params: Any, ctx: RunContext) -> str:
        await release.wait()
        return "done"

    uid = await engine.enqueue("gated")
    await settle(engine)
    closing = asyncio.ensure_future(engine.close(grace_ms=5_000))
    await asyncio.sleep(0)
    release.set()
    await closing
    assert (await engine.get_task_info(uid)).return_value == "done"


def test_define_refuses_a_plain_function() -> None:
    engine = Engine()
    with pytest.raises(ConfigError, match="must be 'async def'"):
        engine.define(lambda params, ctx: None)


async def test_real_clock_runs_a_delayed_retry_end_to_end() -> None:
    async with Engine(concurrency=4) as engine:
        @engine.define
        async def twice(params: Any, ctx: RunContext) -> int:
            if ctx.attempt == 1:
                raise ValueError("first run fails")
            return ctx.attempt

        uids = [await engine.enqueue("twice", {"i": i}, delay=20, backoff=30) for i in range(8)]
        infos = [await engine.wait(uid, timeout=5000) for uid in uids]
    assert {(i.status, i.return_value, i.attempt) for i in infos} == {("success", 2, 2)}


async def test_cancel_with_keep_result_zero_returns_the_final_info(queue: Engine) -> None:
    uid = await queue.enqueue("f", delay=10_000, keep_result=0)
    info = await queue.cancel(uid)
    assert info.state is TaskState.CANCELLED
    with pytest.raises(UnknownTaskError):
        await queue.get_task_info(uid)


# ---------------------------------------------------------------------------- configuration


def test_keywords_build_the_same_frozen_config_as_an_engine_config(tmp_path: Path) -> None:
    from_keywords = Engine(concurrency=3, data_dir=tmp_path, fsync="never",
                           segment_bytes=1 << 20, timezone="Asia/Shanghai")
    config = EngineConfig(concurrency=3, data_dir=tmp_path, timezone="Asia/Shanghai",
                          log=LogOptions(fsync="never", segment_bytes=1 << 20))
    assert from_keywords.config == config == Engine(config).config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.concurrency = 4  # type: ignore[misc]
    assert (from_keywords.timezone, from_keywords.data_dir) == ("Asia/Shanghai", tmp_path)


def test_a_config_refuses_what_the_engine_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="concurrency must be >= 1, got 0"):
        EngineConfig(concurrency=0)
    with pytest.raises(ValueError, match="schedule_concurrency must be >= 1, got 0"):
        Engine(schedule_concurrency=0)
    with pytest.raises(ValueError, match="give data_dir or store, not both"):
        Engine(data_dir=tmp_path, store=MemoryStore())
    with pytest.raises(TypeError, match="not both"):
        Engine(EngineConfig(), concurrency=2)


# ---------------------------------------------------------------------------- the process's heap


@pytest.mark.parametrize("reopen", [False, True], ids=["fresh", "reloaded"])
async def test_a_closed_engine_leaves_nothing_behind_in_the_heap(tmp_path: Path,
                                                                 reopen: bool) -> None:
    """An engine freezes the heap at start (its tasks then cost later collections nothing);
    closed, it must unfreeze, or its reference cycles - and every task they reach - would stay
    in memory until the process ends. Nor may a start freeze an earlier engine's garbage."""
    import gc
    import weakref

    async def noop(params: Any, ctx: RunContext) -> None:
        return None

    if reopen:  # a log with tasks in it: the next start loads them
        async with Engine(data_dir=tmp_path, fsync="never") as first:
            first.define(noop)
            await first.enqueue("noop", unique_id="loaded")
        first_core = weakref.ref(first.core)
        del first
    engine = Engine(data_dir=tmp_path, fsync="never")
    async with engine:
        engine.define(noop)
        for i in range(100):
            await engine.enqueue("noop", {"i": i})
        assert gc.get_freeze_count() > 0
        if reopen:
            assert first_core() is None  # collected before the freeze, not frozen with it
    core = weakref.ref(engine.core)
    del engine
    gc.collect()
    assert core() is None
    assert gc.get_freeze_count() == 0
