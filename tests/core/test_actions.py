"""Operator actions in the core, to the millisecond: retry, run now, cancel, pause and resume,
bulk retry, cancel and purge by filter, and the audit list they leave, each a logged record
that a rebuilt core folds the same way."""

from __future__ import annotations

from typing import Any

import pytest

from cloudqueue.engine.core.actions import (
    EMBEDDED,
    MAX_AUDIT,
    MAX_BULK,
    Actor,
    BulkAction,
    BulkResult,
    DispatchState,
    bulk_filter,
    check_via,
)
from cloudqueue.engine.core.commands import Append, Command, Invoke, TaskFinished
from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.core.errors import (
    InvalidTransitionError,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.events import (
    ActionTaken,
    DispatchPaused,
    TaskCancelled,
    TaskPurged,
    TaskRetried,
    TaskRunNow,
)
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import ABSENT, iso_ms
from cloudqueue.engine.runtime.rebuild import rebuild
from tests.core.test_engine_core import T0, Harness, of

OP = Actor("operator", "cli")


def logged(commands: list[Command]) -> list[Any]:
    return [event for append in of(Append, commands) for event in append.events]


def failed_task(h: Harness, uid: str = "a", **options: Any) -> Invoke:
    """``uid`` run once and failed for good at T0 + 5; returns its run."""
    h.submit(uid, params={"n": 1}, attempts=0, keep_result=60_000, **options)
    (run,) = h.tick(T0)
    h.fail(run, T0 + 5)
    assert h.state(uid, T0 + 5) is TaskState.FAILED
    return run


def replayed(h: Harness) -> EngineCore:
    return rebuild(EngineCore(h.core.config, start_ms=T0), h.events)


# ---------------------------------------------------------------------------- retry


def test_a_failed_task_is_retried_with_fresh_runs_the_same_id_params_and_options() -> None:
    h = Harness()
    failed_task(h, timeout=2_000)
    assert h.core.next_deadline_ms() == T0 + 5 + 60_000  # its keepResult's end
    commands = h._keep(h.core.retry("a", T0 + 100, OP))
    assert logged(commands) == [ActionTaken(4, T0 + 100, "retry", "operator", "cli", "a", None, 1),
                                TaskRetried(5, T0 + 100, "a")]
    info = h.core.task_info("a", T0 + 100)
    assert (info.state, info.attempt, info.error, info.status_code, info.finished_ms,
            info.started_ms, info.expires_ms, info.result) == (
        TaskState.QUEUED, 0, None, None, None, None, None, ABSENT)
    assert h.core.next_deadline_ms() is None  # the keepResult timer is gone: it is ready
    (run,) = h.tick(T0 + 100)
    assert (run.unique_id, run.attempt, run.params, run.timeout_ms) == ("a", 1, {"n": 1}, 2_000)
    h.succeed(run, T0 + 200, "ok")
    done = h.core.task_info("a", T0 + 200)
    assert done.return_value == "ok"
    # the run history keeps the runs before the retry; the new ones count from attempt 1
    assert [(r.attempt, r.started_ms, r.outcome) for r in done.runs] == [
        (1, T0, "failed"), (1, T0 + 100, "success")]


def test_a_retried_task_keeps_its_place_in_line_and_ignores_its_delay() -> None:
    h = Harness()
    h.submit("first", delay=10_000, attempts=0)
    h.core.cancel("first", T0 + 1, OP)
    h.submit("second", T0 + 2)
    h._keep(h.core.retry("first", T0 + 3, OP))  # ready at once, though its delay runs to T0+10s
    assert [run.unique_id for run in h.tick(T0 + 3)] == ["first"]  # its priority: enqueue time


def test_a_cancelled_task_may_be_retried_a_succeeded_or_unfinished_one_may_not() -> None:
    h = Harness()
    h.submit("waiting", delay=10_000)
    h.submit("done")
    (run,) = h.tick(T0)
    h.succeed(run, T0 + 1)
    with pytest.raises(InvalidTransitionError) as success:
        h.core.retry("done", T0 + 2, OP)
    assert str(success.value) == ("Task 'done' is success: cannot retry it (it succeeded: its "
                                  "result stands; enqueue it anew to run it again)")
    assert success.value.body()["state"] == "success"
    with pytest.raises(InvalidTransitionError, match="is queued: cannot retry it"):
        h.core.retry("waiting", T0 + 2, OP)
    h.core.cancel("waiting", T0 + 3)
    h._keep(h.core.retry("waiting", T0 + 4, OP))
    assert h.state("waiting", T0 + 4) is TaskState.QUEUED
    with pytest.raises(UnknownTaskError):
        h.core.retry("nope", T0, OP)


def test_a_task_past_its_keep_result_cannot_be_retried() -> None:
    h = Harness()
    failed_task(h)
    with pytest.raises(UnknownTaskError):
        h.core.retry("a", T0 + 5 + 60_000, OP)


# ---------------------------------------------------------------------------- run now


def test_run_now_makes_a_delayed_task_ready_and_a_restart_does_not_bring_the_delay_back() -> None:
    h = Harness()
    h.submit("a", delay=60_000)
    assert h.tick(T0 + 10) == []
    assert logged(h._keep(h.core.run_now("a", T0 + 10, OP)))[1] == TaskRunNow(3, T0 + 10, "a")
    again = replayed(h)  # what a restart makes of the log
    found = again.task("a")
    assert found is not None and found.run_now_ms == T0 + 10
    assert [c.unique_id for c in of(Invoke, again.tick(T0 + 11))] == ["a"]
    assert [run.unique_id for run in h.tick(T0 + 11)] == ["a"]


def test_run_now_ends_a_retrys_wait() -> None:
    h = Harness()
    h.submit("a", attempts=1, backoff=30_000)
    (run,) = h.tick(T0)
    h.fail(run, T0 + 5)
    assert h.core.task_info("a", T0 + 5).retry_at_ms == T0 + 30_005
    h._keep(h.core.run_now("a", T0 + 6, OP))
    info = h.core.task_info("a", T0 + 6)
    assert (info.state, info.retry_at_ms, info.attempt) == (TaskState.QUEUED, None, 1)
    (again,) = h.tick(T0 + 6)
    assert again.attempt == 2


def test_run_now_is_refused_for_a_task_not_waiting_for_time() -> None:
    h = Harness()
    h.submit("running")
    h.submit("ready")
    h.submit("due", delay=100)
    h.tick(T0)
    for uid, now, message in [
            ("ready", T0, "Task 'ready' is queued: cannot run it now (it waits only for a free "
                          "slot)"),
            ("due", T0 + 100, "Task 'due' is queued: cannot run it now (it waits only for a free "
                              "slot)"),  # its delay has passed: it waits for a slot
            ("running", T0, "Task 'running' is running: cannot run it now (it is not waiting "
                            "for a delay or a retry)")]:
        with pytest.raises(InvalidTransitionError) as refused:
            h.core.run_now(uid, now, OP)
        assert (str(refused.value), refused.value.trigger) == (message, "run_now")


# ---------------------------------------------------------------------------- pause and resume


def test_paused_dispatch_starts_nothing_but_takes_enqueues_and_lets_runs_finish() -> None:
    h = Harness(concurrency=2)
    h.submit("a")
    (run,) = h.tick(T0)
    assert logged(h._keep(h.core.set_paused(True, T0 + 1, OP))) == [
        ActionTaken(3, T0 + 1, "pause", "operator", "cli", None, None, 0),
        DispatchPaused(4, T0 + 1, True)]
    assert h.core.set_paused(True, T0 + 2, OP) == []  # already paused: nothing logged
    h.submit("b", T0 + 2)
    assert (h.tick(T0 + 3), h.core.can_start, h.core.has_ready) == ([], False, False)
    assert h.core.task_info("b", T0 + 3).to_wire()["appPaused"] is True
    h.succeed(run, T0 + 4, "done")  # the run in flight finishes
    assert "appPaused" not in h.info("a", T0 + 4)  # a finished task is not held back
    assert h.core.dispatch_state() == DispatchState(True, T0 + 1)
    assert DispatchState(True, T0 + 1).to_wire() == {"paused": True, "pausedAt": iso_ms(T0 + 1)}
    # the paused state is in the log and in what a snapshot keeps
    assert replayed(h).dispatch_state() == DispatchState(True, T0 + 1)
    restored = EngineCore(h.core.config, start_ms=T0)
    restored.restore_counters(h.core.counters())
    assert restored.tick(T0 + 5) == [] and restored.paused_ms == T0 + 1
    h._keep(h.core.set_paused(False, T0 + 6, EMBEDDED))
    assert [run.unique_id for run in h.tick(T0 + 6)] == ["b"]
    assert h.core.dispatch_state().to_wire() == {"paused": False}
    assert "paused_ms" not in h.core.counters()


def test_while_paused_timers_still_fire_retries_wake_and_runs_time_out() -> None:
    h = Harness()
    h.submit("a", attempts=1, backoff=1_000, timeout=500)
    (run,) = h.tick(T0)
    h.core.set_paused(True, T0 + 1, OP)
    h.tick(T0 + 500)  # the run times out at its deadline, paused or not
    assert h.core.task_info("a", T0 + 500).retry_at_ms == T0 + 1_500
    h.tick(T0 + 1_500)
    assert h.state("a", T0 + 1_500) is TaskState.QUEUED  # woken, waiting for dispatch
    h.core.set_paused(False, T0 + 2_000, OP)
    (again,) = h.tick(T0 + 2_000)
    assert again.attempt == 2


# ---------------------------------------------------------------------------- bulk


def bulk_harness() -> Harness:
    """Six finished tasks: f1..f3 failed (created T0, T0+10, T0+20), c1 cancelled (T0+30),
    s1 succeeded (T0+40) with function "g"; q1, q2 queued with a delay."""
    h = Harness(concurrency=10)
    for i, uid in enumerate(["f1", "f2", "f3"]):
        h.submit(uid, T0 + 10 * i, attempts=0, keep_result=60_000)
    h.submit("s1", T0 + 40, function="g", keep_result=60_000)
    runs = h.tick(T0 + 40)
    for run in runs:
        if run.unique_id == "s1":
            h.succeed(run, T0 + 50)
        else:
            h.fail(run, T0 + 50)
    h.submit("c1", T0 + 30, delay=1_000, keep_result=60_000)
    h.core.cancel("c1", T0 + 60)
    h.submit("q1", T0 + 70, delay=10_000)
    h.submit("q2", T0 + 80, function="g", delay=10_000)
    return h


def test_bulk_retry_takes_failed_and_cancelled_tasks_oldest_first_up_to_the_limit() -> None:
    h = bulk_harness()
    chosen = bulk_filter(BulkAction.RETRY)
    assert chosen.states == (TaskState.FAILED, TaskState.CANCELLED)
    dry = h.core.bulk(BulkAction.RETRY, chosen, T0 + 100, OP, dry_run=True)
    assert dry == ([], BulkResult(4, 4, True))
    commands, result = h.core.bulk(BulkAction.RETRY, chosen, T0 + 100, OP, limit=3)
    events = logged(h._keep(commands))
    assert result == BulkResult(3, 4, False)
    assert events[0] == ActionTaken(events[0].seq, T0 + 100, "retry", "operator", "cli", None,
                                    {"state": ["failed", "cancelled"]}, 3)
    assert [(type(e), e.unique_id) for e in events[1:]] == [
        (TaskRetried, "f1"), (TaskRetried, "f2"), (TaskRetried, "f3")]
    assert h.core.bulk(BulkAction.RETRY, chosen, T0 + 101, OP, dry_run=True)[1] == \
        BulkResult(1, 1, True)  # c1 is left for the next request


def test_bulk_filters_by_state_function_and_created_time() -> None:
    h = bulk_harness()
    count = {}
    for name, action, chosen in [
        ("failed", "retry", bulk_filter("retry", state="failed")),
        ("cancelled", "retry", bulk_filter("retry", state=["cancelled"])),
        ("from T0+10", "retry", bulk_filter("retry", created_from=T0 + 10)),
        ("to T0+10", "retry", bulk_filter("retry", created_to=T0 + 10)),
        ("between", "retry", bulk_filter("retry", created_from=T0 + 10, created_to=T0 + 30)),
        ("purge g", "purge", bulk_filter("purge", function="g")),
        ("purge all", "purge", bulk_filter("purge")),
        ("cancel g", "cancel", bulk_filter("cancel", function="g")),
        ("cancel all", "cancel", bulk_filter("cancel")),
    ]:
        count[name] = h.core.bulk(BulkAction(action), chosen, T0 + 100, OP,
                                  dry_run=True)[1].count
    assert count == {"failed": 3, "cancelled": 1, "from T0+10": 3, "to T0+10": 1, "between": 2,
                     "purge g": 1, "purge all": 5, "cancel g": 1, "cancel all": 2}


def test_bulk_cancel_and_purge_log_a_fact_per_task_after_the_action() -> None:
    h = bulk_harness()
    commands, result = h.core.bulk(BulkAction.CANCEL, bulk_filter("cancel"), T0 + 100, OP)
    events = logged(h._keep(commands))
    assert result == BulkResult(2, 2)
    assert [type(e) for e in events] == [ActionTaken, TaskCancelled, TaskCancelled]
    assert [c.task.unique_id for c in of(TaskFinished, commands)] == ["q1", "q2"]
    commands, result = h.core.bulk(BulkAction.PURGE, bulk_filter("purge", function="f"),
                                   T0 + 200, OP)
    events = logged(h._keep(commands))
    assert result == BulkResult(5, 5)
    assert [e.unique_id for e in events if isinstance(e, TaskPurged)] == [
        "f1", "f2", "f3", "c1", "q1"]
    assert sorted(t.unique_id for t in h.core.tasks()) == ["q2", "s1"]
    # nothing matches now: nothing is logged
    assert h.core.bulk(BulkAction.PURGE, bulk_filter("purge", function="f"), T0 + 300, OP) == (
        [], BulkResult(0, 0))
    again = replayed(h)
    assert sorted(t.unique_id for t in again.tasks()) == ["q2", "s1"]


@pytest.mark.parametrize(("action", "given", "field", "message"), [
    ("retry", {"state": "queued"}, "state",
     "retry applies to tasks that are failed, cancelled; state 'queued' is not one of them"),
    ("cancel", {"state": ["queued", "success"]}, "state",
     "cancel applies to tasks that are queued, retry_wait; state 'success' is not one of them"),
    ("purge", {"state": []}, "state", "state must be a state or a non-empty list of states, "
                                      "got an array"),
    ("purge", {"function": "bad/name"}, "function", None),
    ("purge", {"created_from": -1}, "createdFrom", None),
    ("purge", {"created_to": "yesterday"}, "createdTo", None),
])
def test_a_filter_is_checked(action: str, given: dict[str, Any], field: str,
                             message: str | None) -> None:
    with pytest.raises(ValidationError) as refused:
        bulk_filter(action, **given)
    assert refused.value.field == field
    if message is not None:
        assert str(refused.value) == message


def test_one_request_changes_at_most_max_bulk_tasks() -> None:
    h = Harness()
    delayed = TaskOptions(delay_ms=60_000)
    h.core.submit_many([(f"t{i}", "f", {}, delayed) for i in range(MAX_BULK + 2)], T0)
    commands, result = h.core.bulk(BulkAction.CANCEL, bulk_filter("cancel"), T0 + 1, OP,
                                   limit=MAX_BULK + 5)
    assert result == BulkResult(MAX_BULK, MAX_BULK + 2)
    assert len(logged(commands)) == MAX_BULK + 1


# ---------------------------------------------------------------------------- the audit list


def test_the_audit_list_keeps_the_newest_actions_and_survives_a_snapshot() -> None:
    h = Harness()
    h.submit("a", delay=60_000)
    h._keep(h.core.cancel("a", T0 + 1, Actor("master")))
    h._keep(h.core.retry("a", T0 + 2, OP))
    h._keep(h.core.set_paused(True, T0 + 3, EMBEDDED))
    entries = [e.to_wire() for e in h.core.audit(10)]
    assert entries == [
        {"seq": 6, "at": iso_ms(T0 + 3), "action": "pause", "by": "embedded", "count": 0},
        {"seq": 4, "at": iso_ms(T0 + 2), "action": "retry", "by": "operator", "via": "cli",
         "uniqueId": "a", "count": 1},
        {"seq": 2, "at": iso_ms(T0 + 1), "action": "cancel", "by": "master", "uniqueId": "a",
         "count": 1}]
    assert [e.seq for e in h.core.audit(2)] == [6, 4]
    assert replayed(h).audit(10) == h.core.audit(10)
    restored = EngineCore(h.core.config, start_ms=T0)
    restored.restore_counters(h.core.counters())
    assert restored.audit(10) == h.core.audit(10)
    for i in range(MAX_AUDIT):
        h.core.set_paused(i % 2 == 0, T0 + 10 + i, OP)
    assert len(h.core.audit(1_000)) == MAX_AUDIT
    assert h.core.audit(1)[0].at_ms == T0 + 10 + MAX_AUDIT - 1


def test_a_filter_is_shown_in_the_audit_list_with_its_times() -> None:
    h = bulk_harness()
    h.core.bulk(BulkAction.PURGE, bulk_filter("purge", state="failed", function="f",
                                              created_from=T0, created_to=T0 + 1_000),
                T0 + 100, OP)
    assert h.core.audit(1)[0].to_wire()["filter"] == {
        "state": ["failed"], "function": "f", "createdFrom": iso_ms(T0),
        "createdTo": iso_ms(T0 + 1_000)}


def test_a_cancel_without_an_actor_logs_no_action() -> None:
    h = Harness()
    h.submit("a", delay=1_000)
    assert [type(e) for e in logged(h.core.cancel("a", T0))] == [TaskCancelled]
    assert h.core.audit(10) == []


@pytest.mark.parametrize("via", ["", "a b", "é", "x" * 65, 5])
def test_what_a_caller_calls_itself_is_checked(via: Any) -> None:
    with pytest.raises(ValidationError):
        check_via(via)
    assert check_via("dashboard/1.2") == "dashboard/1.2" and check_via(None) is None


@pytest.mark.parametrize("state", [[{"a": 1}], [["failed"]], [None], 5, {"failed": True}])
def test_a_state_that_is_not_a_name_is_refused(state: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        bulk_filter("retry", state)
    assert refused.value.field == "state"
