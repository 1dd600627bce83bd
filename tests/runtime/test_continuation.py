"""Continuation: long work as many short runs, each handing a checkpoint to the next."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cloudqueue import Continue, Engine, FakeClock, RunContext
from cloudqueue.engine.core.events import RunContinued
from cloudqueue.engine.runtime.log_file import read_log
from cloudqueue.testing import settle

T0 = 1_700_000_000_000


async def count_to_60(params: Any, ctx: RunContext) -> Any:
    done = (ctx.checkpoint or {"n": 0})["n"] + 1
    await ctx.progress(done=done, total=60)
    if done < 60:
        return Continue({"n": done})
    return {"slices_seen": ctx.slice + 1}


async def test_sixty_slices_spend_no_attempt(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0)) as queue:
        queue.define("count")(count_to_60)
        uid = await queue.enqueue("count", attempts=0, timeout=2_000)
        info = await queue.wait(uid, timeout=10_000)
    assert (info.status, info.attempt, info.slices) == ("success", 1, 59)
    assert info.return_value == {"slices_seen": 60}
    assert info.progress is not None and info.progress["done"] == 60
    continued = [e for e in read_log(tmp_path)[0] if isinstance(e, RunContinued)]
    assert [e.checkpoint["n"] for e in continued] == list(range(1, 60))


async def test_a_restart_between_slices_resumes_from_the_last_checkpoint(
        tmp_path: Path) -> None:
    clock = FakeClock(T0)
    seen: list[Any] = []

    async def stop_after_three(params: Any, ctx: RunContext) -> Any:
        seen.append(ctx.checkpoint)
        if ctx.checkpoint == {"n": 3}:
            await asyncio.Event().wait()  # the queue goes down during this slice
        return await count_to_60(params, ctx)

    queue = Engine(data_dir=tmp_path, clock=clock)
    queue.define("count")(stop_after_three)
    await queue.start()
    uid = await queue.enqueue("count", attempts=0)
    await settle(queue)
    await queue.close(grace_ms=0)  # the slice in flight is handed back
    assert seen == [None, {"n": 1}, {"n": 2}, {"n": 3}]
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        queue.define("count")(count_to_60)
        info = await queue.wait(uid, timeout=10_000)
    assert (info.status, info.attempt) == ("success", 1)  # atLeastOnce: not charged
    assert info.return_value == {"slices_seen": 60}  # the same as an uninterrupted run


async def test_the_overall_deadline_ends_the_task_failed() -> None:
    clock = FakeClock(T0)

    async def forever(params: Any, ctx: RunContext) -> Continue:
        clock.advance(400)  # each slice takes 400 ms
        return Continue({"slice": ctx.slice})

    async with Engine(clock=clock) as queue:
        queue.define("forever")(forever)
        uid = await queue.enqueue("forever", deadline=1_000, attempts=5)
        info = await queue.wait(uid, timeout=10_000)
    assert info.status == "failed" and info.slices == 2
    assert info.error == "the task's overall deadline of 1000 ms passed after 3 slice(s)"


async def test_a_checkpoint_over_the_cap_fails_the_run_clearly() -> None:
    async def huge(params: Any, ctx: RunContext) -> Continue:
        return Continue({"blob": "x" * 300_000})

    async with Engine(clock=FakeClock(T0)) as queue:
        queue.define("huge")(huge)
        info = await queue.wait(await queue.enqueue("huge", attempts=0), timeout=10_000)
    assert info.status == "failed"
    assert info.error is not None and "over the 262144-byte cap" in info.error
