"""A node that stops renewing (killed, or frozen past its lease): another node takes its app over
within the lease, and its runs in flight follow the crash rules (atLeastOnce runs again, not
charged; atMostOnce fails, its run lost), while the old node, even if it wakes, starts nothing
and writes nothing more."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from cloudqueue import Engine, RunContext, TaskState
from cloudqueue.engine.runtime.clock import SystemClock
from cloudqueue.engine.runtime.postgres.database import FencedError, open_database
from cloudqueue.engine.runtime.postgres.node import Node, NodeOptions
from cloudqueue.engine.runtime.postgres.store import Lease
from tests.waiting import until

LEASE_MS = 1_000  # the least a lease may be: the takeover below takes about this long


async def test_a_silent_nodes_app_is_taken_over_under_the_crash_rules(pg_url: str) -> None:
    calls: Counter[str] = Counter()
    release = asyncio.Event()

    async def hang(params: Any, ctx: RunContext) -> Any:  # on the node that goes silent
        calls[f"old:{ctx.unique_id}"] += 1
        await release.wait()
        return "late"

    async def quick(params: Any, ctx: RunContext) -> Any:  # on the node that takes over
        calls[f"new:{ctx.unique_id}"] += 1
        return "done"

    old = Engine(store=pg_url, lease_ms=LEASE_MS, concurrency=3)
    old.define("f")(hang)
    await old.start()
    await old.enqueue("f", unique_id="least", delivery_mode="atLeastOnce")
    await old.enqueue("f", unique_id="most", delivery_mode="atMostOnce")
    await old.enqueue("f", unique_id="later", delay=1_500)  # due after the old node went quiet
    await until(lambda: calls["old:least"] == 1 and calls["old:most"] == 1, "both runs started")
    # the old node goes silent: its membership turns stop (as if killed or frozen)
    assert old._joined is not None
    turning = old._joined.node._task
    assert turning is not None
    turning.cancel()

    new = Engine(store=pg_url, lease_ms=LEASE_MS, concurrency=3)
    new.define("f")(quick)
    started = asyncio.get_running_loop().time()
    await new.start()  # waits for the old lease to expire
    took_s = asyncio.get_running_loop().time() - started
    try:
        assert took_s < 3 * LEASE_MS / 1000
        least = await new.wait("least", timeout=5_000)
        assert least.state is TaskState.SUCCESS and least.return_value == "done"
        assert [r.outcome for r in least.runs] == ["lost", "success"]
        assert least.attempt == 1  # the lost run was not charged
        most = await new.get_task_info("most")
        assert most.state is TaskState.FAILED and "atMostOnce" in (most.error or "")
        later = await new.wait("later", timeout=5_000)
        assert later.state is TaskState.SUCCESS
        # the old node wakes: its runs answer, its timer fires; nothing it does counts
        release.set()
        await until(lambda: old.failure is not None, "the old node fenced")
        assert isinstance(old.failure, FencedError)
        assert not old.store.holds_lease
        assert calls == Counter({"old:least": 1, "old:most": 1, "new:least": 1,
                                 "new:later": 1})  # atMostOnce ran once; "later" once, here
        assert (await new.get_task_info("most")).state is TaskState.FAILED
    finally:
        release.set()
        await new.close()
        await old.close()


async def test_a_schedule_fires_each_slot_once_across_a_takeover(pg_url: str) -> None:
    calls: Counter[str] = Counter()

    async def tick(params: Any, ctx: RunContext) -> Any:
        calls[ctx.unique_id or ""] += 1
        return None

    old = Engine(store=pg_url, lease_ms=LEASE_MS, concurrency=4)
    old.define("tick")(tick)
    await old.start()
    await old.set_schedule("tick", "tick", interval=200)
    await until(lambda: len(calls) >= 3, "three slots fired on the first node")
    assert old._joined is not None and old._joined.node._task is not None
    # the first node dies: its turns stop and nothing it fires from now on is stored
    old._joined.node._task.cancel()
    old.lease_lost()
    new = Engine(store=pg_url, lease_ms=LEASE_MS, concurrency=4)
    new.define("tick")(tick)
    await new.start()
    try:
        fired_before = len(calls)
        await until(lambda: len(calls) >= fired_before + 5, "slots fired on the second node")
        await until(lambda: old.failure is not None, "the first node fenced")
        held = sorted(int(t.unique_id.rsplit(":", 1)[1]) for t in new.core.tasks()
                      if t.unique_id.startswith("cron:tick:"))
        # every slot from the first to the last is a task once: none missed, none doubled;
        # those of the lease's second or so without a node fired late, each once, by the new one
        assert held == list(range(held[0], held[-1] + 1, 200))
        late = [t for t in new.core.tasks() if t.unique_id.startswith("cron:tick:")
                and t.created_ms - int(t.unique_id.rsplit(":", 1)[1]) >= 400]
        assert len(late) >= 3
    finally:
        await new.close()
        await old.close()


class Holder:
    def __init__(self) -> None:
        self.leases: list[Lease] = []

    async def acquired(self, lease: Lease) -> None:
        self.leases.append(lease)

    async def lost(self) -> None:
        return None

    async def handover(self) -> None:
        return None


async def test_a_takeover_moments_after_the_last_lease_ended_is_a_failover(pg_url: str) -> None:
    pool = await open_database(pg_url)
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO cq_leases (app_id, owner, epoch, expires_at) VALUES "
                "('died', 'gone', 3, now() - interval '1 second'), "  # its node died
                "('handed', NULL, 3, now() - interval '1 second'), "  # handed over on a stop
                "('down', 'gone', 3, now() - interval '1 hour'), "  # no node for an hour
                "('older', NULL, 3, '-infinity')")  # released by an earlier version
        holders = {app: Holder() for app in ("died", "handed", "down", "older", "new")}
        node = Node(pool, holders, SystemClock(), options=NodeOptions(lease_ms=4_000))
        await node.start()
        try:
            assert {app: [(lease.epoch, lease.failover) for lease in holder.leases]
                    for app, holder in holders.items()} == {
                "died": [(4, True)], "handed": [(4, True)], "down": [(4, False)],
                "older": [(4, False)], "new": [(1, False)]}
        finally:
            await node.leave()
    finally:
        await pool.close()
