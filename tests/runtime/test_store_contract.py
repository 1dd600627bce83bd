"""What the engine needs from a store, held against every store (``STORES`` in conftest.py): the
``Store`` protocol directly, and the engine's behaviours that depend on it (durability before
the answer, readers that see only durable state, health, listing, compaction where it applies,
restart where the store keeps things)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudqueue import Engine, FakeClock, RunContext, TaskState
from cloudqueue.engine.core.events import TaskSubmitted
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.runtime.log_store import LogStore
from cloudqueue.engine.runtime.postgres.node import NodeOptions
from cloudqueue.engine.runtime.postgres.sole import Joined, join
from cloudqueue.engine.runtime.store import MemoryStore, Store, StoredState, StoreHooks

T0 = 1_700_000_000_000


class Opened:
    """A store of ``kind`` opened as an engine opens it; ``close`` closes it and lets go of
    what it held (a database's lease and connections)."""

    def __init__(self, kind: str, where: Path | str) -> None:
        self.kind, self.where = kind, where
        self.joined: Joined | None = None

    async def __call__(self) -> tuple[Store, StoredState]:
        if self.kind == "memory":
            return MemoryStore.opener()(StoreHooks())
        if self.kind == "log":
            return LogStore.opener(self.where)(StoreHooks())
        self.joined = await join(str(self.where), "contract", FakeClock(T0),
                                 options=NodeOptions.of(3_600_000))
        return await self.joined.opener(StoreHooks())

    async def close(self, store: Store) -> None:
        await store.close()
        if self.joined is not None:
            await self.joined.leave()
            self.joined = None


@pytest.fixture
def where(store_kind: str, tmp_path: Path) -> Path | str:
    """Where the store of ``store_kind`` keeps things (reopened there by a second ``Opened``)."""
    if store_kind == "postgresql":
        from tests import pg_cluster as postgres
        return postgres.new_database()
    return tmp_path


def submitted(seq: int) -> TaskSubmitted:
    return TaskSubmitted(seq, T0, f"t{seq}", "f", {"n": seq}, TaskOptions(delay_ms=60_000), T0)


async def test_appended_events_become_durable_in_order(store_kind: str,
                                                      where: Path | str) -> None:
    opened = Opened(store_kind, where)
    store, state = await opened()
    assert isinstance(state, StoredState) and state.last_seq == 0 and state.events == []
    store.start()
    try:
        assert (store.durable_seq, store.accepting, store.failure) == (0, True, None)
        store.append([submitted(1), submitted(2)])
        store.append([submitted(3)])
        await store.wait_durable(3)
        assert store.durable_seq == 3
        await store.wait_durable(1)  # at or below what is durable: returns at once
    finally:
        await opened.close(store)


async def test_the_store_hands_back_what_it_holds_at_open(store_kind: str,
                                                          where: Path | str) -> None:
    opened = Opened(store_kind, where)
    store, _ = await opened()
    store.start()
    store.append([submitted(1), submitted(2)])
    await store.wait_durable(2)
    await opened.close(store)
    reopened = Opened(store_kind, where)
    again, state = await reopened()
    try:
        if store_kind == "memory":  # keeps nothing
            assert state.events == [] and state.last_seq == 0
        else:
            assert [e.seq for e in state.events] == [1, 2] and state.last_seq == 2
            assert state.events[1] == submitted(2)
    finally:
        await reopened.close(again)


async def test_compaction_applies_where_the_store_keeps_things(store_kind: str,
                                                               where: Path | str) -> None:
    store: Store
    opened = Opened(store_kind, where)
    store, _ = await opened()
    store.start()
    try:
        store.append([submitted(1)])
        await store.wait_durable(1)
        if store_kind == "memory":
            with pytest.raises(ValueError, match="compaction needs a durable log"):
                await store.compact(1)
        else:
            assert await store.compact(1) == 1  # a segment, or a batch
            assert not store.busy
    finally:
        await opened.close(store)


async def test_an_engine_answers_enqueue_reads_and_lists_through_its_store(
        store_options: dict[str, Any]) -> None:
    clock = FakeClock(T0)
    async with Engine(clock=clock, **store_options) as queue:
        queue.define("ok")(_ok)
        done = await queue.enqueue("ok", {"x": 1})
        held = await queue.enqueue("ok", {"x": 2}, delay=60_000)
        info = await queue.wait(done, timeout=5000)
        assert info.state is TaskState.SUCCESS and info.return_value == {"x": 1}
        assert queue.store.durable_seq >= queue.core.last_seq
        assert (await queue.get_task_info(held)).state is TaskState.QUEUED
        listed, count = await queue.list_tasks()
        assert [i.unique_id for i in listed] == [held, done] and count == 2
        listed, count = await queue.list_tasks(state="queued")
        assert [i.unique_id for i in listed] == [held] and count == 1
        assert queue.failure is None


async def test_a_restart_keeps_what_the_store_keeps(store_kind: str,
                                                    store_options: dict[str, Any]) -> None:
    clock = FakeClock(T0)
    async with Engine(clock=clock, **store_options) as queue:
        held = await queue.enqueue("f", delay=60_000)
    async with Engine(clock=clock, **store_options) as queue:
        present = {t.unique_id for t in queue.core.tasks()}
    assert present == (set() if store_kind == "memory" else {held})


async def _ok(params: Any, ctx: RunContext) -> Any:
    return params
