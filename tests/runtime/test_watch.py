"""Live updates of a task: ordered, current state first, and a slow reader never holds the queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

from cloudqueue import Continue, Engine, FakeClock, RunContext, TaskInfo
from cloudqueue.engine.runtime.watchers import BUFFER
from cloudqueue.testing import settle

T0 = 1_700_000_000_000


def watching(queue: Engine, uid: str) -> AsyncGenerator[tuple[str, TaskInfo], None]:
    """``queue.watch(uid)``, which is an async generator (closed with ``aclose``); its declared
    type is only ``AsyncIterator``."""
    return cast(AsyncGenerator[tuple[str, TaskInfo], None], queue.watch(uid))


async def collect(stream: Any) -> list[tuple[str, str]]:
    return [(kind, info.to_wire()["state"]) async for kind, info in stream]


async def test_two_subscribers_see_the_same_ordered_updates_and_a_late_one_the_state() -> None:
    clock = FakeClock(T0)
    gate = asyncio.Event()

    async def work(params: Any, ctx: RunContext) -> Any:
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        if ctx.slice == 0:
            return Continue({"half": True})
        await ctx.progress(50, message="halfway")
        await gate.wait()
        return "done"

    async with Engine(clock=clock) as queue:
        queue.define("work")(work)
        uid = await queue.enqueue("work", delay=1_000, attempts=1, backoff=500)
        first = asyncio.ensure_future(collect(queue.watch(uid)))
        second = asyncio.ensure_future(collect(queue.watch(uid)))
        await settle(queue)
        clock.advance(1_000)  # the first run fails
        await settle(queue)
        clock.advance(500)  # the retry continues once, then reports progress and waits
        await settle(queue)
        late = watching(queue, uid)
        assert (await late.__anext__())[0] == "state"
        await late.aclose()
        gate.set()
        await settle(queue)
        updates = await asyncio.wait_for(first, 5)
    assert updates == await asyncio.wait_for(second, 5)
    assert updates == [("state", "queued"), ("running", "running"), ("retry", "retry_wait"),
                       ("running", "running"), ("continued", "queued"),
                       ("running", "running"), ("progress", "running"),
                       ("finished", "success")]


async def test_a_reader_that_never_reads_does_not_hold_up_the_queue() -> None:
    contexts: list[RunContext] = []
    release = asyncio.Event()

    async def chatty(params: Any, ctx: RunContext) -> str:
        contexts.append(ctx)
        await release.wait()
        return "done"

    async with Engine(clock=FakeClock(T0)) as queue:
        queue.define("chatty")(chatty)
        uid = await queue.enqueue("chatty")
        stalled = watching(queue, uid)
        assert (await stalled.__anext__())[0] == "state"  # then never reads again
        await settle(queue)
        for i in range(1, 1_001):
            await contexts[0].progress(i / 10)
        release.set()
        info = await queue.wait(uid, timeout=5000)
        assert info.status == "success"
        (queue_,) = queue.watchers._subscribers[uid]
        assert queue_.qsize() == BUFFER  # bounded; the newest kept
        newest = [queue_.get_nowait() for _ in range(BUFFER)][-1]
        assert newest[0] == "finished"
        await stalled.aclose()
