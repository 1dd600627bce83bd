"""EngineCore with integer time: the LeanCloud task contract, to the millisecond."""

from __future__ import annotations

import zlib
from typing import Any, TypeVar

import pytest

from cloudqueue.engine.core.commands import Append, CancelRun, Command, Invoke, TaskFinished
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.errors import (
    DuplicateTaskError,
    InvalidTransitionError,
    UnknownTaskError,
)
from cloudqueue.engine.core.events import Event, FailureKind, RunFailed, RunRequeued, TaskPurged
from cloudqueue.engine.core.options import DeliveryMode, parse_options
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import iso_ms
from cloudqueue.engine.runtime.rebuild import rebuild

C = TypeVar("C")
T0 = 1_000_000


def of(kind: type[C], commands: list[Command]) -> list[C]:
    return [c for c in commands if isinstance(c, kind)]


class Harness:
    """The core plus the log of every event it emitted, as the runtime would keep them."""

    def __init__(self, concurrency: int = 1) -> None:
        self.core = EngineCore(CoreConfig(concurrency=concurrency), start_ms=T0)
        self.events: list[Event] = []

    def _keep(self, commands: list[Command]) -> list[Command]:
        for append in of(Append, commands):
            self.events.extend(append.events)
        return commands

    def submit(self, uid: str, now: int = T0, function: str = "f", params: Any = None,
               **options: Any) -> list[Command]:
        opts = parse_options(options, wire=False)
        return self._keep(self.core.submit(uid, function, params or {}, opts, now))

    def tick(self, now: int) -> list[Invoke]:
        return of(Invoke, self._keep(self.core.tick(now)))

    def tick_all(self, now: int) -> list[Command]:
        return self._keep(self.core.tick(now))

    def succeed(self, run: Invoke, now: int, result: Any = None) -> list[Command]:
        return self._keep(self.core.run_succeeded(run.unique_id, run.run_seq,
                                                  {"result": result}, now, 200))

    def fail(self, run: Invoke, now: int, error: str = "boom", code: int | None = 500,
             kind: FailureKind = FailureKind.ERROR) -> list[Command]:
        return self._keep(self.core.run_failed(run.unique_id, run.run_seq, error, now, kind,
                                               code))

    def info(self, uid: str, now: int) -> dict[str, Any]:
        return self.core.task_info(uid, now).to_wire()

    def state(self, uid: str, now: int) -> TaskState:
        return self.core.task_info(uid, now).state


# ---------------------------------------------------------------------------- running


def test_submitted_task_starts_at_the_next_tick_with_its_params() -> None:
    h = Harness()
    h.submit("a", params={"x": 1}, timeout=2_000)
    (run,) = h.tick(T0)
    assert (run.unique_id, run.attempt, run.function, run.params) == ("a", 1, "f", {"x": 1})
    assert (run.timeout_ms, run.deadline_ms) == (2_000, T0 + 2_000)
    assert h.info("a", T0)["status"] == "queued" and h.state("a", T0) is TaskState.RUNNING


def test_at_least_once_run_waits_only_for_its_submission_to_be_durable() -> None:
    h = Harness()
    (submitted,) = of(Append, h.submit("a"))[0].events
    (run,) = h.tick(T0)
    assert run.durable_seq == submitted.seq


def test_at_most_once_run_waits_for_its_start_record_to_be_durable() -> None:
    h = Harness()
    h.submit("a", delivery_mode=DeliveryMode.AT_MOST_ONCE)
    (run,) = h.tick(T0)
    assert run.durable_seq == run.run_seq


def test_success_is_final_with_result_status_code_and_finished_at() -> None:
    h = Harness()
    h.submit("a")
    (run,) = h.tick(T0)
    commands = h.succeed(run, T0 + 7, result={"ok": True})
    (finished,) = of(TaskFinished, commands)
    assert finished.info.state is TaskState.SUCCESS
    assert h.info("a", T0 + 7) == {
        "uniqueId": "a", "status": "success", "finishedAt": iso_ms(T0 + 7), "statusCode": 200,
        "result": {"result": {"ok": True}}, "state": "success", "function": "f", "attempt": 1,
        "maxRuns": 2, "createdAt": iso_ms(T0), "startedAt": iso_ms(T0),
        "expiresAt": iso_ms(T0 + 7 + 300_000),
        "runs": [{"attempt": 1, "slice": 0, "startedAt": iso_ms(T0),
                  "finishedAt": iso_ms(T0 + 7), "durationMs": 7, "outcome": "success",
                  "statusCode": 200}],
    }


# ---------------------------------------------------------------------------- retries


def test_failed_run_retries_at_failure_time_plus_backoff() -> None:
    h = Harness()
    h.submit("a", attempts=2, backoff=1_000)
    (run,) = h.tick(T0)
    h.fail(run, T0 + 10, error="boom (attempt 1)")
    assert h.info("a", T0 + 10) == {
        "uniqueId": "a", "status": "queued", "statusCode": 500, "error": "boom (attempt 1)",
        "retryAt": iso_ms(T0 + 1_010), "state": "retry_wait", "function": "f", "attempt": 1,
        "maxRuns": 3, "createdAt": iso_ms(T0), "startedAt": iso_ms(T0),
        "runs": [{"attempt": 1, "slice": 0, "startedAt": iso_ms(T0),
                  "finishedAt": iso_ms(T0 + 10), "durationMs": 10, "outcome": "failed",
                  "statusCode": 500, "error": "boom (attempt 1)"}],
    }
    assert h.core.next_deadline_ms() == T0 + 1_010
    assert h.tick(T0 + 1_009) == []
    (again,) = h.tick(T0 + 1_010)
    assert again.attempt == 2
    assert "retryAt" not in h.info("a", T0 + 1_010)


def test_exponential_backoff_doubles_to_its_cap_less_a_jitter_replay_repeats() -> None:
    h = Harness()
    h.submit("a", attempts=5, backoff=1_000, backoff_type="exponential", backoff_max=5_000)
    now, waits = T0, []
    for _ in range(5):
        (run,) = h.tick(now)
        h.fail(run, now + 10)
        retry_at = h.core.task_info("a", now + 10).retry_at_ms
        assert retry_at is not None
        waits.append(retry_at - (now + 10))
        assert h.info("a", now + 10)["retryAt"] == iso_ms(retry_at)  # shown as LeanCloud's
        assert h.tick(retry_at - 1) == []
        now = retry_at
    # run n waits d = min(5000, 1000 * 2**(n-1)) less floor(d * j / 2), j = crc32("a:n") / 2**32:
    # a function of the task and the run, so a replay or a restore gives the same retryAt
    caps = (1_000, 2_000, 4_000, 5_000, 5_000)
    assert waits == [d - d * zlib.crc32(f"a:{n}".encode()) // 2**33
                     for n, d in enumerate(caps, start=1)]
    assert all(d // 2 < w <= d for w, d in zip(waits, caps, strict=True))
    assert len(set(waits)) == 5
    replayed = rebuild(EngineCore(CoreConfig(concurrency=1), start_ms=T0), h.events)
    assert replayed.task_info("a", now) == h.core.task_info("a", now)


def test_attempts_plus_one_runs_then_failed() -> None:
    h = Harness()
    h.submit("a", attempts=2, backoff=100)
    now = T0
    for attempt in (1, 2, 3):
        (run,) = h.tick(now)
        assert run.attempt == attempt
        commands = h.fail(run, now + 1, error=f"boom {attempt}")
        now += 101
    assert of(TaskFinished, commands)[0].info.state is TaskState.FAILED
    info = h.info("a", now)
    assert (info["status"], info["error"], info["attempt"]) == ("failed", "boom 3", 3)
    assert info["finishedAt"] == iso_ms(now - 100) and "retryAt" not in info
    assert h.tick(now + 10_000) == []


def test_zero_attempts_means_one_run_and_no_retry() -> None:
    h = Harness()
    h.submit("a", attempts=0)
    (run,) = h.tick(T0)
    h.fail(run, T0 + 1)
    assert h.info("a", T0 + 1)["status"] == "failed"


def test_success_after_a_failure_clears_error_and_retry_at() -> None:
    h = Harness()
    h.submit("a", attempts=1, backoff=50)
    (run,) = h.tick(T0)
    h.fail(run, T0)
    (run,) = h.tick(T0 + 50)
    h.succeed(run, T0 + 60, result=1)
    info = h.info("a", T0 + 60)
    assert info["status"] == "success" and "error" not in info and "retryAt" not in info
    assert info["statusCode"] == 200


def test_backoff_zero_retries_at_the_same_tick_time() -> None:
    h = Harness()
    h.submit("a", attempts=1, backoff=0)
    (run,) = h.tick(T0)
    h.fail(run, T0 + 5)
    (again,) = h.tick(T0 + 5)
    assert again.attempt == 2


# ---------------------------------------------------------------------------- delay, timeout


def test_delayed_task_starts_exactly_at_enqueue_plus_delay() -> None:
    h = Harness()
    h.submit("a", delay=3_000)
    assert h.core.next_deadline_ms() == T0 + 3_000
    assert h.tick(T0 + 2_999) == []
    assert h.info("a", T0 + 2_999)["status"] == "queued"
    (run,) = h.tick(T0 + 3_000)
    assert run.unique_id == "a"


def test_timeout_under_at_least_once_is_a_failed_run_that_retries() -> None:
    h = Harness()
    h.submit("a", timeout=500, attempts=1, backoff=1_000)
    (run,) = h.tick(T0)
    assert h.tick_all(T0 + 499) == []
    commands = h.tick_all(T0 + 500)
    assert of(CancelRun, commands) == [CancelRun("a", run.run_seq)]
    info = h.info("a", T0 + 500)
    assert info["error"] == "cloud function timed out after 500 ms"
    assert info["retryAt"] == iso_ms(T0 + 1_500) and "statusCode" not in info
    (again,) = h.tick(T0 + 1_500)
    assert again.attempt == 2


def test_timeout_under_at_most_once_fails_at_once_whatever_attempts_remain() -> None:
    h = Harness()
    h.submit("a", timeout=500, attempts=5, delivery_mode=DeliveryMode.AT_MOST_ONCE)
    h.tick(T0)
    commands = h.tick_all(T0 + 500)
    assert of(TaskFinished, commands)[0].info.state is TaskState.FAILED
    info = h.info("a", T0 + 500)
    assert (info["status"], info["error"]) == ("failed", "cloud function timed out after 500 ms")
    assert h.tick(T0 + 100_000) == []


def test_error_answer_is_retried_under_at_most_once() -> None:
    h = Harness()
    h.submit("a", attempts=1, backoff=10, delivery_mode=DeliveryMode.AT_MOST_ONCE)
    (run,) = h.tick(T0)
    h.fail(run, T0 + 1)
    (again,) = h.tick(T0 + 11)
    assert again.attempt == 2


def test_an_answer_after_the_timeout_is_ignored() -> None:
    h = Harness()
    h.submit("a", timeout=100, attempts=1, backoff=1_000)
    (run,) = h.tick(T0)
    h.tick_all(T0 + 100)
    assert h.succeed(run, T0 + 150) == []
    assert h.state("a", T0 + 150) is TaskState.RETRY_WAIT


@pytest.mark.parametrize("outcome", ["succeed", "fail", "continue"])
def test_an_answer_handled_past_the_deadline_before_the_timer_is_a_timeout(outcome: str) -> None:
    """After a stall the answer may be handled before the timeout timer that is already due:
    the outcome is judged at the deadline all the same (the run timed out; the answer is late
    and changes nothing), whichever the driver reaches first."""
    h = Harness()
    h.submit("a", timeout=300, attempts=0, delivery_mode=DeliveryMode.AT_MOST_ONCE)
    (run,) = h.tick(T0)
    now = T0 + 1_500  # no tick since the start: the timer is due but has not fired
    if outcome == "succeed":
        commands = h.succeed(run, now, "late")
    elif outcome == "fail":
        commands = h.fail(run, now)
    else:
        commands = h._keep(h.core.run_continued("a", run.run_seq, {"at": 1}, now))
    info = h.info("a", now)
    assert (info["status"], info["error"]) == ("failed", "cloud function timed out after 300 ms")
    assert "result" not in info
    assert of(TaskFinished, commands)[0].info.state is TaskState.FAILED
    failed = [e for e in h.events if isinstance(e, RunFailed)]
    assert [(e.t_ms, e.kind) for e in failed] == [(T0 + 300, FailureKind.TIMEOUT)]


def test_an_answer_handled_just_before_the_deadline_counts() -> None:
    h = Harness()
    h.submit("a", timeout=300, attempts=0)
    (run,) = h.tick(T0)
    h.succeed(run, T0 + 299, "in time")
    assert h.info("a", T0 + 299)["result"] == {"result": "in time"}


# ---------------------------------------------------------------------------- priority


def test_priorities_under_congestion_run_lowest_first() -> None:
    h = Harness(concurrency=1)
    h.submit("blocker", priority=0)
    (blocker,) = h.tick(T0)
    for uid, priority in [("p3", 3), ("p1", 1), ("p2", 2)]:
        h.submit(uid, T0 + 1, priority=priority)
    assert h.tick(T0 + 1) == []
    order = []
    run = blocker
    for now in range(T0 + 2, T0 + 5):
        h.succeed(run, now)
        (run,) = h.tick(now)
        order.append(run.unique_id)
    assert order == ["p1", "p2", "p3"]


def test_default_priorities_run_in_enqueue_order() -> None:
    h = Harness(concurrency=1)
    for i, uid in enumerate(["a", "b", "c", "d"]):
        h.submit(uid, T0 + i)
    order = []
    now = T0 + 10
    for _ in range(4):
        (run,) = h.tick(now)
        order.append(run.unique_id)
        h.succeed(run, now)
        now += 1
    assert order == ["a", "b", "c", "d"]


def test_equal_priorities_break_ties_by_enqueue_order() -> None:
    h = Harness(concurrency=1)
    for uid in ["x", "y", "z"]:
        h.submit(uid, T0, priority=7)
    runs = []
    for now in range(T0, T0 + 3):
        (run,) = h.tick(now)
        runs.append(run.unique_id)
        h.succeed(run, now)
    assert runs == ["x", "y", "z"]


def test_concurrency_limits_runs_in_flight() -> None:
    h = Harness(concurrency=2)
    for uid in "abcde":
        h.submit(uid)
    first = h.tick(T0)
    assert [r.unique_id for r in first] == ["a", "b"]
    assert h.tick(T0 + 1) == []
    h.succeed(first[0], T0 + 2)
    assert [r.unique_id for r in h.tick(T0 + 2)] == ["c"]


def test_a_run_cap_below_concurrency_holds_runs_back_until_lifted() -> None:
    h = Harness(concurrency=4)
    for uid in "abcdef":
        h.submit(uid)
    h.core.run_cap = 2  # the runtime saw the loop lag
    first = h.tick(T0)
    assert [r.unique_id for r in first] == ["a", "b"]
    h.succeed(first[0], T0 + 1)
    assert [r.unique_id for r in h.tick(T0 + 1)] == ["c"]  # one out, one in: still 2
    h.core.run_cap = 10  # above concurrency: concurrency rules
    assert [r.unique_id for r in h.tick(T0 + 2)] == ["d", "e"]
    h.core.run_cap = None
    assert h.tick(T0 + 3) == []  # 4 in flight


def test_can_start_means_a_ready_task_and_a_free_slot() -> None:
    h = Harness(concurrency=2)
    assert not h.core.can_start
    for uid in "abc":
        h.submit(uid)
    assert h.core.can_start
    first = h.tick(T0)
    assert len(first) == 2 and h.core.has_ready and not h.core.can_start  # c waits, slots full
    h.core.run_cap = 1
    h.succeed(first[0], T0 + 1)
    assert not h.core.can_start  # one slot free, but the cap holds it
    h.core.run_cap = None
    assert h.core.can_start


def test_woken_retry_competes_by_its_original_priority() -> None:
    h = Harness(concurrency=1)
    h.submit("retry-me", priority=1, attempts=1, backoff=100)
    (run,) = h.tick(T0)
    h.fail(run, T0)
    h.submit("later", T0 + 1, priority=5)
    (run,) = h.tick(T0 + 1)
    assert run.unique_id == "later"
    h.submit("mid", T0 + 2, priority=3)
    h.succeed(run, T0 + 200)
    assert [r.unique_id for r in h.tick(T0 + 200)] == ["retry-me"]


# ---------------------------------------------------------------------------- dedup, keepResult


@pytest.mark.parametrize("stage", ["queued", "running", "retry_wait", "success"])
def test_held_unique_id_is_refused_naming_the_existing_status(stage: str) -> None:
    h = Harness()
    h.submit("dup", attempts=1, backoff=1_000, keep_result=5_000)
    if stage != "queued":
        (run,) = h.tick(T0)
        if stage == "retry_wait":
            h.fail(run, T0)
        elif stage == "success":
            h.succeed(run, T0)
    with pytest.raises(DuplicateTaskError) as info:
        h.submit("dup", T0 + 1)
    assert info.value.state == stage and info.value.http_status == 409
    assert f"(status {'success' if stage == 'success' else 'queued'}, state {stage})" in str(
        info.value)


def test_keep_result_expiry_purges_and_frees_the_unique_id() -> None:
    h = Harness()
    h.submit("k", keep_result=1_000)
    (run,) = h.tick(T0)
    h.succeed(run, T0 + 5)
    assert h.info("k", T0 + 1_004)["status"] == "success"
    with pytest.raises(UnknownTaskError, match="Task 'k' not found"):
        h.core.task_info("k", T0 + 1_005)
    assert of(Append, [*h.tick_all(T0 + 1_005)])[0].events[0] == TaskPurged(
        h.core.last_seq, T0 + 1_005, "k")
    h.submit("k", T0 + 1_006)
    assert h.info("k", T0 + 1_006)["state"] == "queued"


def test_expired_but_unpurged_id_can_be_enqueued_again() -> None:
    h = Harness()
    h.submit("k", keep_result=0)
    (run,) = h.tick(T0)
    h.succeed(run, T0)
    h.submit("k", T0)
    assert h.info("k", T0)["state"] == "queued"


def test_keep_result_zero_still_hands_waiters_the_final_info() -> None:
    h = Harness()
    h.submit("z", keep_result=0, timeout=10, attempts=0)
    h.tick(T0)
    commands = h.tick_all(T0 + 10)
    (finished,) = of(TaskFinished, commands)
    assert finished.info.state is TaskState.FAILED
    with pytest.raises(UnknownTaskError):
        h.core.task_info("z", T0 + 10)


def test_unknown_id_is_unknown() -> None:
    with pytest.raises(UnknownTaskError) as info:
        Harness().core.task_info("nope", T0)
    assert info.value.http_status == 404 and info.value.body() == {
        "code": 404, "error": "Task 'nope' not found"}


# ---------------------------------------------------------------------------- cancel


def test_cancelled_queued_task_never_runs_and_reads_failed() -> None:
    h = Harness()
    h.submit("c", delay=100)
    (finished,) = of(TaskFinished, h.core.cancel("c", T0 + 1))
    assert finished.info.state is TaskState.CANCELLED
    assert h.tick(T0 + 1_000) == []
    info = h.info("c", T0 + 1)
    assert (info["status"], info["state"], info["error"]) == (
        "failed", "cancelled", "the task was cancelled")


def test_task_waiting_for_retry_can_be_cancelled() -> None:
    h = Harness()
    h.submit("c", attempts=1, backoff=100)
    (run,) = h.tick(T0)
    h.fail(run, T0)
    h.core.cancel("c", T0 + 1)
    assert h.tick(T0 + 100) == [] and "retryAt" not in h.info("c", T0 + 100)


def test_running_or_finished_task_cannot_be_cancelled() -> None:
    h = Harness()
    h.submit("c")
    (run,) = h.tick(T0)
    with pytest.raises(InvalidTransitionError, match="is running: cannot cancel"):
        h.core.cancel("c", T0)
    h.succeed(run, T0)
    with pytest.raises(InvalidTransitionError, match="is success: cannot cancel"):
        h.core.cancel("c", T0)
    with pytest.raises(UnknownTaskError):
        h.core.cancel("other", T0)


# ---------------------------------------------------------------------------- host outage, restart


def test_requeued_run_charges_no_attempt_and_runs_again() -> None:
    h = Harness()
    h.submit("r", attempts=0)
    (run,) = h.tick(T0)
    h.core.run_requeued("r", run.run_seq, "connection refused", T0 + 1)
    assert h.info("r", T0 + 1)["attempt"] == 0
    (again,) = h.tick(T0 + 2)
    assert again.attempt == 1
    h.fail(again, T0 + 3)
    assert h.info("r", T0 + 3)["status"] == "failed"


def replayed(h: Harness, now: int) -> EngineCore:
    return rebuild(EngineCore(CoreConfig(concurrency=h.core.concurrency), start_ms=now), h.events)


def test_replay_rebuilds_the_same_task_info() -> None:
    h = Harness(concurrency=2)
    h.submit("ok")
    h.submit("retry", attempts=1, backoff=1_000)
    h.submit("later", delay=5_000)
    runs = h.tick(T0)
    h.succeed(runs[0], T0 + 1)
    h.fail(runs[1], T0 + 2)
    core = replayed(h, T0 + 3)
    for uid in ("ok", "retry", "later"):
        assert core.task_info(uid, T0 + 3) == h.core.task_info(uid, T0 + 3)
    assert core.last_seq == h.core.last_seq
    assert [r.unique_id for r in of(Invoke, core.tick(T0 + 1_002))] == ["retry"]


def test_recovery_runs_at_least_once_tasks_again_without_charging() -> None:
    h = Harness()
    h.submit("alo", attempts=0)
    h.tick(T0)
    core = replayed(h, T0 + 50)
    commands = core.recover(T0 + 50)
    (event,) = of(Append, commands)[0].events
    assert isinstance(event, RunRequeued) and event.reason == "the queue restarted during the run"
    (run,) = of(Invoke, core.tick(T0 + 50))
    assert (run.unique_id, run.attempt) == ("alo", 1)


def test_recovery_fails_at_most_once_tasks_saying_the_run_was_lost() -> None:
    h = Harness()
    h.submit("amo", attempts=3, delivery_mode=DeliveryMode.AT_MOST_ONCE)
    h.tick(T0)
    core = replayed(h, T0 + 50)
    commands = core.recover(T0 + 50)
    (event,) = of(Append, commands)[0].events
    assert isinstance(event, RunFailed) and event.kind is FailureKind.LOST
    info = core.task_info("amo", T0 + 50).to_wire()
    assert info["status"] == "failed"
    assert info["error"] == ("the run was lost when the queue restarted; atMostOnce tasks are "
                             "not run again")
    assert of(Invoke, core.tick(T0 + 50)) == []


def test_timers_resume_from_stored_absolute_times_after_replay() -> None:
    h = Harness()
    h.submit("d", delay=10_000)
    core = replayed(h, T0 + 4_000)
    assert core.next_deadline_ms() == T0 + 10_000
    assert of(Invoke, core.tick(T0 + 9_999)) == []
    assert len(of(Invoke, core.tick(T0 + 10_000))) == 1


def test_replay_of_a_timed_out_then_restarted_run_does_not_time_out_the_new_run() -> None:
    h = Harness()
    h.submit("t", timeout=100, attempts=1, backoff=0)
    h.tick(T0)
    (second,) = of(Invoke, h.tick_all(T0 + 100))  # timed out, and with backoff 0 started again
    assert second.attempt == 2
    core = replayed(h, T0 + 150)
    assert of(CancelRun, core.tick(T0 + 150)) == []
    assert core.task_info("t", T0 + 150).state is TaskState.RUNNING
    assert of(CancelRun, core.tick(T0 + 200)) == [CancelRun("t", second.run_seq)]


def test_timeout_noticed_late_still_counts_retry_from_the_deadline() -> None:
    h = Harness()
    h.submit("late", timeout=100, attempts=1, backoff=50)
    h.tick(T0)
    assert h.tick(T0 + 130) == []  # the driver noticed 30 ms late
    assert h.info("late", T0 + 130)["retryAt"] == iso_ms(T0 + 150)
    assert [r.attempt for r in h.tick(T0 + 150)] == [2]


# ---------------------------------------------------------------------- a function's own limit


def started(invokes: list[Invoke]) -> list[str]:
    return [run.unique_id for run in invokes]


def test_a_function_at_its_own_limit_holds_back_only_its_tasks() -> None:
    h = Harness(concurrency=3)
    h.core.set_function_limit("mail", 1)
    for uid, function in (("m1", "mail"), ("m2", "mail"), ("g1", "f"), ("m3", "mail"),
                          ("g2", "f"), ("g3", "f")):
        h.submit(uid, function=function)
    first = h.tick(T0)
    assert started(first) == ["m1", "g1", "g2"]  # m2 waits for mail's one slot, not the app's
    h.succeed(first[1], T0 + 1)  # g1 frees an app slot: the next task not held back starts
    assert started(h.tick(T0 + 1)) == ["g3"]
    h.succeed(first[0], T0 + 2)  # m1 frees mail's slot: m2 (before m3) starts
    assert started(h.tick(T0 + 2)) == ["m2"]
    assert h.core.ready_count == 1 and not h.core.can_start


def test_tasks_start_by_priority_across_limited_and_other_functions() -> None:
    h = Harness(concurrency=1)
    h.core.set_function_limit("mail", 2)
    h.submit("late", function="f", priority=9)
    h.submit("urgent-mail", function="mail", priority=1)
    h.submit("mail", function="mail", priority=5)
    order = []
    for now in range(T0, T0 + 3):
        (run,) = h.tick(now)
        order.append(run.unique_id)
        h.succeed(run, now)
    assert order == ["urgent-mail", "mail", "late"]


def test_a_limit_set_changed_or_lifted_moves_the_waiting_tasks() -> None:
    h = Harness(concurrency=4)
    for i in range(4):
        h.submit(f"m{i}", function="mail")
    h.core.set_function_limit("mail", 1)
    assert started(h.tick(T0)) == ["m0"]
    h.core.set_function_limit("mail", 2)  # m0 still counts against the new limit
    assert started(h.tick(T0 + 1)) == ["m1"]
    h.core.set_function_limit("mail", None)
    assert started(h.tick(T0 + 2)) == ["m2", "m3"]
    with pytest.raises(ValueError, match="whole number >= 1"):
        h.core.set_function_limit("mail", 0)


def test_a_limited_functions_tasks_replay_and_restore_to_the_same_next_starts() -> None:
    h = Harness(concurrency=3)
    h.core.set_function_limit("mail", 1)
    for uid, function in (("m1", "mail"), ("m2", "mail"), ("g1", "f"), ("d1", "mail")):
        h.submit(uid, function=function, **({"delay": 10} if uid == "d1" else {}))
    (m1, g1) = h.tick(T0)
    h.fail(m1, T0 + 1)  # retries after the default backoff; m2 may start
    h.succeed(g1, T0 + 1)
    live = started(h.tick(T0 + 20))
    assert live == ["m2"]
    folded = EngineCore(CoreConfig(concurrency=3), start_ms=T0)
    folded.set_function_limit("mail", 1)
    rebuild(folded, h.events)
    # m2 times out at T0+15,020 (freeing mail's slot); m1's retry wakes at T0+60,001 and takes
    # it before d1, which waited since its delay ended: on both cores alike
    assert started(of(Invoke, folded.tick(T0 + 14_000))) == started(h.tick(T0 + 14_000)) == []
    after = T0 + 61_001
    assert started(of(Invoke, folded.tick(after))) == started(h.tick(after)) == ["m1"]
    assert folded.ready_count == h.core.ready_count == 1
