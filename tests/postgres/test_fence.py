"""The fence of a zombie's writes, against the database itself: an insert in flight when a
takeover begins commits before the epoch moves (so the new owner reads it), and an insert that
starts during the takeover waits for it, then sees the new epoch and inserts nothing. Each
interleaving is forced with transactions held open."""

from __future__ import annotations

import asyncio

import asyncpg

from cloudqueue.engine.runtime.postgres import leases as sql
from cloudqueue.engine.runtime.postgres.database import open_database
from cloudqueue.engine.runtime.postgres.store import INSERT_BATCH

LEASE_MS = 600_000


async def setup(url: str) -> asyncpg.Pool:
    pool = await open_database(url)
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO cq_leases (app_id, owner, epoch, expires_at) "
                           "VALUES ('app', 'old', 1, '-infinity')")  # expired: free to take
    return pool


async def until_waiting(url: str) -> None:
    """Until some statement waits for a lock (it is held back, as the test means it to be)."""
    conn = await asyncpg.connect(url)
    try:
        for _ in range(2_000):
            if await conn.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                return
        raise AssertionError("nothing came to wait for a lock")
    finally:
        await conn.close()


async def take(conn: asyncpg.Connection) -> int | None:
    await conn.execute(sql.TAKE_LOCK)
    epoch: int | None = await conn.fetchval(sql.TAKE, "app", "new", LEASE_MS)
    return epoch


async def insert(conn: asyncpg.Connection, seq: int) -> str:
    status: str = await conn.execute(INSERT_BATCH, "app", seq, seq, 1, b"batch", "old", seq - 1)
    return status


async def test_an_insert_in_flight_commits_before_the_epoch_moves(pg_url: str) -> None:
    pool = await setup(pg_url)
    old, new = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
    try:
        zombie = old.transaction()
        await zombie.start()
        assert await insert(old, 1) == "INSERT 0 1"  # not committed yet
        takeover = new.transaction()
        await takeover.start()
        taking = asyncio.ensure_future(take(new))
        await until_waiting(pg_url)  # the takeover waits for the insert's transaction
        assert not taking.done()
        await zombie.commit()
        assert await taking == 2
        await takeover.commit()
        seen = await new.fetch("SELECT last_seq, epoch FROM cq_batches")
        assert [tuple(r) for r in seen] == [(1, 1)]  # the new owner reads it
    finally:
        await old.close()
        await new.close()
        await pool.close()


async def test_an_insert_during_the_takeover_waits_and_inserts_nothing(pg_url: str) -> None:
    pool = await setup(pg_url)
    old, new = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
    try:
        await insert(old, 1)  # (prepares the statement before the takeover, as a node has)
        takeover = new.transaction()
        await takeover.start()
        assert await take(new) == 2  # not committed yet
        inserting = asyncio.ensure_future(insert(old, 2))
        await until_waiting(pg_url)  # held back by the takeover's lock
        assert not inserting.done()
        await takeover.commit()
        assert await inserting == "INSERT 0 0"  # fenced: the epoch moved
        seen = await new.fetch("SELECT last_seq FROM cq_batches ORDER BY 1")
        assert [r[0] for r in seen] == [1]
    finally:
        await old.close()
        await new.close()
        await pool.close()
