"""Schedules on a FakeClock: exact fire times, one task per slot, catch-up, pause, restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cloudqueue import Engine, FakeClock, RunContext, TaskState, ValidationError
from cloudqueue.engine.core.errors import UnknownScheduleError
from cloudqueue.engine.core.events import ScheduleSkipped, TaskSubmitted
from cloudqueue.engine.core.task import iso_ms
from cloudqueue.engine.runtime.log_file import read_log
from cloudqueue.testing import settle

MONDAY = 1_704_067_200_000 + 7 * 86_400_000  # 2024-01-08T00:00:00Z, a Monday


def fired(queue: Engine) -> list[str]:
    return sorted(t.unique_id for t in queue.core.tasks() if t.unique_id.startswith("cron:"))


async def runs(params: Any, ctx: RunContext) -> str:
    return ctx.unique_id


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(MONDAY)


async def test_every_five_minutes_fires_at_exact_slots_as_tasks(tmp_path: Path,
                                                                clock: FakeClock) -> None:
    async with Engine(data_dir=tmp_path, clock=clock, concurrency=4) as queue:
        queue.define("tick")(runs)
        info = await queue.set_schedule("five", "tick", {"x": 1}, cron="0 */5 * * * ?",
                                        keep_result=3_600_000)
        assert info.upcoming_ms[:2] == (MONDAY + 300_000, MONDAY + 600_000)
        clock.advance(299_999)
        await settle(queue)
        assert fired(queue) == []
        clock.advance(1)
        await settle(queue)
        uid = f"cron:five:{MONDAY + 300_000}"
        assert fired(queue) == [uid]
        task = await queue.wait(uid, timeout=5000)
        assert (task.status, task.return_value) == ("success", uid)
        fired_task = queue.core.task(uid)
        assert fired_task is not None and fired_task.priority == MONDAY + 300_000
        clock.advance(600_000)
        await settle(queue)
        assert len(fired(queue)) == 3


async def test_day_of_week_two_is_monday_in_the_schedules_zone(clock: FakeClock) -> None:
    async with Engine(clock=clock, timezone="Asia/Shanghai") as queue:
        info = await queue.get_schedule(
            (await queue.set_schedule("noon", "f", cron="0 0 12 ? * 2")).spec.name, upcoming=2)
        assert [iso_ms(t) for t in info.upcoming_ms] == [
            "2024-01-08T04:00:00.000Z", "2024-01-15T04:00:00.000Z"]  # 12:00 +08:00 on Mondays
        assert info.to_wire()["timezone"] == "Asia/Shanghai"


async def test_an_interval_fires_every_interval_from_creation(clock: FakeClock) -> None:
    async with Engine(clock=clock) as queue:
        info = await queue.set_schedule("every", "f", interval=1_500)
        assert info.upcoming_ms[:3] == (MONDAY + 1_500, MONDAY + 3_000, MONDAY + 4_500)


async def test_bad_schedules_are_refused_naming_the_field(clock: FakeClock) -> None:
    async with Engine(clock=clock) as queue:
        with pytest.raises(ValidationError, match="exactly one of cron"):
            await queue.set_schedule("s", "f", cron="0 * * * * ?", interval=5)
        with pytest.raises(ValidationError, match="cron day-of-week"):
            await queue.set_schedule("s", "f", cron="0 0 12 ? * 9")
        with pytest.raises(ValidationError, match="unique_id cannot be set on a schedule"):
            await queue.set_schedule("s", "f", interval=5, unique_id="x")
        with pytest.raises(ValidationError, match="schedule name"):
            await queue.set_schedule("no/slash", "f", interval=5)
        with pytest.raises(ValidationError, match="timezone"):
            await queue.set_schedule("s", "f", interval=5, timezone="Mars/Base")
        assert await queue.list_schedules() == []


async def test_pause_resume_and_delete(clock: FakeClock) -> None:
    async with Engine(clock=clock) as queue:
        await queue.set_schedule("p", "f", interval=1_000)
        paused = await queue.pause_schedule("p")
        assert paused.spec.paused and paused.upcoming_ms == ()
        clock.advance(5_000)
        await settle(queue)
        assert fired(queue) == []
        resumed = await queue.resume_schedule("p")  # no catch-up of the paused time
        assert resumed.upcoming_ms[0] == MONDAY + 6_000
        await queue.delete_schedule("p")
        with pytest.raises(UnknownScheduleError):
            await queue.get_schedule("p")
        clock.advance(5_000)
        await settle(queue)
        assert fired(queue) == []


@pytest.mark.parametrize(("mode", "catch_up"), [("atLeastOnce", 1), ("atMostOnce", 0)])
async def test_slots_missed_while_down(tmp_path: Path, clock: FakeClock, mode: str,
                                       catch_up: int, caplog: pytest.LogCaptureFixture) -> None:
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        await queue.set_schedule("m", "f", cron="0 * * * * ?", delivery_mode=mode)
    clock.advance(10 * 60_000 + 30_000)  # down for 10.5 minutes: 10 slots missed
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        await settle(queue)
        assert fired(queue) == ([f"cron:m:{MONDAY + 600_000}"] if catch_up else [])
        info = await queue.get_schedule("m")
        assert info.last_slot_ms == MONDAY + 600_000
        assert info.upcoming_ms[0] == MONDAY + 660_000
    skipped = [e for e in read_log(tmp_path)[0] if isinstance(e, ScheduleSkipped)]
    assert [(e.skipped, e.last_slot_ms) for e in skipped] == (
        [] if catch_up else [(10, MONDAY + 600_000)])
    said = "schedule m: 10 slot(s) missed while the queue was down were skipped (atMostOnce)"
    assert (said in caplog.text) == (not catch_up)


async def test_a_slot_is_never_fired_twice_across_restarts(tmp_path: Path,
                                                           clock: FakeClock) -> None:
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        await queue.set_schedule("once", "f", interval=1_000, keep_result=3_600_000)
        clock.advance(3_000)
        await settle(queue)
    for _ in range(2):
        async with Engine(data_dir=tmp_path, clock=clock) as queue:
            await settle(queue)
    submitted = [e.unique_id for e in read_log(tmp_path)[0] if isinstance(e, TaskSubmitted)]
    assert submitted == [f"cron:once:{MONDAY + k * 1_000}" for k in (1, 2, 3)]


async def test_compaction_keeps_schedules_and_their_last_slot(tmp_path: Path,
                                                              clock: FakeClock) -> None:
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        await queue.set_schedule("kept", "f", interval=1_000, attempts=3)
        clock.advance(2_000)
        await settle(queue)
        await queue.compact()
    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        info = await queue.get_schedule("kept")
        assert (info.last_slot_ms, info.spec.options.attempts) == (MONDAY + 2_000, 3)
        assert len(fired(queue)) == 2
        assert all(t.state is not TaskState.CANCELLED for t in queue.core.tasks())


async def test_a_group_of_their_own_keeps_firings_ahead_of_a_backlog(clock: FakeClock) -> None:
    release = asyncio.Event()

    async def slow(params: Any, ctx: RunContext) -> None:
        await release.wait()

    for own_group, expected in ((None, []), (1, ["cron:beat:" + str(MONDAY + 1_000)])):
        own_clock = FakeClock(MONDAY)
        async with Engine(clock=own_clock, schedule_concurrency=own_group) as queue:
            queue.define("slow")(slow)
            queue.define("beat")(runs)
            for _ in range(3):
                await queue.enqueue("slow")  # the one ordinary slot is taken, two wait
            await queue.set_schedule("beat", "beat", interval=1_000)
            own_clock.advance(1_000)
            await settle(queue)
            started = [t.unique_id for t in queue.core.tasks()
                       if t.schedule == "beat" and t.state is not TaskState.QUEUED]
            assert started == expected
            info = (await queue.get_task_info(f"cron:beat:{MONDAY + 1_000}")).to_wire()
            assert info["schedule"] == "beat"
            release.set()
            await settle(queue)
            release.clear()


async def test_a_crash_anywhere_in_a_firing_loses_no_slot_and_doubles_none(
        tmp_path: Path) -> None:
    """The firing of a slot is one record (the task naming its slot): cut the log at every byte
    of the last firing's batch and restart within the slot's period."""
    import shutil

    from cloudqueue.engine.core.batch_codec import decode_log_payload
    from cloudqueue.engine.core.framing import scan
    from cloudqueue.engine.runtime.log_file import segment_name

    clock = FakeClock(MONDAY)
    original = tmp_path / "original"
    async with Engine(data_dir=original, clock=clock) as queue:
        await queue.set_schedule("s", "f", interval=1_000, keep_result=3_600_000)
        for _ in range(3):
            clock.advance(1_000)
            await settle(queue)
    data = (original / segment_name(1)).read_bytes()
    frames = scan(data)
    last_fire = max(i for i, p in enumerate(frames.payloads)
                    if any(isinstance(e, TaskSubmitted) and e.slot_ms
                           for e in decode_log_payload(p)))
    start = frames.offsets[last_fire]  # its batch's frame (format 2: the marker is inside)
    end = frames.offsets[last_fire + 1] if last_fire + 1 < len(frames.offsets) else len(data)
    clock.advance(500)  # restart inside slot 3's period
    for cut in range(start, end + 1):
        directory = tmp_path / f"cut-{cut}"
        shutil.copytree(original, directory, ignore=shutil.ignore_patterns("LOCK"))
        (directory / segment_name(1)).write_bytes(data[:cut])
        async with Engine(data_dir=directory, clock=clock) as queue:
            await settle(queue)
            slots = sorted(int(u.rsplit(":", 1)[1]) for u in fired(queue))
        assert slots == [MONDAY + 1_000, MONDAY + 2_000, MONDAY + 3_000], cut
