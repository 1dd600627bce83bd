"""What a node watches in the database besides its own work: the queue's tables (live and dead
rows, size, when autovacuum last ran) and the oldest open transaction anywhere in the database.

The oldest transaction matters because, while it is open, vacuum can remove no row deleted
after it began, in any table: the queue's deleted batches pile up as dead rows, and a queue
whose claims scan them slows into a "death spiral" (the best-known fault of queues built on
PostgreSQL). This queue claims in memory, not by scanning, so it slows much less, but its
tables still grow while such a transaction lives. So each node reads, every ``CHECK_EVERY_MS``,
who holds the oldest transaction or snapshot; past ``ALARM_AFTER_S`` it logs an error naming the
holder (its pid, application, client address, user and query) and the command that ends it, and
it says when the transaction is gone. ``GET /metrics`` shows the same figures
(``cloudqueue_db_*``, docs/metrics.md), for an alert rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from cloudqueue.engine.runtime.postgres.database import UNAVAILABLE

log = logging.getLogger("cloudqueue.postgres")

CHECK_EVERY_MS = 10_000
ALARM_AFTER_S = 60.0
DEAD_ROWS_ALARM = 100_000  # and more dead rows than live ones

TABLES_SQL = """
SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid) AS bytes,
       extract(epoch FROM now() - greatest(last_autovacuum, last_vacuum)) AS vacuumed_s
  FROM pg_stat_user_tables WHERE relname LIKE 'cq\\_%'
"""
# the oldest transaction, or snapshot, that holds back vacuum (in this database or in none:
# a transaction in another database of the cluster holds back the shared catalogs only)
OLDEST_SQL = """
SELECT pid, application_name, host(client_addr) AS client, usename, state,
       left(query, 200) AS query,
       extract(epoch FROM now() - coalesce(xact_start, backend_start)) AS age_s
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
   AND (datname = current_database() OR datname IS NULL)
 ORDER BY coalesce(xact_start, backend_start) LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class TableStats:
    live: int
    dead: int
    bytes: int
    vacuumed_s: float | None  # seconds since the last (auto)vacuum; None: never


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    application: str
    client: str | None
    user: str
    state: str | None
    query: str
    age_s: float

    def describe(self) -> str:
        who = f"pid {self.pid}"
        if self.application:
            who += f" ({self.application})"
        if self.client:
            who += f" from {self.client}"
        return (f"{who}, user {self.user}, {self.state or 'unknown state'}, open "
                f"{self.age_s:.0f} s, last query: {self.query.strip()[:120]!r}")


@dataclass
class DbHealth:
    """The latest reading (``check``), and the alarms it raised."""

    alarm_after_s: float = ALARM_AFTER_S
    tables: dict[str, TableStats] = field(default_factory=dict)
    oldest: Holder | None = None
    checks: int = 0
    alarms: int = 0
    _alarmed_pid: int | None = None

    async def check(self, pool: asyncpg.Pool) -> None:
        """Read the tables and the oldest transaction; alarm (or clear) as the module says.
        A database that does not answer leaves the last reading as it was."""
        try:
            async with pool.acquire() as conn:
                tables = await conn.fetch(TABLES_SQL)
                oldest = await conn.fetchrow(OLDEST_SQL)
        except UNAVAILABLE:
            return
        self.checks += 1
        self.tables = {r["relname"]: TableStats(r["n_live_tup"], r["n_dead_tup"], r["bytes"],
                                                _float(r["vacuumed_s"])) for r in tables}
        self.oldest = _holder(oldest)
        self._judge()

    def _judge(self) -> None:
        held = self.oldest
        if held is not None and held.age_s >= self.alarm_after_s:
            if held.pid != self._alarmed_pid:
                self.alarms += 1
                self._alarmed_pid = held.pid
                log.error("a transaction open for %.0f s holds back vacuum of the queue's tables:"
                          " %s; end it in its application, or with SELECT "
                          "pg_terminate_backend(%d)", held.age_s, held.describe(), held.pid)
        elif self._alarmed_pid is not None:
            log.warning("the transaction of pid %d that held back vacuum is gone",
                        self._alarmed_pid)
            self._alarmed_pid = None
        for name, stats in self.tables.items():
            if stats.dead >= DEAD_ROWS_ALARM and stats.dead > stats.live:
                log.warning("table %s holds %d dead rows (%d live): vacuum is behind (a long "
                            "transaction, or autovacuum too slow for the load)", name,
                            stats.dead, stats.live)

    @property
    def oldest_age_s(self) -> float:
        return self.oldest.age_s if self.oldest is not None else 0.0


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _holder(row: Any) -> Holder | None:
    if row is None:
        return None
    return Holder(row["pid"], row["application_name"] or "", row["client"], row["usename"] or "",
                  row["state"], row["query"] or "", float(row["age_s"] or 0.0))
