"""Functions the node tests run in-process (``functions = ["tests.postgres.node_functions"]``)."""

from __future__ import annotations

import asyncio
from typing import Any

import cloudqueue


@cloudqueue.define
async def echo(params: Any, run: cloudqueue.RunContext) -> Any:
    return params


@cloudqueue.define
async def steps(params: Any, run: cloudqueue.RunContext) -> Any:
    """Reports progress ``params["n"]`` times, a little apart, then returns."""
    for i in range(params.get("n", 3)):
        await run.progress(percent=(i + 1) * 100 // params.get("n", 3))
        await asyncio.sleep(0.02)
    return {"steps": params.get("n", 3)}
