"""The burst's function host: a no-op cloud function that notes when each run finished.

``python -m benchmarks._burst_host PORT`` (credentials from ``LEANCLOUD_APP_ID``,
``LEANCLOUD_APP_KEY``, ``LEANCLOUD_APP_MASTER_KEY``) serves ``noop`` through
:class:`adapters.function_host.FunctionHost`, exactly as a Python LeanEngine app would, on
127.0.0.1. Each call records ``(uniqueId, time.monotonic_ns())`` as it returns; the load generator
reads them back once the burst is over (``GET /__bench/completions``, a route of this benchmark
process, not of the queue) or counts them while it waits for the drain (``GET /__bench/count``).

``time.monotonic_ns`` is CLOCK_MONOTONIC on Linux, one clock for every process on the machine, so
these times compare directly with the generator's.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from aiohttp import web

from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.function_host import Call, FunctionHost

FUNCTION = "noop"
COMPLETIONS: web.AppKey[list[tuple[str, int]]] = web.AppKey("completions", list)


def build_host(keys: AppKeys) -> FunctionHost:
    host = FunctionHost(keys)
    done: list[tuple[str, int]] = []
    host.app[COMPLETIONS] = done

    async def noop(params: Any, call: Call) -> None:
        done.append((call.unique_id or "", time.monotonic_ns()))

    host.define(FUNCTION)(noop)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"count": len(done)})

    async def completions(request: web.Request) -> web.Response:
        return web.json_response({"completions": done})

    host.app.router.add_get("/__bench/count", count)
    host.app.router.add_get("/__bench/completions", completions)
    return host


def main() -> None:
    env = os.environ
    keys = AppKeys(env["LEANCLOUD_APP_ID"], env["LEANCLOUD_APP_KEY"],
                   env["LEANCLOUD_APP_MASTER_KEY"])
    web.run_app(build_host(keys).app, host="127.0.0.1", port=int(sys.argv[1]), print=None,
                access_log=None)


if __name__ == "__main__":
    main()
