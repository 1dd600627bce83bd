"""The database: its URL, a node's pool of connections, and what its errors mean.

A node keeps few connections (``MAX_CONNECTIONS``): its apps' stores write through them in
turns, and the membership loop uses one now and then. Every connection runs with
``synchronous_commit = on`` (a commit is acknowledged once it is durable where the server says),
a statement timeout and an idle-in-transaction timeout (a stuck statement or a forgotten
transaction cannot hold the queue's rows, or the database's vacuum, for long).

Errors: a full disk on the server (SQLSTATE 53100) is ``DiskFullError`` (507, as the log's);
anything else that keeps a write from its answer (the server gone, a connection cut, a timeout)
is ``DatabaseUnavailableError`` (503): the queue fails closed while it lasts and recovers by
itself once the database answers again.
"""

from __future__ import annotations

import asyncio

import asyncpg

from cloudqueue.engine.core.errors import (
    DatabaseUnavailableError,
    DiskFullError,
    FencedError,
    LogError,
)
from cloudqueue.engine.runtime.postgres import schema
from cloudqueue.engine.runtime.postgres.urls import is_database_url, shown_url

__all__ = ["DatabaseUnavailableError", "FencedError", "as_queue_error", "connect",
           "is_database_url", "open_database", "refusal", "shown_url"]

MAX_CONNECTIONS = 6  # per node, whatever its load (a dozen nodes fit the default max_connections)
STATEMENT_TIMEOUT_MS = 30_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 5.0


def as_queue_error(exc: BaseException, doing: str) -> LogError:
    """What a database error means for the queue (see the module's doc)."""
    if isinstance(exc, LogError):
        return exc
    if isinstance(exc, asyncpg.DiskFullError):
        return DiskFullError(f"the database's disk is full ({doing}): nothing new is accepted "
                             "until space is freed on the database server")
    detail = str(exc) or type(exc).__name__
    return DatabaseUnavailableError(f"the database did not answer ({doing}: {detail}); nothing "
                                    "new is accepted until it does")


# what a database call raises when its answer is lost or refused (InternalClientError: a
# connection cut in the middle of an operation)
UNAVAILABLE = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
               asyncpg.exceptions._base.InternalClientError)


async def connect(url: str, *, min_size: int = 1, max_size: int = MAX_CONNECTIONS,
                  application_name: str = "cloudqueue") -> asyncpg.Pool:
    """A pool of connections to ``url``, each with the queue's session settings."""
    settings = {"application_name": application_name, "synchronous_commit": "on",
                "statement_timeout": str(STATEMENT_TIMEOUT_MS),
                "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_TIMEOUT_MS)}
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                     timeout=CONNECT_TIMEOUT_S, command_timeout=None,
                                     server_settings=settings, max_inactive_connection_lifetime=0,
                                     reset=_keep_session)
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection going back to the pool keeps its session: the queue leaves nothing in one
    (no LISTEN, no session setting, advisory locks released where taken), and asyncpg's
    default reset costs a round trip per release, as much as a whole batch's INSERT. (An open
    transaction is still rolled back by the pool before this.)"""
    return None


async def open_database(url: str, *, migrate: bool = True, max_size: int = MAX_CONNECTIONS,
                        application_name: str = "cloudqueue") -> asyncpg.Pool:
    """The pool, its tables migrated to the latest version (``migrate``) or checked to be.

    Raises:
        schema.SchemaError: the tables are behind (and ``migrate`` is False) or ahead.
        OSError, asyncpg.PostgresError: the database cannot be reached or refuses.
    """
    pool = await connect(url, max_size=max_size, application_name=application_name)
    try:
        async with pool.acquire() as conn:
            if migrate:
                await schema.migrate(conn)
            await schema.check(conn)
    except BaseException:
        await pool.close()
        raise
    return pool


def refusal(url: str, exc: BaseException) -> str:
    """One line on why the queue cannot use the database at ``url``, and what to run."""
    where = shown_url(url)
    if isinstance(exc, schema.SchemaError):
        return f"{where}: {exc}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (f"{where}: {exc}; create it first (`createdb NAME`, or "
                "`psql -c 'CREATE DATABASE name'`)")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError |
                  asyncpg.InvalidPasswordError):
        return f"{where}: the database refused the user: {exc}"
    if isinstance(exc, OSError | asyncio.TimeoutError):
        return (f"cannot reach the database at {where} ({exc or type(exc).__name__}); is it "
                "running? (`pg_isready -d URL` tells)")
    return f"{where}: {exc}"




