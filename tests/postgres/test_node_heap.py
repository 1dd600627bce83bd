"""A node's engines and the server's frozen heap: an engine on a shared store freezes nothing at
start, so closing it (its app handed over, or taken by another node) must not unfreeze what the
server's HeapFreezer froze, or the next collection would walk the whole heap, holding the loop
for seconds (long enough for the node's other leases to lapse)."""

from __future__ import annotations

import gc

from cloudqueue import Engine


async def test_closing_a_node_engine_leaves_the_frozen_heap_frozen(pg_url: str) -> None:
    gc.freeze()  # as the server's HeapFreezer does every second
    try:
        frozen = gc.get_freeze_count()
        queue = Engine(store=pg_url)
        await queue.start()
        await queue.enqueue("f", {}, delay=60_000)
        await queue.close()
        assert gc.get_freeze_count() > frozen // 2 > 0  # (unfrozen: 0; some freed since)
    finally:
        gc.unfreeze()
