"""The server as one node of several sharing a PostgreSQL store (``serve --store URL``).

Every node serves every app's requests. The node that holds an app's lease (``engine/runtime/
postgres/node.py``) runs the app's engine; any other node forwards the app's requests to it,
whole, and streams the answer back (an event stream included), so a client may talk to any
node. While an app has no owner (its owner died and its lease has not expired yet, or it is
being handed over) a request waits for the new one, up to ``OWNER_WAIT_MS``, then gets 503 with
``Retry-After``.

A request is forwarded once: the ``X-CloudQueue-Forwarded`` header marks it. A node that gets a
forwarded request for an app it is opening waits for it to open; for an app it does not
dispatch (it moved, or this node is handing it over) it answers 421 at once, having done
nothing, and the node that forwarded it asks the app's next owner.

Each app's engine is made anew every time this node takes the app (``NodeApp``): an engine
reads the app's state at start, and the state another node left is only in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from cloudqueue.adapters.http_api.tenants import APPS, QueueApp
from cloudqueue.engine.core.errors import AppMovingError, LogGapError
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.runtime.clock import Clock, SystemClock
from cloudqueue.engine.runtime.postgres.database import (
    UNAVAILABLE,
    open_database,
    refusal,
    shown_url,
)
from cloudqueue.engine.runtime.postgres.health import DbHealth
from cloudqueue.engine.runtime.postgres.node import Node, NodeOptions
from cloudqueue.engine.runtime.postgres.standby import Standby
from cloudqueue.engine.runtime.postgres.store import Lease, PgOpener
from cloudqueue.engine.runtime.store import AsyncStoreOpener

log = logging.getLogger("cloudqueue.cluster")

FORWARDED_HEADER = "X-CloudQueue-Forwarded"
OWNER_WAIT_MS = 10_000
MAX_TRIES = 4  # owners a forwarded request is sent to, at most (each refused it unseen)
FORWARD_READ_S = 60.0  # an answer from the owner, except an event stream's, within
_STREAMS = ("/events", "/stream")  # event streams: forwarded as they flow, without a timeout
# hop-by-hop headers (RFC 9110 7.6.1) and what aiohttp sets itself: never copied across
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                  "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
# what is served by each node itself, whatever app the credentials name
_LOCAL_SUFFIXES = ("/apps", "/openapi.json")


class ClusterRefused(Exception):
    """The node cannot join: the database cannot be used (the message says why)."""


@dataclass(frozen=True)
class ClusterConfig:
    """``build(app_id, opener)``: the app's engine, unstarted, on ``opener``; ``url()``: where
    other nodes reach this one (known once the server has bound its port)."""

    store: str
    build: Callable[[str, AsyncStoreOpener | None], Engine]
    url: Callable[[], str]
    lease_ms: int = 4_000
    grace_ms: int = 10_000
    clock: Clock | None = None


class NodeApp:
    """One app on this node: a new engine each time the node takes the app's lease, started
    from the standby of the app when this node kept one (``standby.py``: the node was next in
    line for the app), else read whole."""

    def __init__(self, queue_app: QueueApp, cluster: Cluster) -> None:
        self.queue_app = queue_app
        self.cluster = cluster
        self.standby: Standby | None = None
        self._standby_engine: Engine | None = None  # unstarted; its core is the standby's

    async def warm(self) -> bool:
        if self.standby is None:
            app_id = self.queue_app.keys.app_id
            standby = Standby(self.cluster.pool, app_id, self.cluster.clock)
            engine = self.cluster.config.build(app_id, standby)
            standby.core = engine.core
            self.standby, self._standby_engine = standby, engine
        standby = self.standby
        try:
            await standby.catch_up()
        except LogGapError as exc:  # a snapshot covered what it had not read: read it anew
            log.info("the standby of app %s starts over: %s", standby.app_id, exc)
            self._drop(standby)
            return False
        except UNAVAILABLE:
            return standby.ready  # a turn without the database: behind, still good
        except BaseException:
            self._drop(standby)
            raise
        return standby.ready

    def cool(self) -> None:
        standby, engine = self._detach()
        if engine is not None and standby is not None and not standby.opened:
            engine.core.let_go()  # its tasks are freed now, not at the next full collection

    def _detach(self) -> tuple[Standby | None, Engine | None]:
        found = self.standby, self._standby_engine
        self.standby = self._standby_engine = None
        return found

    def _drop(self, standby: Standby) -> None:
        if self.standby is standby:
            self.cool()

    async def acquired(self, lease: Lease) -> None:
        app_id = self.queue_app.keys.app_id
        standby, engine = self._detach()
        self.cluster.opening.add(app_id)
        try:
            if standby is not None and engine is not None and standby.ready:
                standby.lease = lease
                try:
                    await self._start(engine, lease)
                    log.info("app %s: opened from this node's standby of it (seq %s)", app_id,
                             standby.seq)
                    return
                except LogGapError as exc:  # compacted since its last catch-up: read it whole
                    log.info("app %s: its standby is behind a snapshot (%s); reading it whole",
                             app_id, exc)
            if engine is not None:
                engine.core.let_go()
            engine = self.cluster.config.build(app_id, PgOpener(self.cluster.pool, lease,
                                                                self.cluster.clock))
            await self._start(engine, lease)
        finally:
            self.cluster.opening.discard(app_id)

    async def _start(self, engine: Engine, lease: Lease) -> None:
        lease.on_valid = lambda: engine.driver.poke()
        await engine.start()
        self.queue_app.engine = engine
        self.queue_app.local = True

    async def lost(self) -> None:
        self.queue_app.engine.lease_lost()  # nothing more written or started here, first
        await self._close(grace_ms=0)

    async def handover(self) -> None:
        await self._close(grace_ms=self.cluster.config.grace_ms)

    async def _close(self, grace_ms: int) -> None:
        """Close the app's engine, free its tasks at once (not at the next full collection),
        and put in a placeholder: an engine never started, standing in until the app is taken
        again (it knows the app's functions and limits; the node answers nothing from it)."""
        self.queue_app.local = False  # new requests wait for the next owner
        engine = self.queue_app.engine
        await engine.close(grace_ms=grace_ms)
        engine.core.let_go()
        self.queue_app.engine = self.cluster.config.build(self.queue_app.keys.app_id, None)


class Cluster:
    def __init__(self, config: ClusterConfig, apps: dict[str, QueueApp]) -> None:
        self.config = config
        self.apps = apps
        self.clock = config.clock or SystemClock()
        self.pool: asyncpg.Pool
        self.node: Node
        self.session: aiohttp.ClientSession
        self.opening: set[str] = set()  # apps whose lease this node took, engines starting

    async def start(self) -> None:
        node_id = uuid.uuid4().hex[:12]
        try:  # each node's connections say whose they are (pg_stat_activity.application_name)
            self.pool = await open_database(self.config.store,
                                            application_name=f"cloudqueue node {node_id}")
        except Exception as exc:
            raise ClusterRefused(refusal(self.config.store, exc)) from None
        for queue_app in self.apps.values():
            queue_app.local = False
        self.node = Node(self.pool, {app_id: NodeApp(q, self) for app_id, q in self.apps.items()},
                         self.clock, url=self.config.url(), node_id=node_id,
                         options=NodeOptions.of(self.config.lease_ms))
        # no cap on the forwarding connections: a capped pool makes a request wait for a slot
        # inside its connect timeout, and a 502 "outcome unknown" for a request never sent
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=None),
            auto_decompress=False)
        await self.node.start()
        log.info("node %s joined the group on %s (%s), dispatching %s", self.node.node_id,
                 shown_url(self.config.store), self.config.url(),
                 ", ".join(sorted(self.node.held)) or "no app yet")

    async def stop(self) -> None:
        await self.node.leave()
        await self.session.close()
        await self.pool.close()

    @property
    def health(self) -> DbHealth:
        return self.node.health

    @property
    def healthy(self) -> bool:
        """The node's last turn reached the database."""
        return self.node.failed_turns == 0

    async def owner_url(self, app_id: str, queue_app: QueueApp,
                        avoid: str | None = None) -> str | None:
        """Where ``app_id`` is dispatched (None: here, now), waiting up to ``OWNER_WAIT_MS``
        for it to have an owner (other than at ``avoid``: a node that did not answer).

        Raises:
            AppMovingError: no node took it in time.
        """
        waited = 0
        while True:
            if queue_app.local:
                return None
            owner = self.node.owners.get(app_id)
            if (owner is not None and owner.node_id != self.node.node_id and owner.url
                    and owner.url != avoid):
                return owner.url
            if waited >= OWNER_WAIT_MS:
                raise AppMovingError(app_id)
            self.node.poke()
            changed = self.node.changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.1)
            waited += 100


CLUSTER = web.AppKey("cluster", Cluster)


@web.middleware
async def forward(request: web.Request,
                  handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Send an app's request to the node that dispatches it (see the module's doc)."""
    cluster = request.app.get(CLUSTER)
    # the app: X-LC-Id, or ?app= (an EventSource, which cannot send headers)
    app_id = request.headers.get("X-LC-Id") or request.query.get("app", "")
    queue_app = request.app[APPS].get(app_id) if cluster is not None else None
    if (cluster is None or queue_app is None or queue_app.local
            or not request.path.startswith("/1.1/") or request.path.endswith(_LOCAL_SUFFIXES)):
        response: web.StreamResponse = await handler(request)
        return response
    try:
        if request.headers.get(FORWARDED_HEADER):  # forwarded once already: not again
            if queue_app.keys.app_id not in cluster.opening:
                return _misdirected(queue_app)  # the forwarding node asks the owner again
            await _until_local(cluster, queue_app)  # it opens here: wait for it
            url = None
        else:
            url = await cluster.owner_url(queue_app.keys.app_id, queue_app)
    except AppMovingError as exc:
        return _moving(exc)
    answer = await _proxy(request, cluster, url, queue_app) if url is not None else None
    if answer is None:
        answer = await handler(request)
    return answer


async def _until_local(cluster: Cluster, queue_app: QueueApp) -> None:
    waited = 0
    while not queue_app.local:
        if waited >= OWNER_WAIT_MS:
            raise AppMovingError(queue_app.keys.app_id)
        cluster.node.poke()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cluster.node.changed.wait(), 0.1)
        waited += 100


def _misdirected(queue_app: QueueApp) -> web.Response:
    """421: this node does not dispatch the app (it moved, or is being handed over); nothing was
    done, and the node that forwarded the request asks the app's next owner."""
    return web.json_response(
        {"code": 421, "error": f"app {queue_app.keys.app_id} is not dispatched by this node; "
                               "nothing was done: ask the node that dispatches it"}, status=421)


def _moving(exc: AppMovingError) -> web.Response:
    return web.json_response(exc.body(), status=503, headers={"Retry-After": "1"})


async def _proxy(request: web.Request, cluster: Cluster, url: str,
                 queue_app: QueueApp) -> web.StreamResponse | None:
    """The owner's answer to ``request`` (None: the app is this node's now: answer here)."""
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    headers[FORWARDED_HEADER] = cluster.node.node_id
    streaming = request.path.endswith(_STREAMS)
    timeout = aiohttp.ClientTimeout(total=None, connect=5,
                                    sock_read=None if streaming else FORWARD_READ_S)
    for _ in range(MAX_TRIES):
        try:
            upstream = await cluster.session.request(
                request.method, url.rstrip("/") + request.path_qs, headers=headers, data=body,
                allow_redirects=False, timeout=timeout)
        except aiohttp.ConnectionTimeoutError:  # no connection in time (a frozen owner's
            upstream = None                       # backlog full): nothing was sent
        except aiohttp.ClientOSError as exc:
            if not _unsent(exc):
                return _unknown(queue_app, exc)
            upstream = None  # nothing was sent
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _unknown(queue_app, exc)
        if upstream is not None and upstream.status != 421:
            return await _relay(request, upstream)
        if upstream is not None:
            upstream.release()  # that node does not dispatch the app (any more): nothing done
        # safe to ask the next owner (a dead one's lease expires, a leaving one releases it,
        # and another node takes the app, within OWNER_WAIT_MS)
        try:
            next_url = await cluster.owner_url(queue_app.keys.app_id, queue_app, avoid=url)
        except AppMovingError as exc:
            return _moving(exc)
        if next_url is None:
            return None  # the app opened on this node meanwhile
        url = next_url
    return _moving(AppMovingError(queue_app.keys.app_id))


def _unsent(exc: aiohttp.ClientOSError) -> bool:
    """The request never reached the owner: the connection was refused, or the kept-alive
    connection it was to go on was found closed before its body went out (aiohttp says "Can not
    write request body"); a dead owner shows as either."""
    return (isinstance(exc, aiohttp.ClientConnectorError)
            or str(exc).startswith("Can not write request"))


def _unknown(queue_app: QueueApp, exc: BaseException) -> web.Response:
    return web.json_response(
        {"code": 502, "error": f"the node dispatching app {queue_app.keys.app_id} did not "
                               f"answer ({exc or type(exc).__name__}); whether the request "
                               "took effect is unknown: retry it (with the same uniqueId, an "
                               "enqueue is safe to retry)"}, status=502)


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    async with upstream:
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
        if upstream.content_type != "text/event-stream":
            data = await upstream.read()
            return web.Response(status=upstream.status, body=data, headers=headers)
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        with contextlib.suppress(aiohttp.ClientError, ConnectionResetError):
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        return response


async def cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    """Join the group at start (taking the apps this node prefers), leave it at stop (handing
    them back)."""
    cluster = app[CLUSTER]
    await cluster.start()
    try:
        yield
    finally:
        await cluster.stop()
