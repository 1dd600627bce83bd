"""The soak test's function host: one cloud function whose behaviour the task's params choose.

``python -m tests.soak.host PORT`` (credentials from ``LEANCLOUD_APP_ID``, ``LEANCLOUD_APP_KEY``,
``LEANCLOUD_APP_MASTER_KEY``) serves ``soak`` through :class:`adapters.function_host.FunctionHost`
on 127.0.0.1, exactly as a Python LeanEngine app would. ``params["kind"]`` says what a call does:

* ``ok``: answers at once, ``{"result": {"i": i}}``;
* ``raise``: raises an exception (the host answers 500 ``{"code": 1, "error": ...}``);
* ``error``: raises ``CloudError`` (400 ``{"code": 1, "error": ...}``);
* ``hang``: sleeps ``params["sleep_ms"]``, far past the task's timeout, then answers;
* ``big``: answers ``params["mib"]`` MiB (a string of that size in the result).

Besides the functions it counts calls by kind and notes when each ``big`` task's calls started
(``time.monotonic_ns``, CLOCK_MONOTONIC, one clock for every process of the machine), so the test
can tell a big task that expired after its short keepResult from one that was lost:
``GET /__soak/stats`` (a route of this test process, not of the queue).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import Counter
from typing import Any

from aiohttp import web

from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.function_host import Call, CloudError, FunctionHost

FUNCTION = "soak"
MIB = 1024 * 1024


class SoakFailure(Exception):
    """What a ``raise`` task raises: any exception but CloudError answers 500."""


def build_host(keys: AppKeys) -> FunctionHost:
    host = FunctionHost(keys)
    calls: Counter[str] = Counter()
    big_calls: dict[str, list[int]] = {}  # uniqueId -> start of each call (monotonic ns)

    async def soak(params: Any, call: Call) -> Any:
        kind = params.get("kind") if isinstance(params, dict) else None
        calls[str(kind)] += 1
        if kind == "ok":
            return {"i": params.get("i")}
        if kind == "raise":
            raise SoakFailure(f"soak task {call.unique_id} failed on purpose")
        if kind == "error":
            raise CloudError(f"soak task {call.unique_id} refused on purpose", status=400)
        if kind == "hang":
            await asyncio.sleep(params.get("sleep_ms", 5_000) / 1000)
            return {"late": True}
        if kind == "big":
            big_calls.setdefault(call.unique_id or "", []).append(time.monotonic_ns())
            return {"blob": "x" * (int(params.get("mib", 3)) * MIB)}
        raise CloudError(f"unknown soak kind {kind!r}", status=400)

    host.define(FUNCTION)(soak)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"calls": dict(calls), "big": big_calls})

    host.app.router.add_get("/__soak/stats", stats)
    return host


def main() -> None:
    # a "raise" task makes FunctionHost log a traceback (at ERROR); at tens a second that is CPU
    # the 2-core machine needs for the queue, and the test reads the outcome from the queue
    logging.disable(logging.ERROR)
    env = os.environ
    keys = AppKeys(env["LEANCLOUD_APP_ID"], env["LEANCLOUD_APP_KEY"],
                   env["LEANCLOUD_APP_MASTER_KEY"])
    web.run_app(build_host(keys).app, host="127.0.0.1", port=int(sys.argv[1]), print=None,
                access_log=None)


if __name__ == "__main__":
    main()
