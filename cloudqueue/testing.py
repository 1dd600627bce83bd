"""Helpers for testing code that uses an embedded ``Engine`` (with a ``FakeClock``)."""

from __future__ import annotations

import asyncio

from cloudqueue.engine.embedded import Engine


async def settle(engine: Engine, timeout_ms: int = 30_000) -> None:
    """Let ``engine``'s driver, in-flight runs and log proceed until nothing more happens
    without the clock moving: no poke pending, everything durable, no log IO or compaction in
    flight, and no event, run or durability change for several loop turns. Waits for real IO
    (an fsync) rather than spinning; a run blocked on something outside counts as settled.

    Raises:
        TimeoutError: not settled after ``timeout_ms`` (real time).
    """
    core = engine.core
    async with asyncio.timeout(timeout_ms / 1000):
        quiet, last = 0, None
        while quiet < 5:
            store, driver = engine.store, engine.driver
            if store.durable_seq < core.last_seq and store.failure is None:
                await store.wait_durable(core.last_seq)
            elif store.busy:
                await asyncio.sleep(0.001)  # IO in a worker thread: nothing to await here
            else:
                await asyncio.sleep(0)
            mark = (core.last_seq, store.durable_seq, driver.running_runs)
            calm = (not driver.poked and mark == last
                    and (store.durable_seq >= core.last_seq or store.failure is not None)
                    and not store.busy and engine.compaction.idle)
            quiet = quiet + 1 if calm else 0
            last = mark
