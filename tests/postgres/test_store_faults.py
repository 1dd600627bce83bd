"""The PostgreSQL store under faults, each injected at its root: a newer owner (fencing), the
database's disk full, the database gone and back. Nothing acknowledged is lost, nothing
unacknowledged is reported stored, and the store recovers by itself once the fault clears."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from cloudqueue import Engine, TaskState
from cloudqueue.engine.core.errors import DiskFullError, OutcomeUnknownError
from cloudqueue.engine.core.events import TaskSubmitted
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.runtime.clock import SystemClock
from cloudqueue.engine.runtime.postgres.database import DatabaseUnavailableError, FencedError
from cloudqueue.engine.runtime.postgres.node import NodeOptions
from cloudqueue.engine.runtime.postgres.sole import join
from cloudqueue.engine.runtime.postgres.store import PgStore
from cloudqueue.engine.runtime.store import StoreHooks
from tests import pg_cluster
from tests.waiting import until

T0 = 1_700_000_000_000
LONG = NodeOptions.of(3_600_000)


def submitted(seq: int) -> TaskSubmitted:
    return TaskSubmitted(seq, T0, f"t{seq}", "f", {"n": seq}, TaskOptions(delay_ms=60_000), T0)


def database(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def sql(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_a_write_after_another_node_took_the_app_changes_nothing(pg_url: str) -> None:
    joined = await join(pg_url, "app", SystemClock(), options=LONG)
    store, _ = await joined.opener(StoreHooks())
    assert isinstance(store, PgStore)
    store.start()
    try:
        store.append([submitted(1)])
        await store.wait_durable(1)
        # another node takes the app over (what a takeover does to the lease row)
        await sql(pg_url, "UPDATE cq_leases SET epoch = epoch + 1, owner = 'other'")
        store.append([submitted(2)])
        with pytest.raises(FencedError, match="dispatched by another node"):
            await store.wait_durable(2)
        assert not store.accepting and not store.holds_lease
        with pytest.raises(FencedError):
            store.append([submitted(3)])
        conn = await asyncpg.connect(pg_url)
        try:
            kept = await conn.fetch("SELECT last_seq, epoch FROM cq_batches")
        finally:
            await conn.close()
        assert [tuple(r) for r in kept] == [(1, 1)]  # the zombie's batch never went in
    finally:
        await store.close()
        await joined.leave()


async def test_a_full_database_disk_refuses_with_507_and_storing_resumes(pg_url: str) -> None:
    async with Engine(store=pg_url) as queue:
        await sql(pg_url, """
            CREATE FUNCTION cq_test_full() RETURNS trigger LANGUAGE plpgsql AS
              $$BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END$$;
            CREATE TRIGGER full_disk BEFORE INSERT ON cq_batches
              FOR EACH ROW EXECUTE FUNCTION cq_test_full()""")
        with pytest.raises(DiskFullError) as refused:
            await queue.enqueue("f", unique_id="lost", delay=60_000)
        assert refused.value.http_status == 507
        assert queue.core.task("lost") is None  # rolled back: not acknowledged, not held
        await sql(pg_url, "DROP TRIGGER full_disk ON cq_batches")
        await until(lambda: queue.failure is None, "the store accepting again")
        kept = await queue.enqueue("f", unique_id="kept", delay=60_000)
    async with Engine(store=pg_url) as again:
        assert {t.unique_id for t in again.core.tasks()} == {kept}


async def test_the_database_gone_fails_closed_and_the_store_recovers_alone(pg_url: str) -> None:
    admin = pg_cluster.cluster().url
    name = database(pg_url)
    async with Engine(store=pg_url) as queue:
        before = await queue.enqueue("f", unique_id="before", delay=60_000)
        await sql(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await sql(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         f"WHERE datname = '{name}'")
        waiting: Any = None
        import asyncio
        waiting = asyncio.ensure_future(queue.enqueue("f", unique_id="during", delay=60_000))
        await until(lambda: queue.failure is not None, "the store failing closed")
        assert isinstance(queue.failure, DatabaseUnavailableError)
        assert queue.failure.http_status == 503
        with pytest.raises(DatabaseUnavailableError):  # refused up front while it lasts
            await queue.enqueue("f", unique_id="refused", delay=60_000)
        assert not waiting.done()  # its batch's fate is not known yet: its caller waits
        await sql(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert await waiting == "during"  # stored once the database answered
        assert queue.failure is None
    async with Engine(store=pg_url) as again:
        assert {t.unique_id for t in again.core.tasks()} == {before, "during"}
        assert (await again.get_task_info("during")).state is TaskState.QUEUED


async def test_callers_hear_outcome_unknown_when_the_database_stays_away(pg_url: str) -> None:
    admin = pg_cluster.cluster().url
    name = database(pg_url)
    async with Engine(store=pg_url) as queue:
        assert isinstance(queue.store, PgStore)
        queue.store.unknown_after_ms = 200
        await sql(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await sql(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         f"WHERE datname = '{name}'")
        with pytest.raises(OutcomeUnknownError, match="same uniqueId is safe"):
            await queue.enqueue("f", unique_id="maybe", delay=60_000)
        await sql(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await until(lambda: queue.failure is None, "the store accepting again")
        assert queue.store.durable_seq == queue.core.last_seq  # the retry did store it
    async with Engine(store=pg_url) as again:
        assert again.core.task("maybe") is not None  # so enqueuing it again answers 409
