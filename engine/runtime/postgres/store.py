"""PgStore: one app's facts in PostgreSQL, written only by the node that holds the app's lease.

The events the core emits are the same facts the log keeps, in the same encoding; only where
they are kept differs. Each group commit is one row of ``cq_batches`` (the events
``first_seq..last_seq``, framed with CRCs), inserted by one statement that also checks the
writer's lease: the row goes in only while ``cq_leases`` still names this node at this epoch.
A takeover bumps the epoch in a transaction that first locks ``cq_batches`` in SHARE mode
(``leases.TAKE_LOCK``), which waits for every insert in flight to end and holds new ones back
until it commits; an insert takes its snapshot only after its table lock is granted. So every
batch is either committed before the takeover (and read by the new owner, which reads after its
bump) or sees the new epoch and inserts nothing (``FencedError``): a zombie's late write changes
nothing. (Locking the lease row in each insert instead, ``FOR SHARE``, is as safe and costs
each commit a row lock: a tenth of a one-producer enqueue's time.)

Faults, at their root:

- **The database's disk is full** (SQLSTATE 53100): nothing of the batch was stored. As with the
  log, the tasks submitted in it and behind it are rolled back (their callers get 507) and the
  rest is retried with a backoff.
- **Any other error on the write** (the server gone, the connection cut, a timeout): whether the
  commit happened is unknown. The store stops accepting (503, not ready), rolls back what was
  queued behind the batch (never sent: its callers get 503, "not stored"), and retries, first
  asking whether the batch's row is there. Its callers are answered once that is known: stored,
  or rolled back as "not stored". If it stays unknown for ``UNKNOWN_AFTER_MS``, they get
  ``OutcomeUnknownError`` (enqueuing again with the same uniqueId is safe) while the retries go
  on. When the database answers again the store accepts again, with no restart.
- **The lease is gone** (fenced): the store fails closed for good; the node hands the app to
  its new owner, whose replay decides the fate of everything in flight.

A node that cannot renew its lease stops starting runs before the lease can expire
(``holds_lease``, read by the driver right before each call): the lease's deadline is kept on
this node's monotonic clock from the moment the renewal was sent.

Compaction: the state at a seq is folded from the latest snapshot and the batches up to it, in a
child process (``compactor``, as the log's), and written as the app's new snapshot under the
same lease check; the batches it covers are then deleted, in bounded statements. It is due once
the batches since the snapshot are a quarter of the snapshot's size (at least
``MIN_COMPACT_BYTES``, at most ``compact_bytes``): a node that takes the app over reads the
snapshot and folds every event after it, and an event folds at several times the cost of a
snapshot's byte (whose finished tasks stay packed: ``task_rows.KeptTask``); the events of tasks
long finished and expired are work a takeover would do for nothing. Folding them in the
compactor instead costs the owner little: it carries the snapshot's packed rows through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg
import msgpack

from cloudqueue.engine.core.errors import (
    LogError,
    LogGapError,
    OutcomeUnknownError,
)
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.runtime.batches import decode_batch, encode_events
from cloudqueue.engine.runtime.clock import Clock
from cloudqueue.engine.runtime.log_dir import run_compactor
from cloudqueue.engine.runtime.log_sync import DiskFullBackoff, DurableWaiters
from cloudqueue.engine.runtime.metrics import FSYNC_BUCKETS, Histogram
from cloudqueue.engine.runtime.postgres.database import (
    UNAVAILABLE,
    DatabaseUnavailableError,
    FencedError,
    as_queue_error,
)
from cloudqueue.engine.runtime.snapshot import decode_snapshot
from cloudqueue.engine.runtime.store import Store, StoredState, StoreHooks

log = logging.getLogger("cloudqueue.postgres")

UNKNOWN_AFTER_MS = 10_000  # a batch's callers wait this long for a lost answer to be known
SNAPSHOT_PART_BYTES = 8 * 1024 * 1024  # a snapshot is kept in rows of at most this
DELETE_BATCH_ROWS = 5_000  # covered batches deleted per statement
DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024  # of batches written since the last snapshot, at most
# ... and at least this much, once the batches are a quarter of the snapshot (module doc)
MIN_COMPACT_BYTES = 2 * 1024 * 1024

# fenced by the lease row (see the module's doc: why no row lock is needed here)
INSERT_BATCH = """
INSERT INTO cq_batches (app_id, last_seq, first_seq, prev_seq, epoch, body)
SELECT $1, $2, $3, $7, $4, $5 FROM cq_leases
 WHERE app_id = $1 AND epoch = $4 AND owner = $6
"""
LEASE_HELD = """
SELECT 1 FROM cq_leases WHERE app_id = $1 AND epoch = $2 AND owner = $3 FOR SHARE
"""


@dataclass
class Lease:
    """This node's hold on one app's dispatch: ``epoch`` fences its writes; it may start runs
    until ``valid_until_ms`` (its own monotonic clock), which each renewal moves on."""

    app_id: str
    node_id: str
    epoch: int
    valid_until_ms: float
    lost: bool = False
    on_valid: Callable[[], None] | None = None  # called when a renewal ends a lapse
    # taken moments after another lease ended (NodeOptions.failover_window_ms): StoredState's
    failover: bool = False

    def valid(self, now_monotonic_ms: float) -> bool:
        return not self.lost and now_monotonic_ms < self.valid_until_ms


class PgStore:
    """The ``Store`` of one app in the database ``pool`` holds, under ``lease``."""

    def __init__(self, pool: asyncpg.Pool, lease: Lease, clock: Clock, *, last_seq: int,
                 snapshot_seq: int = 0, bytes_since_snapshot: int = 0, snapshot_bytes: int = 0,
                 compact_bytes: int | None = DEFAULT_COMPACT_BYTES,
                 on_compact_due: Callable[[], None] | None = None,
                 on_disk_full: Callable[[list[Event]], list[Event]] | None = None) -> None:
        self.pool = pool
        self.lease = lease
        self.app_id = lease.app_id
        self.clock = clock
        self.compact_bytes = compact_bytes
        self.on_compact_due = on_compact_due
        self.on_disk_full = on_disk_full
        self.snapshot_seq = snapshot_seq
        self.bytes_since_snapshot = bytes_since_snapshot
        self.snapshot_bytes = snapshot_bytes  # the latest snapshot's size
        self._durable_seq = last_seq
        self._appended_seq = last_seq
        self._pending: list[Event] = []
        self._kick = asyncio.Event()
        self._waiters = DurableWaiters()
        self._refused: dict[int, LogError] = {}  # rolled back, never to be stored: why
        self._failure: LogError | None = None  # for good: fenced, or closed
        self._trouble: LogError | None = None  # for now: the database is unavailable or full
        self._writing = False
        self._compacting = False
        self._flusher: asyncio.Task[None] | None = None
        self._backoff = DiskFullBackoff(clock)
        self.unknown_after_ms = UNKNOWN_AFTER_MS
        self.batches = 0
        self.records = 0
        self.commit_seconds = Histogram(FSYNC_BUCKETS)  # each batch's commit, seconds

    # ------------------------------------------------------------------ opening

    @classmethod
    async def load(cls, pool: asyncpg.Pool, lease: Lease, clock: Clock,
                   **options: Any) -> tuple[PgStore, StoredState]:
        """The app's latest snapshot and the batches after it (the lease must be this node's
        already: the epoch bump comes before the read), and a store to append after them.

        Raises:
            LogGapError: batches missing between the snapshot and the last batch.
            LogError: a row that does not decode.
        """
        state, sizes = await read_app(pool, lease.app_id)
        state.failover = lease.failover
        store = cls(pool, lease, clock, last_seq=state.last_seq, snapshot_seq=state.snapshot_seq,
                    bytes_since_snapshot=sizes.batches, snapshot_bytes=sizes.snapshot, **options)
        return store, state

    # ------------------------------------------------------------------ Store protocol

    @property
    def durable_seq(self) -> int:
        return self._durable_seq

    @property
    def accepting(self) -> bool:
        return self._failure is None and self._trouble is None

    @property
    def failure(self) -> LogError | None:
        return self._failure or self._trouble

    @property
    def busy(self) -> bool:
        return bool(self._pending) or self._writing or self._compacting

    @property
    def holds_lease(self) -> bool:
        """Whether this node may start runs of the app now (see the module's doc)."""
        return self._failure is None and self.lease.valid(self.clock.monotonic_ms())

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(),
                                            name=f"cloudqueue-pg:{self.app_id}")

    def append(self, events: Sequence[Event]) -> None:
        if self._failure is not None:
            raise self._failure
        if events:
            self._pending.extend(events)
            self._appended_seq = events[-1].seq
            self._kick.set()

    async def wait_durable(self, seq: int) -> None:
        if seq in self._refused:
            raise self._refused[seq]
        if seq <= self._durable_seq:
            return
        if seq in self._waiters.unknown:
            raise self._waiters.unknown[seq]
        if self._failure is not None:
            raise self._failure
        if seq > self._appended_seq:
            raise LogError(f"seq {seq} was never appended to the store")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(seq, future)
        await future

    def fence(self, reason: str = "") -> None:
        """The lease is gone: fail closed now (nothing more is written or started)."""
        self.lease.lost = True
        self._fail(FencedError(f"app {self.app_id} is dispatched by another node now"
                               f"{': ' + reason if reason else ''}; nothing more is written "
                               "here"))

    async def close(self) -> None:
        """Write what is pending (while the database answers and the lease holds), then stop."""
        if self._failure is None and self._appended_seq > self._durable_seq:
            with contextlib.suppress(LogError, TimeoutError):
                await asyncio.wait_for(self.wait_durable(self._appended_seq), 10)
        if self._failure is None:
            self._fail(LogError("the store was closed before this was written"))
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None

    # ------------------------------------------------------------------ the flusher

    async def _flush_forever(self) -> None:
        try:
            while self._failure is None:
                await self._kick.wait()
                self._kick.clear()
                if not self._pending:
                    continue
                batch, self._pending = self._pending, []
                self._writing = True
                try:
                    await self._write(batch)
                finally:
                    self._writing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug below us: fail closed rather than leave waiters
            log.exception("app %s: the store's writer failed", self.app_id)
            self._fail(LogError(f"the store's writer failed: {exc!r}"))

    async def _write(self, batch: list[Event]) -> None:
        """Commit ``batch`` as one row; retry through faults until it is known to be stored
        (or rolled back), or the store fails for good."""
        body = encode_events(batch)
        lost_since: float | None = None  # when an attempt whose answer was lost went out
        while self._failure is None:
            try:
                if lost_since is not None and await self._is_stored(batch[-1].seq):
                    break
                if await self._insert(batch, body):
                    break
                self.fence("its lease moved to a newer epoch")
                return
            except asyncpg.UniqueViolationError:
                break  # an earlier attempt whose answer was lost did commit it
            except asyncpg.DiskFullError as exc:
                if lost_since is None:  # nothing of it was stored
                    batch = self._disk_full(batch, as_queue_error(exc, "storing tasks"))
                    if not batch:  # the next enqueue, after the backoff, is the probe
                        await self._backoff.wait()
                        self._trouble = None
                        return
                    body = encode_events(batch)
            except UNAVAILABLE as exc:
                lost_since = await self._answer_lost(batch, as_queue_error(exc, "storing tasks"),
                                               lost_since)
            await self._backoff.wait()
        else:
            return
        self._stored(batch, len(body))

    async def _insert(self, batch: list[Event], body: bytes) -> bool:
        """One attempt; False if the lease is no longer this node's at this epoch."""
        started = time.perf_counter()
        async with self.pool.acquire() as conn:
            status = await conn.execute(INSERT_BATCH, self.app_id, batch[-1].seq, batch[0].seq,
                                        self.lease.epoch, body, self.lease.node_id,
                                        self._durable_seq)
        self.commit_seconds.observe(time.perf_counter() - started)
        return not status.endswith(" 0")

    async def _answer_lost(self, batch: list[Event], error: LogError,
                           since: float | None) -> float:
        """An attempt's answer was lost: the first time, stop accepting; after
        ``UNKNOWN_AFTER_MS`` of it, tell the batch's callers the outcome is unknown."""
        now = self.clock.monotonic_ms()
        await self.pool.expire_connections()  # none of them is to be trusted: connect anew
        if since is None:
            self._unavailable(error)
            return now
        if now - since >= self.unknown_after_ms:
            self._outcome_unknown(batch, error)
        return since

    async def _is_stored(self, last_seq: int) -> bool:
        async with self.pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM cq_batches WHERE app_id = $1 AND last_seq = $2",
                self.app_id, last_seq)
        return found is not None

    def _stored(self, batch: list[Event], size: int) -> None:
        self._trouble = None
        self._backoff.reset()
        self.batches += 1
        self.records += len(batch)
        self.bytes_since_snapshot += size
        self._durable_seq = max(self._durable_seq, batch[-1].seq)
        self._waiters.release_upto(self._durable_seq)
        if self._pending:
            self._kick.set()
        if (self.compact_bytes is not None and self.on_compact_due is not None
                and not self._compacting and self.bytes_since_snapshot >= self.compact_due_bytes):
            self.on_compact_due()

    @property
    def compact_due_bytes(self) -> int:
        """The bytes of batches since the snapshot at which a compaction is due (module doc)."""
        assert self.compact_bytes is not None
        return min(self.compact_bytes, max(MIN_COMPACT_BYTES, self.snapshot_bytes // 4))

    def _disk_full(self, batch: list[Event], error: LogError) -> list[Event]:
        """Nothing of ``batch`` was stored: roll back its tasks and those queued behind it
        (their callers get ``error``); what is left is retried."""
        self._trouble = error
        queued = batch + self._pending
        kept = self.on_disk_full(queued) if self.on_disk_full is not None else queued
        kept_seqs = {e.seq for e in kept}
        for event in queued:
            if event.seq not in kept_seqs:
                self._reject(event.seq, error)
        self._pending = []
        log.error("app %s: %s: %d event(s) rolled back, %d kept for retry", self.app_id,
                  error, len(queued) - len(kept), len(kept))
        return kept

    def _unavailable(self, error: LogError) -> None:
        """The write's answer was lost: stop accepting, and roll back what was queued behind it
        (never sent: not stored)."""
        self._trouble = error
        behind, self._pending = self._pending, []
        if behind:
            kept = self.on_disk_full(behind) if self.on_disk_full is not None else behind
            kept_seqs = {e.seq for e in kept}
            refused = DatabaseUnavailableError(f"{error}; the task was not stored")
            for event in behind:
                if event.seq not in kept_seqs:
                    self._reject(event.seq, refused)
            self._pending = kept
        log.error("app %s: %s", self.app_id, error)

    def _reject(self, seq: int, error: LogError) -> None:
        self._refused[seq] = error
        self._waiters.reject(seq, error)

    def _outcome_unknown(self, batch: list[Event], error: LogError) -> None:
        for event in batch:
            if event.seq not in self._waiters.unknown:
                self._waiters.unknown_outcome(event.seq, OutcomeUnknownError(
                    f"{error}; whether the task was stored is not known yet: enqueuing it again "
                    "with the same uniqueId is safe", getattr(event, "unique_id", None)))

    def _fail(self, error: LogError) -> None:
        if self._failure is not None:
            return
        self._failure = error
        self._pending.clear()
        self._waiters.fail_all(error)
        self._kick.set()

    # ------------------------------------------------------------------ compaction

    async def compact(self, seq: int) -> int:
        """Make the state at ``seq`` the app's snapshot and delete the batches it covers;
        returns how many batches were deleted."""
        if self._failure is not None:
            raise self._failure
        if self._compacting:
            raise LogError("a compaction is already running")
        self._compacting = True
        try:
            await self.wait_durable(seq)
            written_before = self.bytes_since_snapshot
            async with self.pool.acquire() as conn:
                head = await conn.fetchrow(
                    "SELECT seq FROM cq_snapshots WHERE app_id = $1 ORDER BY seq DESC LIMIT 1",
                    self.app_id)
                base = int(head["seq"]) if head else 0
                if base >= seq:
                    return 0
                data = await self._fold(conn, base, seq)
            await self._write_snapshot(seq, data)
            self.snapshot_seq = seq
            self.snapshot_bytes = len(data)
            self.bytes_since_snapshot = max(0, self.bytes_since_snapshot - written_before)
            return await self._delete_covered(seq)
        except UNAVAILABLE as exc:
            raise as_queue_error(exc, "compacting") from exc
        finally:
            self._compacting = False

    async def _fold(self, conn: Any, base: int, seq: int) -> bytes:
        """The state at ``seq``, folded in a child process (``compactor``, off this process's
        loop and GIL) from the snapshot at ``base`` and the batches after it, which are streamed
        to it row by row: the node never holds them all at once."""
        async def feed(stdin: asyncio.StreamWriter) -> None:
            packer = msgpack.Packer(use_bin_type=True)
            stdin.write(packer.pack([seq, self.clock.now_ms()]))
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                for query, upto in ((SNAPSHOT_PARTS, base), (COVERED_BATCHES, seq)):
                    async for row in conn.cursor(query, self.app_id, base, upto, prefetch=16):
                        stdin.write(packer.pack([query is SNAPSHOT_PARTS, row["body"]]))
                        await stdin.drain()

        return await run_compactor(["-"], feed)

    async def _write_snapshot(self, seq: int, data: bytes) -> None:
        pieces = [data[i:i + SNAPSHOT_PART_BYTES]
                  for i in range(0, len(data), SNAPSHOT_PART_BYTES)] or [b""]
        async with self.pool.acquire() as conn, conn.transaction():
            held = await conn.fetchval(LEASE_HELD, self.app_id, self.lease.epoch,
                                       self.lease.node_id)
            if held is None:
                self.fence("its lease moved while it compacted")
                raise self._failure or FencedError("fenced")
            await conn.executemany(
                "INSERT INTO cq_snapshots (app_id, seq, part, parts, body) "
                "VALUES ($1, $2, $3, $4, $5)",
                [(self.app_id, seq, i, len(pieces), piece) for i, piece in enumerate(pieces)])
            await conn.execute("DELETE FROM cq_snapshots WHERE app_id = $1 AND seq < $2",
                               self.app_id, seq)

    async def _delete_covered(self, seq: int) -> int:
        """Delete the batches the snapshot at ``seq`` covers, a bounded number per statement
        (a long delete would hold back vacuum and the other writers)."""
        deleted = 0
        while True:
            async with self.pool.acquire() as conn:
                status = await conn.execute(
                    "DELETE FROM cq_batches WHERE ctid = ANY(ARRAY("
                    "SELECT ctid FROM cq_batches WHERE app_id = $1 AND last_seq <= $2 "
                    "LIMIT $3))", self.app_id, seq, DELETE_BATCH_ROWS)
            count = int(status.split()[-1])
            deleted += count
            if count < DELETE_BATCH_ROWS:
                return deleted


class ReadSizes(NamedTuple):
    snapshot: int  # the bytes of the app's latest snapshot (0: none)
    batches: int  # the bytes of the batches after it


async def read_app(pool: asyncpg.Pool, app_id: str) -> tuple[StoredState, ReadSizes]:
    """The app's latest snapshot and the batches after it, decoded (in a worker thread), and
    the bytes of each.

    Raises:
        LogGapError: batches missing between the snapshot and the last batch.
        LogError: a row that does not decode.
    """
    started = time.perf_counter()
    async with pool.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            head = await conn.fetchrow(
                "SELECT seq, parts FROM cq_snapshots WHERE app_id = $1 "
                "ORDER BY seq DESC, part LIMIT 1", app_id)
            snapshot_seq = int(head["seq"]) if head else 0
            parts = (await conn.fetch(
                "SELECT body FROM cq_snapshots WHERE app_id = $1 AND seq = $2 ORDER BY part",
                app_id, snapshot_seq)) if head else []
            rows = await conn.fetch(BATCHES_AFTER, app_id, snapshot_seq)
    if head is not None and len(parts) != head["parts"]:
        raise LogGapError(f"the snapshot of app {app_id} at seq {snapshot_seq} has "
                          f"{len(parts)} of its {head['parts']} parts")
    bodies = [bytes(p["body"]) for p in parts]
    state = await asyncio.to_thread(_decode_state, app_id, snapshot_seq, bodies,
                                    [(r["prev_seq"], r["last_seq"], bytes(r["body"]))
                                     for r in rows])
    sizes = ReadSizes(sum(map(len, bodies)), sum(len(r["body"]) for r in rows))
    state.report = ReadReport(len(state.snapshot_tasks), len(state.events),
                              sizes.snapshot + sizes.batches, time.perf_counter() - started)
    return state, sizes


async def read_after(pool: asyncpg.Pool, app_id: str, seq: int) -> StoredState:
    """The app's events after ``seq`` (``counters`` None: they go on from a core that has the
    state up to ``seq``).

    Raises:
        LogGapError: the batch that followed ``seq`` is gone (a snapshot covered and deleted
            it): read the app whole (``read_app``).
    """
    async with pool.acquire() as conn:
        rows = await conn.fetch(BATCHES_AFTER, app_id, seq)
    decoded = [(r["prev_seq"], r["last_seq"], bytes(r["body"])) for r in rows]
    if len(decoded) > 64:
        state = await asyncio.to_thread(_decode_state, app_id, seq, [], decoded)
    else:  # a turn's worth: quicker than a thread's hop
        state = _decode_state(app_id, seq, [], decoded)
    state.counters = None
    return state


async def since_snapshot(pool: asyncpg.Pool, app_id: str) -> tuple[int, ReadSizes]:
    """The seq of the app's latest snapshot (0: none), its bytes and those of the batches after
    it: where a store opened on the app stands towards its next compaction."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT s.seq, (SELECT coalesce(sum(octet_length(b.body)), 0) FROM cq_batches b "
            "               WHERE b.app_id = $1 AND b.last_seq > s.seq) AS size, "
            "       (SELECT coalesce(sum(octet_length(p.body)), 0) FROM cq_snapshots p "
            "         WHERE p.app_id = $1 AND p.seq = s.seq) AS snapshot "
            "  FROM (SELECT coalesce(max(seq), 0) AS seq FROM cq_snapshots "
            "         WHERE app_id = $1) s", app_id)
    assert row is not None  # (an aggregate: one row always)
    return int(row["seq"]), ReadSizes(int(row["snapshot"]), int(row["size"]))


def _decode_state(app_id: str, snapshot_seq: int, parts: list[bytes],
                  rows: list[tuple[int, int, bytes]]) -> StoredState:
    """What ``load`` read, decoded (in a worker thread): checks that the batches follow on."""
    snapshot = decode_snapshot(b"".join(parts), f"the snapshot of app {app_id}") if parts \
        else None
    events: list[Event] = []
    stored = snapshot_seq  # the last seq known stored so far
    for index, (prev, last, body) in enumerate(rows):
        if prev > stored or (index and prev != stored):
            raise LogGapError(f"app {app_id}'s batches after seq {stored}, up to seq {prev}, "
                              "are not in the database")
        for event in decode_batch(body, f"app {app_id}'s batch ending at seq {last}"):
            if event.seq > snapshot_seq:
                events.append(event)
        stored = last
    return StoredState(snapshot_tasks=snapshot.tasks if snapshot else [],
                       snapshot_seq=snapshot_seq, events=events,
                       counters=snapshot.counters if snapshot else {},
                       snapshot_schedules=snapshot.schedules if snapshot else [])


@dataclass
class ReadReport:
    """What a whole read of an app took (``open_and_replay`` logs it, with the rebuild's time):
    for an operator who wonders why a takeover took the seconds it did."""

    snapshot_tasks: int
    events: int
    bytes_read: int
    seconds: float  # fetching from the database and decoding
    apply_seconds: float = 0.0  # rebuilding the state from what was read

    def summary(self) -> str:
        return (f"read {self.snapshot_tasks} tasks from the snapshot and {self.events} events "
                f"after it ({self.bytes_read / 1e6:.1f} MB) in {self.seconds:.3f} s "
                f"(+ {self.apply_seconds:.3f} s rebuilding state)")


BATCHES_AFTER = ("SELECT prev_seq, last_seq, body FROM cq_batches WHERE app_id = $1 "
                 "AND last_seq > $2 ORDER BY last_seq")
SNAPSHOT_PARTS = ("SELECT body FROM cq_snapshots WHERE app_id = $1 AND seq = $2 "
                  "AND $3::bigint = $2 ORDER BY part")
COVERED_BATCHES = ("SELECT body FROM cq_batches WHERE app_id = $1 AND last_seq > $2 "
                   "AND first_seq <= $3 ORDER BY last_seq")


class PgOpener:
    """The engine's ``AsyncStoreOpener`` for one app under ``lease``: ``PgStore.load`` with the
    engine's hooks."""

    def __init__(self, pool: asyncpg.Pool, lease: Lease, clock: Clock,
                 compact_bytes: int | None = DEFAULT_COMPACT_BYTES) -> None:
        self.pool = pool
        self.lease = lease
        self.clock = clock
        self.compact_bytes = compact_bytes

    async def __call__(self, hooks: StoreHooks) -> tuple[Store, StoredState]:
        store, state = await PgStore.load(self.pool, self.lease, self.clock,
                                          compact_bytes=self.compact_bytes,
                                          on_compact_due=hooks.on_compact_due,
                                          on_disk_full=hooks.on_disk_full)
        return store, state
