"""A scripted stand-in for a LeanEngine function host, on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Script = Callable[[Any, web.Request], Awaitable[web.StreamResponse]]


class FunctionHost:
    """Serves ``/1.1/functions/<name>`` like leanengine: checks X-LC-Id and master credentials
    (or the hook key for internal functions), answers ``{"result": v}`` or ``{code, error}``."""

    def __init__(self, app_id: str, master_key: str, hook_key: str | None = None) -> None:
        self.app_id, self.master_key, self.hook_key = app_id, master_key, hook_key
        self.functions: dict[str, Script] = {}
        self.internal: set[str] = set()
        self.calls: list[tuple[str, Any, dict[str, str]]] = []
        self.app = web.Application()
        self.app.router.add_post("/1.1/functions/{name}", self._call)
        self.app.router.add_get("/__engine/1/ping", self._ping)

    def define(self, name: str, internal: bool = False) -> Callable[[Script], Script]:
        def register(fn: Script) -> Script:
            self.functions[name] = fn
            if internal:
                self.internal.add(name)
            return fn
        return register

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({"runtime": "test", "version": "3.8.0"})

    async def _call(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if request.headers.get("X-LC-Id") != self.app_id:
            return web.json_response({"code": 401, "error": "Unauthorized."}, status=401)
        master = request.headers.get("X-LC-Key") == f"{self.master_key},master"
        hook = self.hook_key is not None and request.headers.get("X-LC-Hook-Key") == self.hook_key
        if name in self.internal and not (master or hook):
            return web.json_response({"code": 401, "error": "Internal cloud function"},
                                     status=401)
        if "X-LC-Session" in request.headers:
            return web.json_response({"code": 1, "error": "unexpected session"}, status=500)
        params = await request.json()
        self.calls.append((name, params, dict(request.headers)))
        fn = self.functions.get(name)
        if fn is None:
            return web.json_response({"code": 1, "error": f"No such cloud function '{name}'"},
                                     status=404)
        return await fn(params, request)


def ok(value: Any) -> web.Response:
    return web.json_response({"result": value})


def error(message: str, status: int = 500, code: int = 1) -> web.Response:
    return web.json_response({"code": code, "error": message}, status=status)


async def hang(params: Any, request: web.Request) -> web.Response:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")
