"""The embedded ``Engine`` on a database: a node of one app, which it keeps.

``Engine(store="postgresql://...")`` joins the group as a node serving its one app (its
``name``, else ``"default"``), waits for that app's lease (free, or expired after its last
owner died), and keeps it until it closes: it never hands the app to a node that joins later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from cloudqueue.engine.core.errors import DatabaseRefusedError
from cloudqueue.engine.runtime.clock import Clock, wait_for
from cloudqueue.engine.runtime.postgres.database import open_database, refusal
from cloudqueue.engine.runtime.postgres.node import Node, NodeOptions
from cloudqueue.engine.runtime.postgres.store import Lease, PgOpener

DEFAULT_APP = "default"
WAIT_FOR_LEASE_MS = 15_000  # a dead owner's lease expires within NodeOptions.lease_ms


class _Holder:
    def __init__(self) -> None:
        self.lease: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self.on_lost: Callable[[], None] | None = None

    async def acquired(self, lease: Lease) -> None:
        if not self.lease.done():
            self.lease.set_result(lease)

    async def lost(self) -> None:
        if self.on_lost is not None:
            self.on_lost()

    async def handover(self) -> None:
        return None  # the engine closes before its node leaves


@dataclass
class Joined:
    pool: asyncpg.Pool
    node: Node
    opener: PgOpener
    holder: _Holder

    async def leave(self) -> None:
        with contextlib.suppress(Exception):
            await self.node.leave()
        await self.pool.close()


async def join(url: str, app_id: str, clock: Clock, *, options: NodeOptions | None = None,
               wait_ms: int = WAIT_FOR_LEASE_MS) -> Joined:
    """Join as the node of ``app_id`` and wait for its lease.

    Raises:
        DatabaseRefusedError: the database cannot be used, or another node keeps the app.
    """
    try:
        pool = await open_database(url, max_size=4)
    except Exception as exc:
        raise DatabaseRefusedError(refusal(url, exc)) from None
    holder = _Holder()
    node = Node(pool, {app_id: holder}, clock, options=options, pinned=True)
    try:
        await node.start()
        lease = await wait_for(clock, asyncio.shield(holder.lease), wait_ms)
    except TimeoutError:
        owner = node.owners.get(app_id)
        where = f"node {owner.node_id}" + (f" ({owner.url})" if owner and owner.url else "") \
            if owner else "another node"
        await Joined(pool, node, PgOpener(pool, Lease(app_id, node.node_id, 0, 0), clock),
                     holder).leave()
        raise DatabaseRefusedError(
            f"app {app_id} is dispatched by {where}: an embedded Engine needs its app to "
            f"itself; give it another name (Engine(name=...)) or stop that node") from None
    except BaseException:
        await Joined(pool, node, PgOpener(pool, Lease(app_id, node.node_id, 0, 0), clock),
                     holder).leave()
        raise
    return Joined(pool, node, PgOpener(pool, lease, clock), holder)
