"""A function host whose latency grows with its load, for ``bench_host_load``.

``python -m benchmarks._load_host PORT`` (credentials from ``LEANCLOUD_APP_ID``,
``LEANCLOUD_APP_KEY``, ``LEANCLOUD_APP_MASTER_KEY``) serves ``work`` through
:class:`adapters.function_host.FunctionHost` on 127.0.0.1, behind a front that models a host with
a fixed capacity. For each call to ``POST /1.1/functions/<name>``, with ``n`` the calls in flight
at the host as it arrives (itself included):

* ``n > HARD_LIMIT`` (48): answered **503** at once, with a plain-text body, as a load shedder in
  front of an app answers (nginx's ``limit_conn``, say); the queue reads it as a gateway's 503:
  a host error, an unknown outcome retried under atLeastOnce, and dispatch paused while it
  probes the host (docs/protocol.md §2.3, §2.5);
* otherwise answered after ``latency_ms(n) = BASE_MS * (1 + PENALTY * max(0, n - CAPACITY))``:
  20 ms with up to 16 in flight, 2 ms more for each call beyond (36 ms at 24, 84 ms at 48).
  The wait is a sleep: the model, not the machine's CPU, makes the host slow.

So the host's throughput at ``n`` in flight is ``n / latency_ms(n)``: 800/s at 16 (its best),
667/s at 24, 571/s at 48; and a queue keeping more than 48 in flight gets 503s.

Each call is noted as ``(arrival, status, host_ms, n)`` (``time.monotonic_ns`` at arrival, the
status answered, the ms from arrival to the answer as the host measured it, the in-flight count
it met); the benchmark reads them from ``GET /__bench/calls`` and counts completions with ``GET
/__bench/count`` (routes of this benchmark process, not of the queue).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from aiohttp import web

from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.function_host import Call, FunctionHost

FUNCTION = "work"
BASE_MS = 20.0
CAPACITY = 16
PENALTY = 0.1  # of BASE_MS per call in flight beyond CAPACITY
HARD_LIMIT = 48
_PREFIXES = ("/1.1/functions/", "/1/functions/")


def latency_ms(in_flight: int) -> float:
    return BASE_MS * (1 + PENALTY * max(0, in_flight - CAPACITY))


class Front:
    """The model in front of the host's functions: counts calls in flight, sheds past the hard
    limit, delays the rest, notes every call."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.calls: list[tuple[int, int, float, int]] = []
        self.ok = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method != "POST" or not request.path.startswith(_PREFIXES):
            return await handler(request)  # type: ignore[no-any-return]
        arrived = time.monotonic_ns()
        self.in_flight += 1
        n = self.in_flight
        try:
            if n > HARD_LIMIT:
                response: web.StreamResponse = web.Response(
                    status=503, text=f"over capacity: {HARD_LIMIT} requests in flight")
            else:
                await asyncio.sleep(latency_ms(n) / 1000)
                response = await handler(request)
        finally:
            self.in_flight -= 1
        if response.status == 200:
            self.ok += 1
        self.calls.append((arrived, response.status, (time.monotonic_ns() - arrived) / 1e6, n))
        return response


def build_host(keys: AppKeys) -> FunctionHost:
    host = FunctionHost(keys)
    front = Front()
    host.app.middlewares.append(front.middleware)

    async def work(params: Any, call: Call) -> None:
        return None

    host.define(FUNCTION)(work)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"ok": front.ok, "calls": len(front.calls)})

    async def calls(request: web.Request) -> web.Response:
        return web.json_response({"calls": front.calls})

    host.app.router.add_get("/__bench/count", count)
    host.app.router.add_get("/__bench/calls", calls)
    return host


def main() -> None:
    env = os.environ
    keys = AppKeys(env["LEANCLOUD_APP_ID"], env["LEANCLOUD_APP_KEY"],
                   env["LEANCLOUD_APP_MASTER_KEY"])
    web.run_app(build_host(keys).app, host="127.0.0.1", port=int(sys.argv[1]), print=None,
                access_log=None)


if __name__ == "__main__":
    main()
