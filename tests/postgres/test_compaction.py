"""Retention on the PostgreSQL store: a compaction makes the state its snapshot and deletes the
batches it covers (in bounded statements), expired tasks leave with it, and a restart (or a
takeover) reads the snapshot and the batches after it into the same state."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest

from cloudqueue import Engine, FakeClock, RunContext, TaskState
from cloudqueue.engine.core.events import TaskSubmitted
from cloudqueue.engine.core.options import TaskOptions
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


def test_a_compaction_is_due_once_the_batches_since_the_snapshot_are_as_large_as_it() -> None:
    """A takeover reads the snapshot and folds every event after it: the batches are compacted
    away once they are a quarter of the snapshot's size (at least MIN_COMPACT_BYTES, at most
    compact_bytes)."""
    due: list[int] = []

    def store(snapshot_bytes: int, compact_bytes: int | None = 64_000_000) -> pg_store.PgStore:
        lease = pg_store.Lease("app", "node", 1, valid_until_ms=10**12)
        return pg_store.PgStore(None, lease, FakeClock(T0), last_seq=0,  # type: ignore[arg-type]
                                snapshot_bytes=snapshot_bytes, compact_bytes=compact_bytes,
                                on_compact_due=lambda: due.append(1))

    minimum = pg_store.MIN_COMPACT_BYTES
    assert store(0).compact_due_bytes == minimum  # a small app: every MIN_COMPACT_BYTES
    assert store(minimum * 3).compact_due_bytes == minimum  # a quarter of it is less
    assert store(minimum * 12).compact_due_bytes == minimum * 3  # a quarter of its snapshot
    assert store(minimum * 12, compact_bytes=minimum * 2).compact_due_bytes == minimum * 2

    big = store(minimum * 12)
    big._stored([TaskSubmitted(1, T0, "t", "ok", {}, TaskOptions(), T0)], minimum * 3 - 1)
    assert due == []
    big._stored([TaskSubmitted(2, T0, "u", "ok", {}, TaskOptions(), T0)], 1)
    assert due == [1]


async def test_the_snapshots_size_is_known_after_a_compaction_and_to_the_next_owner(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(T0)
    async with Engine(store=pg_url, clock=clock, lease_ms=3_600_000) as queue:
        queue.define("ok")(ok)
        for i in range(20):
            await queue.enqueue("ok", {"pad": "x" * 200, "n": i}, delay=600_000)
        await queue.compact()
        [(size,)] = await rows(pg_url, "SELECT sum(octet_length(body)) FROM cq_snapshots")
        assert size > 20 * 200
        assert isinstance(queue.store, pg_store.PgStore)
        assert queue.store.snapshot_bytes == size and queue.store.bytes_since_snapshot == 0
        await queue.enqueue("ok", {"n": 99}, delay=600_000)
        written = queue.store.bytes_since_snapshot
        assert written > 0
    pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=1)
    try:
        [(app_id,)] = await rows(pg_url, "SELECT DISTINCT app_id FROM cq_snapshots")
        seq, sizes = await pg_store.since_snapshot(pool, app_id)  # a standby's open
        assert sizes == pg_store.ReadSizes(size, written) and seq > 0
    finally:
        await pool.close()
    caplog.set_level(logging.INFO, logger="cloudqueue")
    async with Engine(store=pg_url, clock=clock, lease_ms=3_600_000) as again:  # a whole read
        assert isinstance(again.store, pg_store.PgStore)
        assert (again.store.snapshot_bytes, again.store.bytes_since_snapshot) == (size, written)
    # what the read took, for an operator wondering why a takeover took the seconds it did
    said = (f"read 20 tasks from the snapshot and 1 events after it "
            f"({(size + written) / 1e6:.1f} MB)")
    assert any(said in r.getMessage() for r in caplog.records)
