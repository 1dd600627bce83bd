"""A standby: a copy of an app's state kept warm by the node next in line for the app.

Opening an app means reading its snapshot and batches and folding them into a core: about a
second per 50,000 tasks held on a quiet machine, several seconds on a busy one. Done at a
takeover, that time is added to every failover; done at a handover, the app waits for it. So
the node that would take an app next (``leases.next_in_line``: the node it would go to if its
owner died, or the node waiting for it to be handed back) reads it ahead of time and follows
the owner's batches each turn, folding them into a core of its own, through the same ``rebuild``
as a start. When it takes the app, it reads only the batches after the standby's seq (the epoch
has moved: no more can come) and starts from that core (``StandbyOpener``).

A snapshot that covered and deleted batches the standby had not read yet (``LogGapError``)
ends the standby; the node reads the app whole again at its next turn.
"""

from __future__ import annotations

import asyncio

import asyncpg

from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.runtime.clock import Clock
from cloudqueue.engine.runtime.postgres.store import (
    DEFAULT_COMPACT_BYTES,
    Lease,
    PgStore,
    read_after,
    read_app,
    since_snapshot,
)
from cloudqueue.engine.runtime.rebuild import rebuild_yielding
from cloudqueue.engine.runtime.store import Store, StoredState, StoreHooks


class Standby:
    """App ``app_id``'s state, folded into ``core`` (the engine's, unstarted: set it before the
    first ``catch_up``) and kept up by ``catch_up``; also that engine's ``AsyncStoreOpener``
    once the node has taken the app (``lease`` set): the batches after the standby's seq (the
    last ones the old owner wrote) on top of the core."""

    def __init__(self, pool: asyncpg.Pool, app_id: str, clock: Clock, *,
                 compact_bytes: int | None = DEFAULT_COMPACT_BYTES) -> None:
        self.pool = pool
        self.app_id = app_id
        self.clock = clock
        self.compact_bytes = compact_bytes
        self.core: EngineCore | None = None
        self.lease: Lease | None = None
        self.seq: int | None = None  # the last seq folded in (None: not read yet)
        self.opened = False
        self._folding = asyncio.Lock()  # one catch-up at a time, and none once it opens

    @property
    def ready(self) -> bool:
        return self.seq is not None and not self.opened

    async def catch_up(self) -> int:
        """Read the app whole (the first time) or the batches since the last call, and fold
        them in; the number of events folded.

        Raises:
            LogGapError: batches the standby had not read were deleted (it is over).
        """
        async with self._folding:
            return await self._catch_up()

    async def _catch_up(self) -> int:
        if self.core is None or self.opened:
            raise RuntimeError(f"app {self.app_id}'s standby has no core, or opened already")
        if self.seq is None:
            state, _ = await read_app(self.pool, self.app_id)
        else:
            state = await read_after(self.pool, self.app_id, self.seq)
        await rebuild_yielding(self.core, state.events, snapshot_seq=state.snapshot_seq,
                               snapshot_tasks=state.snapshot_tasks,
                               snapshot_schedules=state.snapshot_schedules,
                               counters=state.counters)
        self.seq = state.last_seq
        return len(state.events)

    async def __call__(self, hooks: StoreHooks) -> tuple[Store, StoredState]:
        async with self._folding:  # after a catch-up under way: the tail follows its seq
            return await self._open(hooks)

    async def _open(self, hooks: StoreHooks) -> tuple[Store, StoredState]:
        lease = self.lease
        if lease is None or self.seq is None or self.opened:
            raise RuntimeError(f"app {self.app_id}'s standby cannot open it (not taken, not "
                               "read, or opened already)")
        self.opened = True  # whatever happens next, its core is the engine's now
        tail = await read_after(self.pool, self.app_id, self.seq)
        snapshot_seq, sizes = await since_snapshot(self.pool, self.app_id)
        tail.failover = lease.failover
        store = PgStore(self.pool, lease, self.clock, last_seq=tail.last_seq,
                        snapshot_seq=snapshot_seq, bytes_since_snapshot=sizes.batches,
                        snapshot_bytes=sizes.snapshot,
                        compact_bytes=self.compact_bytes, on_compact_due=hooks.on_compact_due,
                        on_disk_full=hooks.on_disk_full)
        return store, tail
