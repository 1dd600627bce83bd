"""The store's tables: made from nothing, brought up from each earlier version to the same
shape, refused when behind or ahead, and migrated by ``cloudqueue db migrate`` alone."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from cloudqueue.engine.runtime.postgres import schema
from cloudqueue.engine.runtime.postgres.database import open_database

SHAPE = """
SELECT table_name, column_name, data_type, is_nullable, column_default
  FROM information_schema.columns WHERE table_schema = 'public' AND table_name LIKE 'cq_%'
 ORDER BY table_name, column_name
"""
INDEXES = """
SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2
"""
OPTIONS = "SELECT relname, reloptions FROM pg_class WHERE relname LIKE 'cq_%' ORDER BY 1"


async def shape(url: str) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return [[tuple(r) for r in await conn.fetch(q)] for q in (SHAPE, INDEXES, OPTIONS)]
    finally:
        await conn.close()


async def test_an_empty_database_gets_every_table_at_the_latest_version(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        assert await schema.version_of(conn) == 0
        assert await schema.migrate(conn) == (0, schema.LATEST)
        assert await schema.migrate(conn) == (schema.LATEST, schema.LATEST)  # nothing to do
        tables = {r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'cq_%'")}
        assert tables == {"cq_schema", "cq_batches", "cq_snapshots", "cq_leases", "cq_nodes"}
        # the queue's tables vacuum early (retention deletes their rows in bulk)
        options: dict[str, list[str]] = {r[0]: r[1] for r in await conn.fetch(OPTIONS)}
        assert "autovacuum_vacuum_scale_factor=0.02" in options["cq_batches"]
    finally:
        await conn.close()


@pytest.mark.parametrize("previous", [v - 1 for v, _, _ in schema.MIGRATIONS])
async def test_each_earlier_version_migrates_to_the_same_tables(previous: int, pg_url: str
                                                                ) -> None:
    from tests import pg_cluster

    fresh = pg_cluster.new_database()
    conn = await asyncpg.connect(fresh)
    try:
        await schema.migrate(conn)
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg_url)
    try:
        assert await schema.migrate(conn, upto=previous) == (0, previous)
        assert await schema.migrate(conn) == (previous, schema.LATEST)
    finally:
        await conn.close()
    assert await shape(pg_url) == await shape(fresh)


async def test_nodes_starting_at_once_migrate_once(pg_url: str) -> None:
    import asyncio

    conns = [await asyncpg.connect(pg_url) for _ in range(3)]
    try:
        done = await asyncio.gather(*(schema.migrate(conn) for conn in conns))
        assert {after for _, after in done} == {schema.LATEST}
        steps = await conns[0].fetch("SELECT version FROM cq_schema ORDER BY version")
        assert [r[0] for r in steps] == [v for v, _, _ in schema.MIGRATIONS]
    finally:
        for conn in conns:
            await conn.close()


async def test_tables_behind_or_ahead_are_refused_with_what_to_run(pg_url: str) -> None:
    with pytest.raises(schema.SchemaError, match="cloudqueue db migrate --store URL"):
        await open_database(pg_url, migrate=False)
    pool = await open_database(pg_url)  # migrates
    await pool.close()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("INSERT INTO cq_schema (version, note) VALUES ($1, 'from the future')",
                           schema.LATEST + 1)
        with pytest.raises(schema.SchemaError, match="newer than this cloudqueue knows"):
            await schema.check(conn)
        with pytest.raises(schema.SchemaError, match="newer"):
            await schema.migrate(conn)
    finally:
        await conn.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudqueue.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_db_migrate_and_status_from_the_command_line(pg_url: str) -> None:
    before = cli("db", "status", "--store", pg_url)
    assert before.returncode == 0 and "tables at version 0" in before.stdout
    assert "cloudqueue db migrate --store URL" in before.stdout
    done = cli("db", "migrate", "--store", pg_url)
    assert done.returncode == 0, done.stderr
    assert f"migrated from version 0 to {schema.LATEST}" in done.stdout
    again = cli("db", "migrate", "--store", pg_url)
    assert "nothing to do" in again.stdout
    status = cli("db", "status", "--store", pg_url)
    assert f"tables at version {schema.LATEST}" in status.stdout


def test_db_says_in_one_line_what_is_wrong_with_the_database(pg_url: str) -> None:
    missing = cli("db", "migrate", "--store", pg_url.replace("/t", "/nosuchdb_t", 1))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "does not exist" in missing.stderr and "CREATE DATABASE" in missing.stderr
    nowhere = cli("db", "status", "--store", "postgresql://u@127.0.0.1:1/db")
    assert nowhere.returncode == 1 and "cannot reach the database" in nowhere.stderr
    assert len(nowhere.stderr.strip().splitlines()) == 1
    none = cli("db", "status")
    assert none.returncode == 2 and "--store" in none.stderr


def test_serve_refuses_a_database_it_cannot_use_in_one_line(tmp_path: Any) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cloudqueue.cli", "serve", "--port", "0",
                               "--data-dir", str(tmp_path), *args], capture_output=True,
                              text=True, timeout=60)

    nowhere = serve("--store", "postgresql://u@127.0.0.1:1/db")
    assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
    assert nowhere.stderr.strip().splitlines()[-1].startswith(
        "cloudqueue serve: cannot reach the database at postgresql://u@127.0.0.1:1/db")
    other = serve("--store", "mysql://x")
    assert other.returncode == 2 and "must be a postgresql:// or postgres:// URL" in other.stderr
