"""Missed schedule slots at start (``EngineCore.recover``): one catch-up after the queue was down;
every missed slot after a failover between nodes (the app was dispatched elsewhere until moments
ago); none, with a logged skip, for atMostOnce either way."""

from __future__ import annotations

import pytest

from cloudqueue.engine.core.commands import Append, Command
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.events import Event, ScheduleSkipped, TaskSubmitted
from cloudqueue.engine.core.options import DeliveryMode, TaskOptions
from cloudqueue.engine.core.schedules import MAX_FAILOVER_SLOTS, ScheduleSpec

T0 = 1_700_000_000_000


def scheduled(every_ms: int, mode: DeliveryMode = DeliveryMode.AT_LEAST_ONCE) -> EngineCore:
    core = EngineCore(CoreConfig())
    core.set_schedule(ScheduleSpec("s", "tick", {}, None, every_ms, "UTC",
                                   TaskOptions(delivery_mode=mode)), T0)
    return core


def events(commands: list[Command]) -> list[Event]:
    return [e for c in commands if isinstance(c, Append) for e in c.events]


def submitted(commands: list[Command]) -> list[tuple[str, int | float]]:
    return [(e.unique_id, e.priority) for e in events(commands) if isinstance(e, TaskSubmitted)]


def test_after_the_queue_was_down_one_catch_up_for_the_latest_slot() -> None:
    core = scheduled(1_000)
    commands = core.recover(T0 + 5_500)
    assert submitted(commands) == [(f"cron:s:{T0 + 5_000}", T0 + 5_000)]
    assert core.schedule("s").next_slot_ms == T0 + 6_000


def test_after_a_failover_every_missed_slot_fires_once_in_order() -> None:
    core = scheduled(1_000)
    commands = core.recover(T0 + 5_500, failover=True)
    slots = [T0 + k * 1_000 for k in range(1, 6)]
    assert submitted(commands) == [(f"cron:s:{slot}", slot) for slot in slots]
    schedule = core.schedule("s")
    assert (schedule.last_slot_ms, schedule.next_slot_ms) == (T0 + 5_000, T0 + 6_000)
    assert submitted(core.recover(T0 + 5_900, failover=True)) == []  # nothing twice


def test_a_failover_does_not_fire_a_slot_the_old_owner_fired() -> None:
    core = scheduled(1_000)
    core.recover(T0 + 2_500, failover=True)  # slots 1 and 2 fired (by the old owner, say)
    commands = core.recover(T0 + 4_200, failover=True)
    assert submitted(commands) == [(f"cron:s:{T0 + 3_000}", T0 + 3_000),
                                   (f"cron:s:{T0 + 4_000}", T0 + 4_000)]


def test_an_at_most_once_schedule_skips_its_missed_slots_even_after_a_failover() -> None:
    core = scheduled(1_000, DeliveryMode.AT_MOST_ONCE)
    commands = core.recover(T0 + 5_500, failover=True)
    assert submitted(commands) == []
    assert [(e.skipped, e.last_slot_ms) for e in events(commands)
            if isinstance(e, ScheduleSkipped)] == [(5, T0 + 5_000)]
    assert core.schedule("s").next_slot_ms == T0 + 6_000


@pytest.mark.parametrize(("missed", "fired"), [(MAX_FAILOVER_SLOTS, MAX_FAILOVER_SLOTS),
                                               (MAX_FAILOVER_SLOTS + 1, 1)])
def test_more_missed_slots_than_the_cap_fire_one_catch_up(missed: int, fired: int) -> None:
    core = scheduled(10)
    commands = core.recover(T0 + missed * 10 + 5, failover=True)
    got = submitted(commands)
    assert len(got) == fired
    assert got[-1] == (f"cron:s:{T0 + missed * 10}", T0 + missed * 10)
