"""HeapFreezer (engine/runtime/heap.py): the policy with a fake collector and clock, then what it
promises with CPython's real collector."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from cloudqueue import FakeClock
from cloudqueue.engine.runtime.heap import HeapFreezer
from tests import waiting


class FakeGc:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect{generation}")
        return 7


def test_freezes_every_turn_and_collects_in_full_when_due() -> None:
    fake = FakeGc()
    clock = FakeClock(100_000)
    freezer = HeapFreezer(freeze_every_s=1.0, full_every_s=10.0, collector=fake, clock=clock)
    turns = []
    for t in (101.0, 102.0, 109.9, 110.0, 111.0, 119.9, 120.0):
        clock.set(int(t * 1000))
        turns.append(freezer.step(t))
    assert turns == ["freeze", "freeze", "freeze", "full", "freeze", "freeze", "full"]
    assert fake.calls[:4] == ["freeze", "freeze", "freeze", "unfreeze"]
    assert fake.calls[4:6] == ["collect2", "freeze"]  # frozen again right after the full pass
    assert (freezer.freezes, freezer.full_collections) == (5, 2)


def test_never_collects_in_full_when_told_so() -> None:
    fake = FakeGc()
    freezer = HeapFreezer(full_every_s=None, collector=fake, clock=FakeClock(0))
    assert {freezer.step(t) for t in (1.0, 1e6, 1e9)} == {"freeze"}
    assert "collect2" not in fake.calls


@pytest.mark.parametrize("kwargs, message", [
    ({"freeze_every_s": 0}, "freeze_every_s must be > 0"),
    ({"freeze_every_s": 5, "full_every_s": 1}, "full_every_s must be None or >= freeze_every_s"),
])
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HeapFreezer(**kwargs)  # type: ignore[arg-type]


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def make_cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def real_gc():  # type: ignore[no-untyped-def]
    """Leave the interpreter's collector as we found it."""
    gc.collect()
    yield
    gc.unfreeze()
    gc.collect()


def test_frozen_objects_are_out_of_sight_until_the_full_pass(real_gc) -> None:  # type: ignore[no-untyped-def]
    freezer = HeapFreezer(freeze_every_s=1.0, full_every_s=10.0, clock=FakeClock(0))
    alive_then = make_cycle()  # a cycle still referenced... by nothing but itself
    freezer.step(1.0)  # frozen with it
    assert gc.get_freeze_count() > 0
    gc.collect()  # an ordinary full collection does not look at frozen objects
    assert alive_then() is not None
    young = make_cycle()  # made after the freeze: collected as usual
    gc.collect()
    assert young() is None
    assert freezer.step(10.0) == "full"  # the full pass finds the frozen cycle
    assert alive_then() is None
    assert gc.get_freeze_count() > 0  # and everything left is frozen again


def test_frozen_objects_are_still_freed_by_reference_counting(real_gc) -> None:  # type: ignore[no-untyped-def]
    node = Node()
    ref = weakref.ref(node)
    HeapFreezer(clock=FakeClock(0)).step(1.0)
    del node
    assert ref() is None


async def test_run_freezes_on_the_loop_until_cancelled() -> None:
    fake = FakeGc()
    clock = FakeClock(0)
    freezer = HeapFreezer(freeze_every_s=1.0, full_every_s=None, collector=fake, clock=clock)
    task = asyncio.ensure_future(freezer.run())
    for _ in range(3):
        await waiting.turns()
        clock.advance(999)
        await waiting.turns()
        frozen = freezer.freezes
        clock.advance(1)  # a freeze every freeze_every_s
        await waiting.turns()
        assert freezer.freezes == frozen + 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert freezer.freezes == 3 and fake.calls == ["freeze"] * 3
