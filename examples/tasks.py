"""The Quick start's functions: ``scripts/run.sh`` serves them in-process
(``cloudqueue serve --functions examples.tasks``). A module of your own works the same way:
``cloudqueue serve --functions tasks`` for ``./tasks.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import cloudqueue


@cloudqueue.define
async def hello(params: Any, run: cloudqueue.Run) -> dict[str, str]:
    """Greets whoever ``params["name"]`` names."""
    return {"greeting": f"hello, {params.get('name', 'world')}"}


@cloudqueue.define("count-slowly", timeout=60_000)
async def count_slowly(params: Any, run: cloudqueue.Run) -> dict[str, int]:
    """Counts to ``params["to"]`` (default 5), a step every 200 ms, reporting progress."""
    total = int(params.get("to", 5))
    for done in range(1, total + 1):
        await asyncio.sleep(0.2)  # stands in for real work
        await run.progress(done=done, total=total)
    return {"counted": total}
