"""The README's embedded example: define functions, enqueue tasks, read their outcome.

Run it with `cloudqueue demo` (or `python -m cloudqueue.demo`). Tasks are kept
in a durable log under ./data/demo (override with CLOUDQUEUE_DATA); run it twice and the second
run replays the first one's log.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from cloudqueue import Engine, RunContext


async def main() -> None:
    data_dir = os.environ.get("CLOUDQUEUE_DATA", "data/demo")
    async with Engine(concurrency=2, data_dir=data_dir) as queue:
        assert queue.recovery is not None
        print(f"{data_dir}: {queue.recovery.summary()}")

        @queue.define
        async def resize(params: Any, ctx: RunContext) -> dict[str, Any]:
            await asyncio.sleep(0.01)  # stands in for real work
            return {"image": params["image"], "width": params["width"]}

        @queue.define
        async def flaky(params: Any, ctx: RunContext) -> str:
            if ctx.attempt < 2:
                raise RuntimeError(f"upstream busy (attempt {ctx.attempt})")
            return f"done on attempt {ctx.attempt}"

        first = await queue.enqueue("resize", {"image": "cat.png", "width": 640})
        second = await queue.enqueue("flaky", {}, attempts=2, backoff=100,
                                     unique_id=f"flaky-{time.time_ns() // 1000}")
        later = await queue.enqueue("resize", {"image": "dog.png", "width": 320}, delay=200,
                                    priority=1)

        for uid in (first, second, later):
            info = await queue.wait(uid, timeout=10_000)
            print(info.to_wire())


if __name__ == "__main__":
    asyncio.run(main())
