"""One scenario through the ``Queue`` protocol, against both implementations: the embedded
``Engine``, and ``QueueClient`` talking to a real server on 127.0.0.1. Same calls, same units
(milliseconds), same answers (``TaskInfo``, ``TaskPage``, ``ScheduleInfo``, typed errors).

And one function body, written against ``Run``, run in-process (``RunContext``) and behind the
function host (``Call``) with the same outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloudqueue import (
    BulkResult,
    DispatchState,
    DuplicateTaskError,
    Engine,
    FakeClock,
    InvalidTransitionError,
    Queue,
    QueueClient,
    Run,
    RunContext,
    ScheduleInfo,
    TaskInfo,
    TaskPage,
    TaskState,
    UnknownScheduleError,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.adapters.function_host import Call, FunctionHost
from tests.adapters.serving import A, serving
from tests.adapters.test_function_host import K, queue_calling

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def _typed_proof(engine: Engine, client: QueueClient, ctx: RunContext, call: Call) -> None:
    """Never called: mypy checks that both queues are a ``Queue`` and both contexts a ``Run``."""
    queues: list[Queue] = [engine, client]
    runs: list[Run] = [ctx, call]
    del queues, runs


async def install(params: Any, run: Run) -> Any:
    """Three slices, reporting progress, the way either kind of function does it."""
    step = (run.checkpoint or {"step": 0})["step"]
    await run.progress(done=step + 1, total=3, message=f"step {step}")
    if step < 2:
        return run.continue_with({"step": step + 1})
    return {"installed": params["template"], "slices": run.slice + 1, "attempt": run.attempt}


def new_engine(tmp_path: Path) -> Engine:
    engine = Engine(data_dir=tmp_path / "queue", clock=FakeClock(T0), timezone="UTC")

    @engine.define
    async def add(params: Any, run: RunContext) -> Any:
        return params["a"] + params["b"]

    engine.define("install")(install)

    @engine.define
    async def lookup(params: Any, run: RunContext) -> Any:
        raise KeyError("missing thing")

    return engine


@pytest.fixture(params=["embedded", "client"])
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Queue]:
    engine = new_engine(tmp_path)
    if request.param == "embedded":
        async with engine:
            yield engine
        return
    async with serving(engine) as url:
        async with QueueClient(url, A.app_id, master_key=A.master_key) as client:
            yield client


async def test_tasks_through_the_protocol(queue: Queue) -> None:
    uid = await queue.enqueue("add", {"a": 20, "b": 22}, unique_id="sum", timeout=5_000)
    assert uid == "sum"
    done = await queue.wait(uid, timeout=10_000)
    assert isinstance(done, TaskInfo)
    assert (done.state, done.return_value, done.attempt) == (TaskState.SUCCESS, 42, 1)
    assert await queue.get_task_info(uid) == done

    later = await queue.enqueue("add", {"a": 1, "b": 1}, delay=3_600_000, unique_id="later")
    with pytest.raises(TimeoutError):
        await queue.wait(later, timeout=50)
    cancelled = await queue.cancel(later)
    assert (cancelled.state, cancelled.status) == (TaskState.CANCELLED, "failed")

    page = await queue.list_tasks()
    assert isinstance(page, TaskPage)
    assert ([t.unique_id for t in page.tasks], page.total) == (["later", "sum"], 2)
    tasks, total = await queue.list_tasks(state="cancelled", limit=1)
    assert ([t.unique_id for t in tasks], total) == (["later"], 1)

    with pytest.raises(UnknownTaskError):
        await queue.get_task_info("nope")


async def test_listing_by_leanclouds_status_or_by_detailed_state(queue: Queue) -> None:
    """``status=queued`` (LeanCloud's) is every unfinished task; ``state=queued`` only those
    waiting for a slot; asking for both, or an unknown value, is refused before anything."""
    await queue.wait(await queue.enqueue("add", {"a": 1, "b": 1}, unique_id="done"),
                     timeout=10_000)
    await queue.enqueue("add", {"a": 1, "b": 1}, delay=3_600_000, unique_id="later")
    unfinished, total = await queue.list_tasks(status="queued")
    assert ([t.unique_id for t in unfinished], total) == (["later"], 1)
    assert [t.unique_id for t in (await queue.list_tasks(status="success")).tasks] == ["done"]
    assert (await queue.list_tasks(status="failed")).total == 0
    with pytest.raises(ValidationError) as both:
        await queue.list_tasks(state="queued", status="queued")
    assert both.value.field == "status"
    with pytest.raises(ValidationError):
        await queue.list_tasks(status="retry_wait")  # a state, not a status


async def test_many_tasks_at_once_all_or_none(queue: Queue) -> None:
    uids = await queue.enqueue_many([
        {"function": "add", "params": {"a": 1, "b": 2}, "unique_id": "one"},
        {"function": "add", "params": {"a": 3, "b": 4}, "timeout": 5_000},
    ])
    assert uids[0] == "one" and len(uids) == 2
    assert [(await queue.wait(uid, timeout=10_000)).return_value for uid in uids] == [3, 7]

    with pytest.raises(DuplicateTaskError) as held:  # one held id refuses the whole batch
        await queue.enqueue_many([{"function": "add", "params": {"a": 0, "b": 0}},
                                  {"function": "add", "unique_id": "one"}])
    assert (held.value.index, held.value.unique_id) == (1, "one")
    with pytest.raises(ValidationError) as bad:
        await queue.enqueue_many([{"function": "add", "unique_id": "two"},
                                  {"function": "add", "attempts": -1}])
    assert (bad.value.index, bad.value.field, str(bad.value)) == (
        1, "attempts", "item 1: attempts must be between 0 and 1000, got -1")
    assert (await queue.list_tasks()).total == 2  # nothing of either refused batch


async def test_many_tasks_at_once_each_on_its_own(queue: Queue) -> None:
    await queue.enqueue("add", {"a": 0, "b": 0}, unique_id="held", delay=3_600_000)
    results = await queue.enqueue_each([
        {"function": "add", "params": {"a": 1, "b": 1}, "unique_id": "fresh"},
        {"function": "add", "unique_id": "held"},
        {"function": "add", "delay": -5},
        {"function": "add", "params": {"a": 2, "b": 2}, "unique_id": "fresh"},
        {"function": "add", "params": {"a": 5, "b": 5}},
    ])
    assert results[0] == "fresh" and isinstance(results[4], str)
    held, bad, twice = results[1], results[2], results[3]
    assert isinstance(held, DuplicateTaskError)
    assert (held.index, held.unique_id, held.state) == (1, "held", "queued")
    assert isinstance(bad, ValidationError)
    assert (bad.index, bad.field, str(bad)) == (2, "delay", "item 2: delay must be >= 0 ms, got -5")
    assert isinstance(twice, DuplicateTaskError)
    assert (twice.index, str(twice)) == (3, "item 3: uniqueId 'fresh' is also given to item 0 "
                                            "of this batch")
    assert (await queue.wait("fresh", timeout=10_000)).return_value == 2
    assert (await queue.wait(str(results[4]), timeout=10_000)).return_value == 10
    assert (await queue.list_tasks()).total == 3


async def test_watch_and_run_through_the_protocol(queue: Queue) -> None:
    uid = await queue.enqueue("install", {"template": "blog"}, unique_id="blog")
    final = await queue.wait(uid, timeout=10_000)
    assert (final.state, final.return_value, final.slices) == (
        TaskState.SUCCESS, {"installed": "blog", "slices": 3, "attempt": 1}, 2)
    assert final.progress is not None and final.progress["done"] == 3
    # a final task's stream is its state alone
    assert [(kind, info.state) async for kind, info in queue.watch(uid)] == [
        ("state", TaskState.SUCCESS)]


async def test_run_history_through_the_protocol(queue: Queue) -> None:
    """``runs``: each run of a task, the same from either queue (and from the client, the
    same as the server's own view: ``get_task_info`` equals what ``wait`` saw)."""
    sliced = await queue.wait(await queue.enqueue("install", {"template": "blog"}),
                              timeout=10_000)
    assert [tuple(run) for run in sliced.runs] == [
        (1, 0, T0, T0, "continued", None, None, None),
        (1, 1, T0, T0, "continued", None, None, None),
        (1, 2, T0, T0, "success", None, None, None)]
    failed = await queue.wait(await queue.enqueue("lookup", attempts=0, unique_id="lookup"),
                              timeout=10_000)
    (run,) = failed.runs
    assert (failed.error, run.attempt, run.outcome, run.duration_ms, run.error) == (
        "KeyError: 'missing thing'", 1, "failed", 0, "KeyError: 'missing thing'")
    assert run.traceback is not None and run.traceback.startswith(
        "Traceback (most recent call last):\n")
    assert run.traceback.endswith('in lookup\n    raise KeyError("missing thing")\n'
                                  "KeyError: 'missing thing'\n")
    assert await queue.get_task_info("lookup") == failed


async def test_schedules_through_the_protocol(queue: Queue) -> None:
    made = await queue.set_schedule("tick", "add", {"a": 1, "b": 2}, interval=60_000,
                                    timezone="UTC", paused=True, attempts=2, timeout=5_000)
    assert isinstance(made, ScheduleInfo)
    assert (made.spec.name, made.spec.interval_ms, made.spec.paused, made.upcoming_ms) == (
        "tick", 60_000, True, ())
    assert (made.spec.options.attempts, made.spec.options.timeout_ms) == (2, 5_000)
    resumed = await queue.resume_schedule("tick")
    assert not resumed.spec.paused
    shown = await queue.get_schedule("tick", 3)
    assert shown.spec == resumed.spec
    assert shown.upcoming_ms == (T0 + 60_000, T0 + 120_000, T0 + 180_000)
    assert (await queue.pause_schedule("tick")).upcoming_ms == ()
    assert [s.spec.name for s in await queue.list_schedules()] == ["tick"]
    fired = await queue.run_schedule_now("tick")  # paused or not: an operator's one-off
    assert fired.startswith("cron:tick:now:")
    assert (await queue.wait(fired, timeout=10_000)).return_value == 3
    assert (await queue.get_schedule("tick")).last_slot_ms is None  # its slots untouched
    with pytest.raises(UnknownScheduleError):
        await queue.run_schedule_now("nope")
    assert await queue.preview_schedule(interval=60_000, timezone="UTC", from_ms=T0,
                                        count=2) == [T0 + 60_000, T0 + 120_000]
    await queue.delete_schedule("tick")
    assert await queue.list_schedules() == []
    with pytest.raises(UnknownScheduleError):
        await queue.get_schedule("tick")


async def test_one_function_body_runs_in_process_and_behind_the_function_host(
        tmp_path: Path) -> None:
    async with Engine(clock=FakeClock(T0)) as engine:
        engine.define("install")(install)
        in_process = await engine.wait(await engine.enqueue("install", {"template": "blog"}),
                                       timeout=10_000)

    host = FunctionHost(K)
    host.define("install")(install)
    async with queue_calling(host, tmp_path / "hosted") as (hosted, _):
        behind_host = await hosted.wait(await hosted.enqueue("install", {"template": "blog"}),
                                        timeout=10_000)

    for info in (in_process, behind_host):
        assert (info.state, info.return_value, info.slices) == (
            TaskState.SUCCESS, {"installed": "blog", "slices": 3, "attempt": 1}, 2)


async def test_operator_actions_through_the_protocol(queue: Queue) -> None:
    """Retry, run now, pause and resume, bulk cancel, retry and purge by filter, and the audit
    list: the same calls and answers from either queue (only who acted differs: the embedded
    engine's own caller, or the client's master key)."""
    by = "embedded" if isinstance(queue, Engine) else "master"
    broken = await queue.enqueue("add", {"a": 1}, unique_id="broken", attempts=0)  # no "b"
    assert (await queue.wait(broken, timeout=10_000)).state is TaskState.FAILED
    retried = await queue.retry(broken)
    assert (retried.state, retried.attempt, retried.error) == (TaskState.QUEUED, 0, None)
    again = await queue.wait(broken, timeout=10_000)
    assert (again.state, again.attempt) == (TaskState.FAILED, 1)
    with pytest.raises(InvalidTransitionError) as running:
        await queue.retry(await queue.enqueue("add", {"a": 1, "b": 1}, delay=3_600_000,
                                              unique_id="later"))
    assert (running.value.state, str(running.value)) == (
        "queued", "Task 'later' is queued: cannot retry it (it has not finished)")
    assert (await queue.run_now("later")).state is TaskState.QUEUED
    assert (await queue.wait("later", timeout=10_000)).return_value == 2

    paused = await queue.pause()
    assert paused == DispatchState(True, T0) == await queue.dispatch_state()
    held = await queue.enqueue("add", {"a": 2, "b": 2}, unique_id="held")  # still accepted
    assert (await queue.get_task_info(held)).app_paused
    with pytest.raises(TimeoutError):
        await queue.wait(held, timeout=50)
    assert await queue.resume() == DispatchState(False)
    assert (await queue.wait(held, timeout=10_000)).return_value == 4

    for i in range(3):
        await queue.enqueue("add", {"a": i, "b": 0}, delay=3_600_000, unique_id=f"d{i}")
    assert await queue.cancel_tasks(dry_run=True) == BulkResult(3, 3, True)
    assert await queue.cancel_tasks(function="add", created_from=T0, limit=2) == \
        BulkResult(2, 3)
    assert await queue.cancel_tasks(created_to=T0) == BulkResult(0, 0)
    assert await queue.retry_tasks(state="cancelled") == BulkResult(2, 2)
    assert [(await queue.wait(f"d{i}", timeout=10_000)).return_value for i in (0, 1)] == [0, 1]
    assert await queue.purge_tasks(state=["success"]) == BulkResult(4, 4)
    with pytest.raises(UnknownTaskError):
        await queue.get_task_info("d0")
    with pytest.raises(ValidationError) as bad:
        await queue.retry_tasks(state="queued")
    assert bad.value.field == "state"

    entries = await queue.audit()
    assert [(e.action, e.by, e.target, e.count) for e in entries] == [
        ("purge", by, None, 4), ("retry", by, None, 2), ("cancel", by, None, 2),
        ("resume", by, None, 0), ("pause", by, None, 0), ("run_now", by, "later", 1),
        ("retry", by, "broken", 1)]
    assert entries[0].filter == {"state": ["success"]}
    assert entries[2].filter == {"state": ["queued", "retry_wait"], "function": "add",
                                 "createdFrom": T0}
    assert [e.action for e in await queue.audit(2)] == ["purge", "retry"]
