"""Live task events as Server-Sent Events (extension).

    GET /1.1/engine/cloud-queue/tasks/{uniqueId}/events
        with app or master credentials, or ?app=<appId>&token=<readToken> (for EventSource)
    GET /1.1/engine/cloud-queue/tasks/{uniqueId}/read-token    (app or master) -> a fresh token

Each SSE message is ``event: <type>`` and ``data: {"type", "task": TaskInfo}``: first ``state``
(the current state, also for a late subscriber), then ``queued``, ``running``, ``progress``,
``retry``, ``continued``, and a last ``finished``, after which the stream ends. A comment line
keeps idle connections open (every ``HEARTBEAT_S`` without an update, on the app engine's
``Clock``). A slow reader misses intermediate updates, never the latest; one that reads nothing
for ``WRITE_TIMEOUT_S`` is cut off. A read token expires ``READ_TOKEN_TTL_MS`` after it was minted,
on the engine's clock too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator

from aiohttp import web

from cloudqueue.adapters.auth import Role, check_read_token, read_token
from cloudqueue.adapters.http_api.tenants import APPS, QueueApp, refusal, tenant
from cloudqueue.engine.core.task import TaskInfo, iso_ms
from cloudqueue.engine.runtime.clock import Clock

READ_TOKEN_TTL_MS = 24 * 3600 * 1000
HEARTBEAT_S = 15.0
HEARTBEAT = b": keep-alive\n\n"
# a subscriber that takes none of what is written to it for this long is cut off, so a client
# that never reads cannot hold its connection (and a slot of max_connections) for ever
WRITE_TIMEOUT_S = 60.0


def new_read_token(queue_app: QueueApp, unique_id: str) -> tuple[str, int]:
    expires_ms = queue_app.engine.clock.now_ms() + READ_TOKEN_TTL_MS
    return read_token(queue_app.keys, unique_id, expires_ms), expires_ms


def _reader(request: web.Request, unique_id: str) -> QueueApp:
    token = request.query.get("token")
    if token is None:
        return tenant(request, Role.APP)
    app_id = request.query.get("app") or request.headers.get("X-LC-Id") or ""
    queue_app = request.app[APPS].get(app_id)
    if queue_app is None or not check_read_token(queue_app.keys, unique_id, token,
                                                 queue_app.engine.clock.now_ms()):
        raise refusal(request)
    return queue_app


async def events(request: web.Request) -> web.StreamResponse:
    unique_id = request.match_info["unique_id"]
    engine = _reader(request, unique_id).engine
    updates = engine.watch(unique_id)  # 404 for an unknown task
    # Readable from a page on another origin: the credential is the token in the URL (or the
    # headers a script chose to send), never a cookie, so any origin may read the stream.
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no",
                                           "Access-Control-Allow-Origin": "*"})
    await response.prepare(request)
    iterator = updates.__aiter__()
    beats = _with_heartbeats(iterator, engine.clock)
    try:
        async for update in beats:
            if update is None:
                await _send(request, response, HEARTBEAT)
                continue
            kind, info = update
            data = json.dumps({"type": kind, "task": info.to_wire()}, separators=(",", ":"))
            await _send(request, response, f"event: {kind}\ndata: {data}\n\n".encode())
    finally:
        await beats.aclose()  # stops waiting for an update
        await iterator.aclose()  # type: ignore[attr-defined]
    await response.write_eof()
    return response


async def _with_heartbeats(updates: AsyncIterator[tuple[str, TaskInfo]], clock: Clock
                           ) -> AsyncGenerator[tuple[str, TaskInfo] | None, None]:
    """The updates, and None after every HEARTBEAT_S without one. The wait for the next update
    is never cancelled: cancelling a subscription's ``__anext__`` ends the subscription."""
    pending = asyncio.ensure_future(anext(updates))
    try:
        while True:
            beat = asyncio.ensure_future(clock.sleep(HEARTBEAT_S * 1000))
            try:
                done, _ = await asyncio.wait({pending, beat},
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                beat.cancel()
            if pending not in done:
                yield None
                continue
            try:
                update = pending.result()
            except StopAsyncIteration:
                return
            pending = asyncio.ensure_future(anext(updates))  # meanwhile (it may end the stream)
            yield update
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)


async def _send(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):  # inline: no task per write
            await response.write(data)
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()  # close() would wait for the unread bytes to leave
        raise ConnectionResetError(f"the subscriber read nothing for {WRITE_TIMEOUT_S:g} s"
                                   ) from None


async def token(request: web.Request) -> web.Response:
    queue_app = tenant(request, Role.APP)
    unique_id = request.match_info["unique_id"]
    await queue_app.engine.get_task_info(unique_id)  # 404 for an unknown task
    value, expires_ms = new_read_token(queue_app, unique_id)
    return web.json_response({"readToken": value, "expiresAt": iso_ms(expires_ms)})


def add_routes(router: web.UrlDispatcher, base: str) -> None:
    router.add_get(f"{base}/tasks/{{unique_id:[^/]+}}/events", events)
    router.add_get(f"{base}/tasks/{{unique_id:[^/]+}}/read-token", token)
