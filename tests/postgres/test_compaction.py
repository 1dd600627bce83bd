"""Retention on the PostgreSQL store: a compaction makes the state its snapshot and deletes the
batches it covers (in bounded statements), expired tasks leave with it, and a restart (or a
takeover) reads the snapshot and the batches after it into the same state."""

from __future__ import annotations

from typing import Any

import asyncpg

from cloudqueue import Engine, FakeClock, RunContext, TaskState
from cloudqueue.engine.runtime.postgres import store as pg_store

T0 = 1_700_000_000_000


async def rows(url: str, query: str) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


async def ok(params: Any, ctx: RunContext) -> Any:
    return params


async def test_compaction_keeps_the_state_and_drops_what_it_covers(pg_url: str,
                                                                   monkeypatch: Any) -> None:
    monkeypatch.setattr(pg_store, "DELETE_BATCH_ROWS", 3)  # several bounded deletes
    clock = FakeClock(T0)
    async with Engine(store=pg_url, clock=clock, lease_ms=3_600_000) as queue:
        queue.define("ok")(ok)
        done = [await queue.enqueue("ok", {"n": i}, keep_result=1_000) for i in range(5)]
        for uid in done:
            await queue.wait(uid, timeout=5_000)
        held = [await queue.enqueue("ok", {"n": i}, delay=600_000) for i in range(3)]
        clock.advance(2_000)  # the finished ones expire
        batches_before = (await rows(pg_url, "SELECT count(*) FROM cq_batches"))[0][0]
        removed = await queue.compact()
        assert removed == batches_before >= 8
        after = await queue.enqueue("ok", {"n": 99}, delay=600_000)
        assert await queue.compact() == 1  # the second folds the first snapshot + one batch
        last = await queue.enqueue("ok", {"n": 100}, delay=600_000)
    assert len(await rows(pg_url, "SELECT DISTINCT seq FROM cq_snapshots")) == 1
    assert len(await rows(pg_url, "SELECT 1 FROM cq_batches")) == 1  # the one after it
    async with Engine(store=pg_url, clock=clock, lease_ms=3_600_000) as again:
        present = {t.unique_id for t in again.core.tasks()}
        assert present == {*held, after, last}  # the expired ones left with the snapshot
        assert (await again.get_task_info(last)).state is TaskState.QUEUED
