"""An engine opened from a store shared with other nodes (an async opener) rebuilds its state in
steps, letting the event loop turn between them: the node it runs in goes on renewing its other
leases and answering its other apps while it takes this one over."""

from __future__ import annotations

import asyncio

from cloudqueue import Engine, FakeClock
from cloudqueue.engine.core.events import TaskSubmitted
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.runtime import rebuild
from cloudqueue.engine.runtime.store import MemoryStore, Store, StoredState, StoreHooks

T0 = 1_700_000_000_000
N = 3 * rebuild.STEP + 7


class SharedOpener:
    """An async opener (as the PostgreSQL store's) handing back ``N`` submitted tasks."""

    async def __call__(self, hooks: StoreHooks) -> tuple[Store, StoredState]:
        events = [TaskSubmitted(seq, T0, f"t{seq}", "f", {}, TaskOptions(delay_ms=60_000), T0)
                  for seq in range(1, N + 1)]
        return MemoryStore(), StoredState(events=list(events))


async def test_a_shared_stores_state_is_rebuilt_with_turns_of_the_loop_between_steps() -> None:
    turns = 0
    stop = asyncio.Event()

    async def count_turns() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.ensure_future(count_turns())
    queue = Engine(opener=SharedOpener(), clock=FakeClock(T0), metrics=False)
    await queue.start()
    during = turns
    stop.set()
    await counter
    try:
        assert len(queue.core.tasks()) == N and queue.core.last_seq == N
        assert during >= N // rebuild.STEP  # the loop turned between the steps
    finally:
        await queue.close()
