"""A node: one process's part in a group of nodes sharing the database.

Each turn (``NodeOptions.turn_ms``) the node, on one connection:

1. beats its heart (``cq_nodes``: alive, its address, the apps it serves);
2. renews the leases of the apps it dispatches, in one statement; an app whose lease did not
   renew was taken over (its epoch moved): the node drops it at once (``AppHolder.lost``);
3. reads the nodes alive and the leases, and follows the plan (``leases.plan``): hands back the
   apps another node prefers once that node's standby of the app is ready (``AppHolder
   .handover``: runs in flight get their grace, what is pending is written, then the lease is
   released, so the next owner takes it at its next turn rather than after the lease expires),
   and takes the free apps it prefers (``AppHolder.acquired``: the epoch bumped, then the app's
   state read, or its standby's caught up, and its dispatch started);
4. keeps a standby (``standby.py``) of each app it is next in line for (``leases.next_in_line``)
   when its holders can (``KeepsStandby``): one read whole at a time, and against a death only
   once the node is calm (``_keep_standbys``); the apps whose standby is ready go out with the
   next heartbeat (``cq_nodes.warm``).

Every ``health.CHECK_EVERY_MS`` it also reads the database's health (``health.py``: the queue's
tables, and who holds the oldest transaction).

A turn that fails (the database is unavailable) is retried at the next; meanwhile each lease
stays valid on this node's monotonic clock until ``lease_ms - fence_margin_ms`` after the last
renewal was sent, after which the app's store refuses to start runs (``Lease.valid``). A node
stopping cleanly hands back every app and removes its row (``leave``).

``owners`` is what the node last read of who dispatches each app and where (for forwarding a
request to the app's owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from cloudqueue.engine.runtime.clock import Clock, wait_for
from cloudqueue.engine.runtime.postgres import leases as sql
from cloudqueue.engine.runtime.postgres.database import UNAVAILABLE
from cloudqueue.engine.runtime.postgres.health import CHECK_EVERY_MS, DbHealth
from cloudqueue.engine.runtime.postgres.leases import (
    LeaseRow,
    NodeRow,
    next_in_line,
    plan,
    preferred,
)
from cloudqueue.engine.runtime.postgres.store import Lease

log = logging.getLogger("cloudqueue.node")


# how long a node goes without an app moving to or from it before it begins a standby against a
# death (``Node._keep_standbys``)
STANDBY_CALM_MS = 30_000
# how long an app another node prefers stays with its owner while that node's standby of it is
# not ready (a node reading a big app; one that cannot read it at all gets it after this)
HANDOVER_WAIT_MS = 30_000


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """``lease_ms``: how long a lease lasts after each renewal (a dead node's apps move after
    about this long); ``turn_ms``: how often the node renews and looks; ``fence_margin_ms``: how
    long before its lease could expire a node that cannot renew stops starting runs."""

    lease_ms: int = 4_000
    turn_ms: int = 500
    fence_margin_ms: int = 1_000

    @property
    def failover_window_ms(self) -> int:
        """A takeover this soon after the app's previous lease ended (released, or expired) is
        a failover, not a start after the queue was down: the app's schedules fire every slot
        they missed (``Lease.failover``)."""
        return 2 * self.lease_ms

    def __post_init__(self) -> None:
        if not 0 < self.turn_ms < self.lease_ms - self.fence_margin_ms:
            raise ValueError("a node's turn must be shorter than its lease minus the margin")

    @classmethod
    def of(cls, lease_ms: int) -> NodeOptions:
        """Options for a lease of ``lease_ms``: a turn an eighth of it (at most 500 ms), runs
        stopped a quarter of it before it could expire."""
        return cls(lease_ms, min(500, lease_ms // 8), lease_ms // 4)


@runtime_checkable
class KeepsStandby(Protocol):
    """An ``AppHolder`` that can keep a standby of its app (``standby.py``) while another node
    dispatches it."""

    async def warm(self) -> bool:
        """Read the app (the first time) or what its owner wrote since (later); whether the
        standby is ready to take the app over."""
        ...

    def cool(self) -> None:
        """Drop the standby (the app went to another node's line)."""
        ...


class AppHolder(Protocol):
    """What a node does with an app when it gets or loses its lease."""

    async def acquired(self, lease: Lease) -> None:
        """Open the app here under ``lease`` (raise: the node releases the lease again)."""
        ...

    async def lost(self) -> None:
        """The lease is gone: stop at once, writing and starting nothing more."""
        ...

    async def handover(self) -> None:
        """Stop cleanly (runs in flight get their grace, pending writes are written)."""
        ...


@dataclass(frozen=True, slots=True)
class Owner:
    node_id: str
    url: str | None
    epoch: int


class Node:
    def __init__(self, pool: asyncpg.Pool, apps: Mapping[str, AppHolder], clock: Clock, *,
                 url: str | None = None, options: NodeOptions | None = None,
                 node_id: str | None = None, pinned: bool = False) -> None:
        self.pool = pool
        self.apps = dict(apps)
        self.clock = clock
        self.url = url
        self.options = options or NodeOptions()
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self.pinned = pinned  # keep every app taken until leaving (the embedded engine)
        self.held: dict[str, Lease] = {}
        self.owners: dict[str, Owner] = {}
        self.changed = asyncio.Event()  # set (and replaced) when an app opened or moved away
        self.turns = 0
        self.failed_turns = 0
        self.health = DbHealth()  # the database watched every CHECK_EVERY_MS (health.py)
        self._task: asyncio.Task[None] | None = None
        self._moving: dict[str, asyncio.Task[None]] = {}  # apps being opened or handed back
        # standbys: kept by holders that can (not by a pinned node), of the apps this node
        # would take next; ``warm`` those ready, ``_warming`` those catching up now
        self.standbys = not pinned and any(isinstance(h, KeepsStandby)
                                           for h in self.apps.values())
        self.warm: set[str] = set()
        self._warming: dict[str, asyncio.Task[None]] = {}
        self._wanted_since: dict[str, float] = {}  # held apps another node prefers: since when
        # when an app last moved to or from this node (began, or was done moving)
        self._moved_ms = float("-inf")
        self._stopping = False
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Join (one turn now, so a free app this node prefers is taken before this returns),
        then keep turning."""
        await self.turn()
        await self.settled()
        await self.health.check(self.pool)
        self._task = asyncio.create_task(self._run(), name=f"cloudqueue-node:{self.node_id}")

    async def settled(self) -> None:
        """Wait for the apps being opened or handed back to be done."""
        while self._moving:
            await asyncio.gather(*self._moving.values(), return_exceptions=True)

    async def leave(self) -> None:
        """Hand back every app (renewing their leases while their runs finish), and leave the
        group."""
        self._stopping = True
        for app_id in list(self.held):
            self._start_move(app_id, self._hand_back(app_id))
        while self._moving:  # keep renewing what is still being handed back
            await asyncio.wait(list(self._moving.values()), timeout=self.options.turn_ms / 1000)
            if self._moving:
                with contextlib.suppress(Exception):
                    await self.turn()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        warming = list(self._warming.values())
        for task in warming:
            task.cancel()
        await asyncio.gather(*warming, return_exceptions=True)
        with contextlib.suppress(*UNAVAILABLE):
            async with self.pool.acquire() as conn:
                await conn.execute(sql.LEAVE, self.node_id)

    def poke(self) -> None:
        """Turn now (a request found an app with no owner)."""
        self._wake.set()

    async def _run(self) -> None:
        checked_ms = self.clock.monotonic_ms()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, self._wake.wait(), self.options.turn_ms)
            self._wake.clear()
            try:
                await self.turn()
                if self.clock.monotonic_ms() - checked_ms >= CHECK_EVERY_MS:
                    checked_ms = self.clock.monotonic_ms()
                    await self.health.check(self.pool)
            except Exception:  # a bug: keep turning, or every lease would lapse
                log.exception("node %s: a turn failed", self.node_id)

    def _start_move(self, app_id: str, work: Coroutine[Any, Any, None]) -> None:
        """Open or hand back ``app_id`` beside the turns (which go on renewing its lease)."""
        self._moved_ms = self.clock.monotonic_ms()
        task = asyncio.create_task(work, name=f"cloudqueue-node:{app_id}")
        self._moving[app_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._moved_ms = self.clock.monotonic_ms()
            if self._moving.get(app_id) is task:
                del self._moving[app_id]
            self.changed.set()
            self.changed = asyncio.Event()

        task.add_done_callback(done)

    # ------------------------------------------------------------------ one turn

    async def turn(self) -> None:
        sent_ms = self.clock.monotonic_ms()
        try:
            async with self.pool.acquire() as conn:
                renewed = await self._renew(conn, sent_ms)
                nodes, rows = await self._look(conn)
        except UNAVAILABLE as exc:
            self.failed_turns += 1
            if self.failed_turns in (1, 10) or self.failed_turns % 100 == 0:
                log.warning("node %s: cannot reach the database (%s); its apps stop starting "
                            "runs %d ms after the last renewal", self.node_id, exc,
                            self.options.lease_ms - self.options.fence_margin_ms)
            return
        self.turns += 1
        self.failed_turns = 0
        stale = {a: lease for a, lease in self.held.items() if a not in renewed}
        for app_id, lease in stale.items():
            if self.held.get(app_id) is lease:  # (a hand-back may have finished meanwhile)
                await self._lost(app_id)
        self.owners = {r.app_id: Owner(r.owner, next((n.url for n in nodes
                                                      if n.node_id == r.owner), None), r.epoch)
                       for r in rows.values() if r.owner is not None and not r.expired}
        if not self._stopping:
            await self._follow(nodes, rows)

    async def _follow(self, nodes: list[NodeRow], rows: dict[str, LeaseRow]) -> None:
        """The turn's plan: hand back, keep standbys, take."""
        todo = plan(self.node_id, self.apps, nodes, rows, self.held, self._overdue(nodes))
        for app_id in () if self.pinned else todo.release:
            if app_id not in self._moving:
                self._start_move(app_id, self._hand_back(app_id))
        for app_id in todo.take:
            if app_id not in self._moving:
                await self._take(app_id)  # (from its standby, if this node kept one)
        if self.standbys:  # after the takes: a standby just used is not dropped
            line = next_in_line(self.node_id, self.apps, nodes, rows, self.held)
            self._keep_standbys(line, {a for a in line if preferred(a, nodes) == self.node_id})

    def _overdue(self, nodes: list[NodeRow]) -> set[str]:
        """The held apps another node has preferred for ``HANDOVER_WAIT_MS``: handed back
        whether or not its standby is ready."""
        now = self.clock.monotonic_ms()
        wanted = {a for a in self.held if preferred(a, nodes) not in (None, self.node_id)}
        self._wanted_since = {a: self._wanted_since.get(a, now) for a in wanted}
        return {a for a, since in self._wanted_since.items() if now - since >= HANDOVER_WAIT_MS}

    def _keep_standbys(self, apps: list[str], handovers: set[str]) -> None:
        """Catch up a standby of each of ``apps`` (one catch-up at a time per app, beside the
        turns), and drop the others'. Reading an app whole costs a core for seconds, so one
        app at a time; and a standby against a death (not of an app this node is waiting to be
        handed, ``handovers``) is begun only once the node is calm: nothing moved to or from it
        for ``STANDBY_CALM_MS``. While nodes come and go, those would be read and dropped
        again and again, crowding out the work that matters then (the failover without one
        reads the app whole, as before)."""
        now = self.clock.monotonic_ms()
        calm = not self._moving and now - self._moved_ms >= STANDBY_CALM_MS
        reading = any(a not in self.warm for a in self._warming)  # an app read whole
        for app_id in sorted(apps, key=lambda a: a not in handovers):
            if app_id in self._warming or app_id in self._moving:
                continue
            if app_id not in self.warm:  # its standby is to be read whole
                if reading or (app_id not in handovers and not calm):
                    continue
                reading = True
            task = asyncio.create_task(self._warm(app_id), name=f"cloudqueue-standby:{app_id}")
            self._warming[app_id] = task
        for app_id, holder in self.apps.items():
            if (app_id not in apps and app_id not in self.held and app_id not in self._moving
                    and app_id not in self._warming and isinstance(holder, KeepsStandby)):
                self.warm.discard(app_id)
                holder.cool()

    async def _warm(self, app_id: str) -> None:
        holder = self.apps[app_id]
        try:
            ready = isinstance(holder, KeepsStandby) and await holder.warm()
        except Exception:  # a bug: no standby, the app is read whole if taken
            log.exception("node %s: the standby of app %s failed", self.node_id, app_id)
            ready = False
        finally:
            del self._warming[app_id]
        if ready and app_id not in self.held:
            self.warm.add(app_id)
        else:
            self.warm.discard(app_id)

    async def _renew(self, conn: PoolConnectionProxy[Any], sent_ms: float) -> set[str]:
        await conn.execute(sql.HEARTBEAT, self.node_id, self.url, sorted(self.apps),
                           sorted(self.warm) if self.standbys else None)
        if not self.held:
            return set()
        sent = dict(self.held)
        found = await conn.fetch(sql.RENEW, self.node_id, self.options.lease_ms, list(sent),
                                 [lease.epoch for lease in sent.values()])
        renewed = {row["app_id"] for row in found}
        until = sent_ms + self.options.lease_ms - self.options.fence_margin_ms
        now_ms = self.clock.monotonic_ms()
        for app_id in renewed:
            lease = sent[app_id]
            if self.held.get(app_id) is not lease:  # handed back while the renewal ran
                continue
            lapsed = not lease.valid(now_ms)
            lease.valid_until_ms = until
            if lapsed and lease.on_valid is not None:  # it may start runs again: wake it
                lease.on_valid()
        return renewed

    async def _look(self, conn: PoolConnectionProxy[Any]
                    ) -> tuple[list[NodeRow], dict[str, LeaseRow]]:
        nodes = [NodeRow(r["node_id"], r["url"], frozenset(r["apps"]),
                         None if r["warm"] is None else frozenset(r["warm"]))
                 for r in await conn.fetch(sql.LIVE_NODES, self.options.lease_ms)]
        if self.node_id not in {n.node_id for n in nodes}:  # this node is alive: it just beat
            nodes.append(NodeRow(self.node_id, self.url, frozenset(self.apps),
                                 frozenset(self.warm) if self.standbys else None))
        rows = {r["app_id"]: LeaseRow(r["app_id"], r["owner"], r["epoch"], r["expired"])
                for r in await conn.fetch(sql.LEASES, list(self.apps))}
        return nodes, rows

    async def _take(self, app_id: str) -> None:
        sent_ms = self.clock.monotonic_ms()
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(sql.TAKE_LOCK)
                taken = await conn.fetchrow(sql.TAKE, app_id, self.node_id,
                                            self.options.lease_ms)
        except UNAVAILABLE as exc:
            log.warning("node %s: could not take app %s: %s", self.node_id, app_id, exc)
            return
        if taken is None:
            return  # another node was quicker
        ended_ms_ago = taken["ended_ms_ago"]
        lease = Lease(app_id, self.node_id, int(taken["epoch"]),
                      sent_ms + self.options.lease_ms - self.options.fence_margin_ms,
                      failover=ended_ms_ago is not None
                      and ended_ms_ago <= self.options.failover_window_ms)
        self.held[app_id] = lease
        self.warm.discard(app_id)  # (the standby, if ready, opens it: AppHolder.acquired)
        self.owners[app_id] = Owner(self.node_id, self.url, lease.epoch)
        self._start_move(app_id, self._open(lease))

    async def _open(self, lease: Lease) -> None:
        try:
            await self.apps[lease.app_id].acquired(lease)
        except Exception:
            log.exception("node %s: app %s could not start here; its lease is released",
                          self.node_id, lease.app_id)
            if self.held.get(lease.app_id) is lease:
                del self.held[lease.app_id]
            await self._release(lease)
            return
        log.info("node %s: dispatching app %s (epoch %d)", self.node_id, lease.app_id,
                 lease.epoch)

    async def _lost(self, app_id: str) -> None:
        self._moved_ms = self.clock.monotonic_ms()
        lease = self.held.pop(app_id)
        moving = self._moving.pop(app_id, None)
        if moving is not None:  # still opening (or handing back): stop that first
            moving.cancel()
            await asyncio.gather(moving, return_exceptions=True)
        lease.lost = True
        log.warning("node %s: app %s was taken over by another node (its lease, epoch %d, did "
                    "not renew); this node stops dispatching it", self.node_id, app_id,
                    lease.epoch)
        await self.apps[app_id].lost()

    async def _hand_back(self, app_id: str) -> None:
        lease = self.held[app_id]
        try:
            await self.apps[app_id].handover()
        finally:
            if self.held.get(app_id) is lease:
                del self.held[app_id]
                lease.lost = True
                await self._release(lease)
        log.info("node %s: handed app %s back (epoch %d)", self.node_id, app_id, lease.epoch)

    async def _release(self, lease: Lease) -> None:
        with contextlib.suppress(*UNAVAILABLE):
            async with self.pool.acquire() as conn:
                await conn.execute(sql.RELEASE, lease.app_id, self.node_id, lease.epoch)
