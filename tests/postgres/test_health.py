"""A node names whoever holds back vacuum: a transaction left open past the alarm's age is
logged with its pid, application, client and query, and the all-clear follows its end; the
figures are on ``GET /metrics``."""

from __future__ import annotations

import logging

import aiohttp
import asyncpg
import pytest

from cloudqueue.engine.runtime.postgres.database import open_database
from cloudqueue.engine.runtime.postgres.health import DbHealth
from tests.postgres.test_nodes import node


async def test_an_old_transaction_is_named_with_its_holder_and_cleared(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    pool = await open_database(pg_url)
    holder = await asyncpg.connect(pg_url, server_settings={"application_name": "nightly-report"})
    try:
        health = DbHealth(alarm_after_s=0.0)
        await health.check(pool)
        assert health.oldest is None and "cq_batches" in health.tables
        await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await holder.fetchval("SELECT count(*) FROM cq_batches")  # takes its snapshot
        with caplog.at_level(logging.WARNING, "cloudqueue.postgres"):
            await health.check(pool)
            assert health.oldest is not None
            assert health.oldest.application == "nightly-report"
            assert health.oldest.pid == holder.get_server_pid()
            await health.check(pool)  # the same holder: one alarm, not one per check
            await holder.execute("ROLLBACK")
            await health.check(pool)
        alarms = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(alarms) == 1 and health.alarms == 1
        assert f"pid {holder.get_server_pid()} (nightly-report)" in alarms[0]
        assert f"pg_terminate_backend({holder.get_server_pid()})" in alarms[0]
        assert "SELECT count(*) FROM cq_batches" in alarms[0]
        assert any("is gone" in r.getMessage() for r in caplog.records)
        assert health.oldest is None
    finally:
        await holder.close()
        await pool.close()


async def test_a_node_shows_the_database_on_its_metrics(pg_url: str) -> None:
    async with node(pg_url) as at, aiohttp.ClientSession() as session:
        async with session.get(f"{at}/metrics") as answer:
            text = await answer.text()
    assert "cloudqueue_db_up 1.0" in text
    assert "cloudqueue_db_apps_dispatched 1.0" in text
    assert 'cloudqueue_db_table_rows{kind="dead",table="cq_batches"}' in text
    assert "cloudqueue_db_oldest_transaction_seconds" in text
    opened = [line for line in text.splitlines()
              if line.startswith('cloudqueue_db_connections{use="open"}')]
    assert opened and 1 <= float(opened[0].split()[-1]) <= 6
