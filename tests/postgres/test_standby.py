"""A standby (``postgres/standby.py``): a node next in line for an app keeps a copy of its state,
follows what the owner writes, and takes the app over from it, reading only the last batches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cloudqueue import Engine, RunContext, TaskState
from cloudqueue.engine.core.errors import LogGapError
from cloudqueue.engine.runtime.clock import SystemClock
from cloudqueue.engine.runtime.postgres import leases as sql
from cloudqueue.engine.runtime.postgres.database import open_database
from cloudqueue.engine.runtime.postgres.sole import DEFAULT_APP
from cloudqueue.engine.runtime.postgres.standby import Standby
from cloudqueue.engine.runtime.postgres.store import Lease
from cloudqueue.engine.runtime.store import StoreHooks
from tests.waiting import until

LEASE_MS = 1_000
HOUR = 3_600_000


async def done(params: Any, ctx: RunContext) -> Any:
    return params


def states(queue: Engine) -> dict[str, tuple[str, int, Any]]:
    return {t.unique_id: (t.state.value, t.attempt, t.result) for t in queue.core.tasks()}


async def test_a_standby_follows_the_owner_and_takes_over_from_where_it_is(pg_url: str) -> None:
    owner = Engine(store=pg_url, lease_ms=LEASE_MS, concurrency=4)
    owner.define("f")(done)
    await owner.start()
    pool = await open_database(pg_url)
    heir: Engine | None = None
    try:
        for i in range(30):
            await owner.enqueue("f", {"i": i}, unique_id=f"ran-{i}", keep_result=HOUR)
        await until(lambda: all(t.state is TaskState.SUCCESS for t in owner.core.tasks()),
                    "the first tasks ran")
        await owner.set_schedule("daily", "f", cron="0 0 3 * * ?")
        standby = Standby(pool, DEFAULT_APP, SystemClock())
        heir = Engine(opener=standby, concurrency=4)
        heir.define("f")(done)
        standby.core = heir.core
        assert await standby.catch_up() > 0  # read whole: its state is the owner's
        assert standby.ready and states(heir) == states(owner)
        for i in range(5):
            await owner.enqueue("f", {"i": i}, unique_id=f"later-{i}", delay=HOUR)
        assert await standby.catch_up() == 5  # then only what was written since
        assert states(heir) == states(owner)
        for i in range(3):  # written after its last catch-up: the takeover reads them
            await owner.enqueue("f", {"i": i}, unique_id=f"last-{i}")
        # the owner dies: its turns stop, nothing more of it is stored
        assert owner._joined is not None and owner._joined.node._task is not None
        owner._joined.node._task.cancel()
        owner.lease_lost()
        expected = states(owner)
        taken = None
        while taken is None:  # its lease runs out
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(sql.TAKE_LOCK)
                taken = await conn.fetchrow(sql.TAKE, DEFAULT_APP, "heir", 60_000)
            await asyncio.sleep(0.1)
        core = heir.core
        standby.lease = Lease(DEFAULT_APP, "heir", int(taken["epoch"]), float("inf"))
        await heir.start()
        assert heir.core is core and not standby.ready  # it went on from the standby
        assert {u: s for u, s in states(heir).items() if not u.startswith("last-")} == {
            u: s for u, s in expected.items() if not u.startswith("last-")}
        for i in range(3):  # the tail: stored by the old owner, run by the heir
            assert (await heir.wait(f"last-{i}", timeout=5_000)).return_value == {"i": i}
        assert (await heir.get_schedule("daily")).spec.cron == "0 0 3 * * ?"
        uid = await heir.enqueue("f", {"new": True})  # and it writes on from there
        assert (await heir.wait(uid, timeout=5_000)).state is TaskState.SUCCESS
    finally:
        if heir is not None:
            await heir.close()
        await owner.close()
        await pool.close()


async def test_a_standby_behind_a_snapshot_starts_over(pg_url: str) -> None:
    owner = Engine(store=pg_url, concurrency=4)
    owner.define("f")(done)
    await owner.start()
    pool = await open_database(pg_url)
    try:
        await owner.enqueue("f", {}, unique_id="one", delay=HOUR)
        standby = Standby(pool, DEFAULT_APP, SystemClock())
        standby.core = Engine(opener=standby).core
        await standby.catch_up()
        await owner.enqueue("f", {}, unique_id="two", delay=HOUR)
        await owner.compact()  # a snapshot covers "two", its batch deleted
        await owner.enqueue("f", {}, unique_id="three", delay=HOUR)
        with pytest.raises(LogGapError):
            await standby.catch_up()
        again = Standby(pool, DEFAULT_APP, SystemClock())  # read whole: all three
        again.core = Engine(opener=again).core
        await again.catch_up()
        assert {t.unique_id for t in again.core.tasks()} == {"one", "two", "three"}
        with pytest.raises(RuntimeError, match="not taken"):  # no lease: it cannot open
            await again(StoreHooks())
    finally:
        await owner.close()
        await pool.close()
