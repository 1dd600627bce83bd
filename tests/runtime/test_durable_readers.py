"""Readers only ever see durable state: a watcher (``Engine.watch``, the SSE stream), task info
and ``wait`` show a change only once its record is fsynced, so a crash can never take back what
a browser was shown. Driven by a log whose fsync is held back (an injected ``FileOps``)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from cloudqueue import Engine, FakeClock, RunContext, TaskState
from cloudqueue.engine.runtime.log_file import FileOps

T0 = 1_700_000_000_000


class HeldFsync(FileOps):
    """The real file layer, with every fsync held back while ``hold`` is set."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.go = threading.Event()

    def fsync(self, fd: int) -> None:
        if self.hold.is_set():
            self.go.wait(30)
        super().fsync(fd)

    def release(self) -> None:
        self.hold.clear()
        self.go.set()


async def _until(condition: Any) -> None:
    """Let the loop run until ``condition()`` (no wall-clock wait: loop turns only)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


async def test_watchers_task_info_and_wait_see_nothing_before_it_is_fsynced(
        tmp_path: Path) -> None:
    ops, clock = HeldFsync(), FakeClock(T0)
    ran = asyncio.Event()

    async def work(params: Any, ctx: RunContext) -> str:
        ran.set()
        return "done"

    async with Engine(data_dir=tmp_path, file_ops=ops, clock=clock) as queue:
        try:
            queue.define("work")(work)
            uid = await queue.enqueue("work", delay=1_000)
            seen: list[tuple[str, str]] = []
            stream = queue.watch(uid)
            first = await stream.__anext__()
            seen.append((first[0], first[1].to_wire()["state"]))

            async def read() -> None:
                async for kind, task in stream:
                    seen.append((kind, task.to_wire()["state"]))

            reader = asyncio.ensure_future(read())
            ops.hold.set()  # from here on nothing becomes durable
            clock.advance(1_000)  # the task starts, runs and succeeds, in memory
            await ran.wait()
            await _until(lambda: queue.core.task_info(uid, T0 + 1_000).state is TaskState.SUCCESS)
            info = asyncio.ensure_future(queue.get_task_info(uid))
            waited = asyncio.ensure_future(queue.wait(uid))
            late = queue.watch(uid)
            late_first = asyncio.ensure_future(late.__anext__())
            for _ in range(200):  # the loop keeps turning; the fsync stays held
                await asyncio.sleep(0)
            assert queue.store.durable_seq < queue.core.last_seq
            assert seen == [("state", "queued")]  # not "running", not "finished"
            assert not info.done() and not waited.done() and not late_first.done()

            ops.release()
            assert (await info).state is TaskState.SUCCESS
            assert (await waited).state is TaskState.SUCCESS
            assert (await late_first)[1].to_wire()["state"] == "success"
            await asyncio.wait_for(reader, 5)
            await late.aclose()  # type: ignore[attr-defined]
        finally:
            ops.release()  # a failed check must not leave close() waiting on it
    assert seen == [("state", "queued"), ("running", "running"), ("finished", "success")]


async def test_a_reader_is_answered_at_once_when_everything_is_durable(tmp_path: Path) -> None:
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0)) as queue:
        uid = await queue.enqueue("f", delay=60_000)
        assert queue.store.durable_seq == queue.core.last_seq
        reading = queue.get_task_info(uid)
        # nothing to wait for: the coroutine finishes without ever suspending
        try:
            reading.send(None)
        except StopIteration as done:
            assert done.value.state is TaskState.QUEUED
        else:
            raise AssertionError("get_task_info waited although everything was durable")
        listed, count = await queue.list_tasks()
        assert count == 1 and listed[0].unique_id == uid


async def test_nobody_watching_costs_no_held_updates(tmp_path: Path) -> None:
    ops = HeldFsync()
    async with Engine(data_dir=tmp_path, file_ops=ops, clock=FakeClock(T0)) as queue:
        ops.hold.set()
        try:
            pending = asyncio.ensure_future(queue.enqueue("f", delay=60_000))
            await _until(lambda: len(queue.core) == 1)
            assert not queue.watchers._held and queue.watchers._releaser is None
        finally:
            ops.release()
        await pending
