"""Progress from a running task: visible at once, coalesced in the log, kept across restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from cloudqueue import Engine, FakeClock, RunContext, ValidationError
from cloudqueue.engine.core.errors import StaleRunError
from cloudqueue.engine.core.events import ProgressReported, RunSucceeded
from cloudqueue.engine.core.task import iso_ms
from cloudqueue.engine.runtime.log_file import read_log
from cloudqueue.testing import settle

T0 = 1_700_000_000_000


def progress_events(directory: Path) -> list[ProgressReported]:
    return [e for e in read_log(directory)[0] if isinstance(e, ProgressReported)]


async def test_progress_is_visible_at_once_and_kept_after_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    step = asyncio.Event()
    contexts: list[RunContext] = []

    async def install(params: Any, ctx: RunContext) -> str:
        contexts.append(ctx)
        await ctx.progress(10, message="downloading", detail={"bytes": 1024})
        await step.wait()
        return "installed"

    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        queue.define("install")(install)
        uid = await queue.enqueue("install")
        await settle(queue)
        wire = (await queue.get_task_info(uid)).to_wire()
        assert wire["status"] == "queued" and wire["state"] == "running"
        assert wire["progress"] == {
            "percent": 10, "message": "downloading", "detail": {"bytes": 1024},
            "updatedAt": iso_ms(T0),
            "messages": [{"at": iso_ms(T0), "message": "downloading"}]}
        clock.advance(100)
        await contexts[0].progress(done=3, total=4, message="copying files")
        info = (await queue.get_task_info(uid)).to_wire()["progress"]
        assert (info["percent"], info["done"], info["total"], info["message"]) == (
            10, 3, 4, "copying files")  # fields merge; the latest wins
        step.set()
        assert (await queue.wait(uid, timeout=5000)).return_value == "installed"
    async with Engine(data_dir=tmp_path, clock=clock) as queue:  # another instance, same data
        after = (await queue.get_task_info(uid)).to_wire()["progress"]
    assert (after["done"], after["message"]) == (3, "copying files")
    assert [m["message"] for m in after["messages"]] == ["downloading", "copying files"]


async def test_a_chatty_function_is_coalesced_in_the_log(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    release = asyncio.Event()
    contexts: list[RunContext] = []

    async def chatty(params: Any, ctx: RunContext) -> None:
        contexts.append(ctx)
        await release.wait()

    async with Engine(data_dir=tmp_path, clock=clock) as queue:
        queue.define("chatty")(chatty)
        uid = await queue.enqueue("chatty")
        await settle(queue)
        for i in range(1, 101):  # 100 reports within one 500 ms window
            await contexts[0].progress(i)
        await settle(queue)
        assert len(progress_events(tmp_path)) == 1  # the first, at once
        assert (await queue.get_task_info(uid)).to_wire()["progress"]["percent"] == 100
        clock.advance(500)  # the window ends: the latest report is logged
        await settle(queue)
        assert [e.progress["percent"] for e in progress_events(tmp_path)] == [1, 100]
        await contexts[0].progress(message="almost")  # pending when the run ends...
        release.set()
        await queue.wait(uid, timeout=5000)
    events = [e for e in read_log(tmp_path)[0]
              if isinstance(e, ProgressReported | RunSucceeded)]
    assert [type(e).__name__ for e in events] == [
        "ProgressReported", "ProgressReported", "ProgressReported", "RunSucceeded"]
    almost = cast(ProgressReported, events[2])  # its type is checked just above
    assert almost.progress["message"] == "almost"  # ...and flushed before the outcome


async def test_a_timed_out_run_cannot_report_any_more() -> None:
    clock = FakeClock(T0)
    contexts: list[RunContext] = []

    async def slow(params: Any, ctx: RunContext) -> None:
        contexts.append(ctx)
        await asyncio.Event().wait()

    async with Engine(clock=clock) as queue:
        queue.define("slow")(slow)
        await queue.enqueue("slow", timeout=100, attempts=1, backoff=10_000)
        await settle(queue)
        clock.advance(100)
        await settle(queue)
        with pytest.raises(StaleRunError, match="is not running any more"):
            await contexts[0].progress(50)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"percent": 101}, "percent must be a number from 0 to 100"),
     ({"done": 5, "total": 4}, "done (5) cannot exceed total (4)"),
     ({"done": -1}, "done must be a whole number >= 0"),
     ({"message": "x" * 501}, "at most 500 characters"),
     ({"detail": {"blob": "x" * 5000}}, "over 4096"),
     ({}, "needs percent, done/total, message or detail")],
)
async def test_bad_reports_say_what_to_fix(kwargs: dict[str, Any], message: str) -> None:
    ctx = RunContext("t", "f", 1, T0)
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await ctx.progress(**kwargs)
