"""The driver asks the store, right before each call, whether this node may still start runs
(``Store.holds_lease``): a store shared by several nodes says no once this node's lease has
lapsed. Then nothing is called: the run goes back to the queue uncharged, no new run starts, and
when the lease holds again the queue runs it."""

from __future__ import annotations

from typing import Any

from cloudqueue import Engine, FakeClock, RunContext, TaskState
from cloudqueue.engine.runtime.store import MemoryStore
from tests.waiting import turns, until

T0 = 1_700_000_000_000


class LeasedStore(MemoryStore):
    """A memory store whose lease a test takes away and gives back."""

    def __init__(self) -> None:
        super().__init__()
        self.leased = True

    @property
    def holds_lease(self) -> bool:
        return self.leased


def recording(calls: list[str]) -> Any:
    """A function noting each task it is called for."""
    async def f(params: Any, ctx: RunContext) -> Any:
        calls.append(ctx.unique_id or "")
        return "ok"
    return f


async def test_no_call_goes_out_while_the_lease_has_lapsed() -> None:
    store = LeasedStore()
    calls: list[str] = []
    async with Engine(store=store, clock=FakeClock(T0), metrics=False) as queue:
        queue.define("f")(recording(calls))
        store.leased = False  # e.g. the database could not be reached for too long
        await queue.enqueue("f", unique_id="a")
        await turns(50)
        assert calls == []
        held = await queue.get_task_info("a")
        assert held.state is TaskState.QUEUED and held.attempt == 0
        store.leased = True  # renewed: the node wakes its driver
        queue.driver.poke()
        done = await queue.wait("a", timeout=5_000)
        assert done.state is TaskState.SUCCESS and calls == ["a"] and done.attempt == 1


async def test_a_run_claimed_before_the_lapse_is_handed_back_uncalled() -> None:
    store = LeasedStore()
    calls: list[str] = []
    async with Engine(store=store, clock=FakeClock(T0), metrics=False) as queue:
        queue.define("f")(recording(calls))
        await queue.enqueue("f", unique_id="b", delivery_mode="atMostOnce")
        # the lease lapses between the run's claim (durable) and its call
        queue.driver.execute(queue.core.tick(T0, dispatch=True))
        store.leased = False
        await until(lambda: not queue.driver.running_runs, "the run handed back")
        info = await queue.get_task_info("b")
        assert calls == [] and info.state is TaskState.QUEUED
        assert [r.outcome for r in info.runs] == ["unavailable"] and info.attempt == 0
