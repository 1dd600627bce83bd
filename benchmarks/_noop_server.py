"""aiohttp's own ceiling: a no-op JSON POST handler (``python -m benchmarks._noop_server PORT``)."""

from __future__ import annotations

import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"uniqueId": "00000000-0000-0000-0000-000000000000"})


async def ready(request: web.Request) -> web.Response:
    return web.json_response({})


def main() -> None:
    app = web.Application()
    app.router.add_post("/1.1/engine/cloud-queue/tasks", handle)
    app.router.add_get("/__health/ready", ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
