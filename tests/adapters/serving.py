"""A real queue server on 127.0.0.1 for one engine (shared by the client tests)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.test_utils import TestServer

from cloudqueue import Engine
from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.http_api.app import QueueApp, create_app

A = AppKeys("appA", "appA-key-0123456789", "appA-master-0123456789")


@contextlib.asynccontextmanager
async def serving(engine: Engine, requests: list[str] | None = None) -> AsyncIterator[str]:
    """Serve ``engine`` as app ``A``; yield the base URL. ``requests`` collects
    ``"METHOD /path"`` for every answer, to count what a client sent."""
    app = create_app({A.app_id: QueueApp(A, engine)})
    if requests is not None:
        async def count(request: web.Request, response: web.StreamResponse) -> None:
            requests.append(f"{request.method} {request.path}")
        app.on_response_prepare.append(count)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()
