"""A held task's params cost about their encoded size: large params (over a few KiB) are kept as
the msgpack bytes the log stores and decoded when a run starts; small ones stay as they are. A
1 MB JSON body parsed into Python objects cost ~5x its size for every held task."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

from cloudqueue import Engine, FakeClock, RunContext, TaskState
from cloudqueue.engine.core.task import PACK_PARAMS_ABOVE, PackedParams, pack_params

T0 = 1_700_000_000_000


def rows_body(n_rows: int) -> bytes:
    """A JSON body as an app would send it: many small objects."""
    rows = [{"id": i, "name": f"user-{i:06d}", "email": f"user{i}@example.com",
             "score": i * 0.5, "active": i % 2 == 0, "tags": ["a", "bb", "ccc"]}
            for i in range(n_rows)]
    return json.dumps({"rows": rows, "note": "x" * 1000}).encode()


async def test_a_held_task_with_1_mb_of_params_costs_about_their_size() -> None:
    body = rows_body(8_000)
    assert len(body) > 1_000_000
    tasks = 5
    async with Engine(clock=FakeClock(T0)) as queue:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(tasks):
                await queue.enqueue("f", json.loads(body), delay=60_000)
            gc.collect()
            per_task = (tracemalloc.get_traced_memory()[0] - before) / tasks
        finally:
            tracemalloc.stop()
    assert per_task < 1.2 * len(body)  # was 5.1x (5.3 MB a task)


async def test_large_params_reach_the_run_intact_after_replay_and_a_snapshot(
        tmp_path: Path) -> None:
    params = json.loads(rows_body(200))
    small = {"image": "cat.png", "width": 640}
    seen: list[Any] = []

    async def take(value: Any, ctx: RunContext) -> int:
        seen.append(value)
        return len(seen)

    clock = FakeClock(T0)
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        big_id = await queue.enqueue("take", params, delay=1_000)
        small_id = await queue.enqueue("take", small, delay=1_000)
        held = {t.unique_id: t.params for t in queue.core.tasks()}
        assert isinstance(held[big_id], PackedParams) and held[small_id] is small
    async with Engine(data_dir=tmp_path, clock=clock) as queue:  # replayed from the log
        assert isinstance(next(t.params for t in queue.core.tasks()
                               if t.unique_id == big_id), PackedParams)
        await queue.compact()
    async with Engine(data_dir=tmp_path, clock=clock) as queue:  # restored from the snapshot
        assert queue.recovery is not None and queue.recovery.snapshot_tasks == 2
        queue.define("take")(take)
        clock.advance(1_000)
        assert (await queue.wait(big_id, timeout=10_000)).state is TaskState.SUCCESS
        await queue.wait(small_id, timeout=10_000)
    assert sorted(seen, key=lambda value: "rows" in value) == [small, params]


def test_only_large_objects_and_arrays_are_packed() -> None:
    assert pack_params({}) == {}
    flat = {"k": "v" * (PACK_PARAMS_ABOVE // 2)}
    assert pack_params(flat) is flat
    text = "t" * 100_000
    assert pack_params(text) is text  # a string costs about its size already
    nested = {"a": [{"b": "c" * 100} for _ in range(100)]}
    packed = pack_params(nested)
    assert isinstance(packed, PackedParams) and packed.unpack() == nested
    assert len(packed.data) < len(json.dumps(nested))
