"""The queue's tables in PostgreSQL, made and changed in numbered steps (``MIGRATIONS``).

``migrate`` brings a database to ``LATEST``, each step in a transaction of its own under an
advisory lock (two nodes starting at once migrate once); ``check`` refuses a database that is
behind (the message says to run ``cloudqueue db migrate``) or ahead (a newer cloudqueue wrote
it). ``cq_schema`` holds one row per step applied.

The tables (prefix ``cq_``, so the queue can share a database with nothing else's names):

``cq_batches``: each app's facts, one row per group commit: the events ``first_seq..last_seq``
in the log's own encoding (``batch_codec``), CRC-framed, written only by the app's owner at its
epoch; ``prev_seq`` is the last seq stored before it (seqs of events rolled back in between are
never stored), so a missing batch is seen. ``cq_snapshots``: an app's state at ``seq`` (the
log's snapshot encoding) in parts; the batches it covers are deleted after it. ``cq_leases``:
which node dispatches each app, until when, at which fencing epoch. ``cq_nodes``: the nodes
alive (their heartbeat), the apps each serves, the apps it keeps a standby of (``warm``), and the
address other nodes forward an app's requests to.
"""

from __future__ import annotations

from typing import Any

# the advisory lock a migration holds (any constant; "cq" in ASCII)
MIGRATION_LOCK = 0x6371_0001

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "tasks as facts: batches, snapshots, leases, nodes", """
CREATE TABLE IF NOT EXISTS cq_schema (
    version    integer PRIMARY KEY,
    note       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE cq_batches (
    app_id    text   NOT NULL,
    last_seq  bigint NOT NULL,
    first_seq bigint NOT NULL,
    prev_seq  bigint NOT NULL,
    epoch     bigint NOT NULL,
    body      bytea  NOT NULL,
    PRIMARY KEY (app_id, last_seq)
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05,
        autovacuum_analyze_scale_factor = 0.05);
ALTER TABLE cq_batches ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE cq_snapshots (
    app_id   text    NOT NULL,
    seq      bigint  NOT NULL,
    part     integer NOT NULL,
    parts    integer NOT NULL,
    body     bytea   NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, seq, part)
) WITH (autovacuum_vacuum_scale_factor = 0.02);
CREATE TABLE cq_leases (
    app_id     text PRIMARY KEY,
    owner      text,
    epoch      bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity'
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.0,
        autovacuum_vacuum_threshold = 1000);
CREATE TABLE cq_nodes (
    node_id      text PRIMARY KEY,
    url          text,
    apps         text[] NOT NULL DEFAULT '{}',
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.0,
        autovacuum_vacuum_threshold = 1000);
"""),
    (2, "nodes say which apps they keep a standby of", """
ALTER TABLE cq_nodes ADD COLUMN warm text[];
"""),
]
LATEST = MIGRATIONS[-1][0]


class SchemaError(RuntimeError):
    """The database's tables are not at the version this cloudqueue reads."""


async def version_of(conn: Any) -> int:
    """The schema version of the database (0: no queue tables yet)."""
    # read pg_class itself, not to_regclass: the name cache may still hold "no such table"
    # from before another node's migration committed
    exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN "
                                 "pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE "
                                 "c.relname = 'cq_schema' AND n.nspname = current_schema())")
    if not exists:
        return 0
    found = await conn.fetchval("SELECT max(version) FROM cq_schema")
    return int(found or 0)


async def migrate(conn: Any, upto: int = LATEST) -> tuple[int, int]:
    """Apply the steps the database lacks, up to ``upto``; ``(version before, version after)``.

    Each step runs in a transaction of its own that first takes a transaction-level advisory
    lock and reads the version again, so nodes starting at once apply each step once, and no
    session state is left behind (it works through a transaction-pooling PgBouncer too).

    Raises:
        SchemaError: the database is at a version newer than this cloudqueue knows.
    """
    before = await version_of(conn)
    if before > LATEST:
        raise SchemaError(newer(before))
    for version, note, sql in MIGRATIONS:
        if not before < version <= upto:
            continue
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            if await version_of(conn) >= version:
                continue  # another node applied it meanwhile
            await conn.execute(sql)
            await conn.execute("INSERT INTO cq_schema (version, note) VALUES ($1, $2)",
                               version, note)
    return before, await version_of(conn)


async def check(conn: Any) -> None:
    """Refuse a database whose tables are not at ``LATEST``.

    Raises:
        SchemaError: behind (the message names the command that migrates it) or ahead.
    """
    found = await version_of(conn)
    if found > LATEST:
        raise SchemaError(newer(found))
    if found < LATEST:
        raise SchemaError(f"the database's queue tables are at version {found}, this cloudqueue "
                          f"needs {LATEST}: migrate it with `cloudqueue db migrate --store URL` "
                          "(or start `cloudqueue serve --store URL`, which migrates at start)")


def newer(found: int) -> str:
    return (f"the database's queue tables are at version {found}, newer than this cloudqueue "
            f"knows ({LATEST}): run the cloudqueue that migrated it, or a newer one")
