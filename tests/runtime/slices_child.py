"""A child process for the kill -9 continuation test (run by test_kill9_slices.py).

``python slices_child.py DATA_DIR LOG_FILE [enqueue]``: runs an engine whose ``count`` function
counts to 40 in slices of one step (each slice appends "slice <n> checkpoint <cp>" to LOG_FILE
and sleeps a little), prints READY, and with ``enqueue`` queues the task ``job`` first. It prints
DONE <result> when the task succeeds, then exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from cloudqueue import Continue, Engine, RunContext  # noqa: E402

STEPS = 40


async def main(data_dir: str, log_file: str, enqueue: bool) -> None:
    async def count(params: Any, ctx: RunContext) -> Any:
        total = (ctx.checkpoint or {"sum": 0, "n": 0})
        fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"slice {ctx.slice} checkpoint {json.dumps(ctx.checkpoint)}\n".encode())
        os.close(fd)
        await asyncio.sleep(0.02)  # real time per slice, so the parent's kill -9 lands between
        n = total["n"] + 1
        state = {"sum": total["sum"] + n * n, "n": n}
        return Continue(state) if n < STEPS else state

    async with Engine(data_dir=data_dir) as queue:
        queue.define("count")(count)
        if enqueue:
            await queue.enqueue("count", unique_id="job", attempts=0, keep_result=3_600_000)
        print("READY", flush=True)
        info = await queue.wait("job", timeout=60_000)
        print("DONE", json.dumps(info.return_value), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "enqueue"))
