"""Finished tasks in a snapshot (format 4) are kept packed: a restore builds a ``KeptTask`` with
only what the task table needs, decodes the rest on the first read, and a snapshot written again
carries the packed rows through unread. A user reading any of them sees exactly the task that
was written; an operator acting on one (a retry) finds it whole."""

from __future__ import annotations

from typing import Any

from cloudqueue.engine.core.actions import Actor
from cloudqueue.engine.core.commands import Append, Invoke
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.events import TaskPurged
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task_rows import KeptTask, task_to_row
from cloudqueue.engine.runtime.rebuild import rebuild
from cloudqueue.engine.runtime.snapshot import decode_snapshot, encode_snapshot

T0 = 1_700_000_000_000
KEEP = 60_000


def invokes(commands: list[Any]) -> list[Invoke]:
    return [c for c in commands if isinstance(c, Invoke)]


def a_core() -> EngineCore:
    """Tasks in every state: succeeded (a result), failed (an error), cancelled, running,
    queued, delayed."""
    core = EngineCore(CoreConfig(concurrency=8), start_ms=T0)
    for name in ("ok", "bad", "running"):
        core.submit(name, "f", {"n": name},
                    TaskOptions(keep_result_ms=KEEP, attempts=0, timeout_ms=3_600_000), T0)
    core.submit("delayed", "f", {}, TaskOptions(delay_ms=3_600_000), T0)
    core.submit("gone", "f", {}, TaskOptions(delay_ms=3_600_000, keep_result_ms=KEEP), T0)
    core.cancel("gone", T0 + 1)
    runs = {i.unique_id: i for i in invokes(core.tick(T0 + 2))}
    core.run_succeeded("ok", runs["ok"].run_seq, {"answer": [1, 2.5, None]}, T0 + 3)
    core.run_failed("bad", runs["bad"].run_seq, "it broke", T0 + 4)
    core.submit("queued", "f", {}, TaskOptions(), T0 + 5)
    return core


def restored(data: bytes, now_ms: int = T0 + 10) -> EngineCore:
    snapshot = decode_snapshot(data, "test")
    return rebuild(EngineCore(CoreConfig(concurrency=8), start_ms=now_ms), [],
                   snapshot_seq=snapshot.seq, snapshot_tasks=snapshot.tasks,
                   counters=snapshot.counters)


def test_finished_tasks_restore_packed_and_read_back_exactly_as_written() -> None:
    core = a_core()
    data = encode_snapshot(core.last_seq, core.tasks(), core.counters())
    again = restored(data)
    kept = {t.unique_id: t for t in again.tasks() if isinstance(t, KeptTask)}
    assert set(kept) == {"ok", "bad", "gone"}
    assert all(t.packed for t in kept.values())  # the restore decoded none of them
    original = {t.unique_id: t for t in core.tasks()}
    for task in again.tasks():  # every field, as written
        assert task_to_row(task) == task_to_row(original[task.unique_id])
        assert task.info() == original[task.unique_id].info()
    assert not any(t.packed for t in kept.values())
    assert again.task_info("ok", T0 + 25).result == {"answer": [1, 2.5, None]}


def test_a_snapshot_written_again_carries_the_packed_rows_through_unread() -> None:
    core = a_core()
    data = encode_snapshot(core.last_seq, core.tasks(), core.counters())
    again = restored(data)
    assert encode_snapshot(again.last_seq, again.tasks(), again.counters()) == data
    assert all(t.packed for t in again.tasks() if isinstance(t, KeptTask))


def test_a_kept_task_expires_when_its_keep_result_ends_without_being_read() -> None:
    core = a_core()
    again = restored(encode_snapshot(core.last_seq, core.tasks(), core.counters()))
    purged = []
    for finished_ms in (T0 + 1, T0 + 3, T0 + 4):  # gone, ok, bad
        assert not again.tick(finished_ms + KEEP - 1, dispatch=False)
        [append] = again.tick(finished_ms + KEEP, dispatch=False)
        assert isinstance(append, Append)
        purged += [(type(e), e.unique_id) for e in append.events]
    assert purged == [(TaskPurged, "gone"), (TaskPurged, "ok"), (TaskPurged, "bad")]
    assert {t.unique_id for t in again.tasks()} == {"running", "delayed", "queued"}


def test_an_operator_retries_a_kept_failed_task_and_it_runs_again() -> None:
    core = a_core()
    again = restored(encode_snapshot(core.last_seq, core.tasks(), core.counters()))
    again.retry("bad", T0 + 20, Actor("operator", "cli"))
    assert again.task_info("bad", T0 + 25).state is TaskState.QUEUED
    started = {i.unique_id: i for i in invokes(again.tick(T0 + 21))}
    assert started["bad"].params == {"n": "bad"} and started["bad"].attempt == 1
    again.run_succeeded("bad", started["bad"].run_seq, "fine now", T0 + 22)
    info = again.task_info("bad", T0 + 25)
    assert (info.state, info.result, info.finished_ms) == (TaskState.SUCCESS, "fine now",
                                                           T0 + 22)
    # and its next snapshot keeps it as it is now, not as the row it was restored from
    last = restored(encode_snapshot(again.last_seq, again.tasks(), again.counters()), T0 + 30)
    assert last.task_info("bad", T0 + 30).result == "fine now"
