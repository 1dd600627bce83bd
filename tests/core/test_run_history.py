"""A task's run history (``runs`` in task info): exact for each way a run ends, bounded, the same
from the live core, a replay of its log and a restore from a snapshot; and what the log and the
snapshot keep of it."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from cloudqueue.engine.core.batch_codec import decode_log_payload, encode_batch
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.events import (
    Event,
    FailureKind,
    RunFailed,
    RunRequeued,
    RunStarted,
    TaskSubmitted,
)
from cloudqueue.engine.core.framing import scan
from cloudqueue.engine.core.history import (
    KEPT_RUNS,
    MAX_TRACEBACK_CHARS,
    RunOutcome,
    RunRecord,
    storable_traceback,
)
from cloudqueue.engine.core.options import DeliveryMode, TaskOptions
from cloudqueue.engine.core.task import iso_ms
from cloudqueue.engine.core.task_rows import ROW_VERSION, task_from_row, task_to_row
from cloudqueue.engine.runtime.rebuild import rebuild
from tests.core.test_engine_core import Harness, replayed
from tests.core.test_replay import restored

T0 = 1_000_000
EMPTY: tuple[()] = ()  # CPython's one empty tuple


def runs(h: Harness | EngineCore, uid: str = "a", now: int = T0) -> list[dict[str, Any]]:
    core = h.core if isinstance(h, Harness) else h
    wire: list[dict[str, Any]] = core.task_info(uid, now).to_wire().get("runs", [])
    return wire


def ran(attempt: int, started: int, finished: int | None, outcome: str | None,
        slice_: int = 0, **extra: Any) -> dict[str, Any]:
    """One entry of ``runs`` on the wire."""
    entry: dict[str, Any] = {"attempt": attempt, "slice": slice_, "startedAt": iso_ms(started)}
    if finished is not None:
        entry |= {"finishedAt": iso_ms(finished), "durationMs": finished - started}
    if outcome is not None:
        entry["outcome"] = outcome
    return entry | extra


def test_a_task_that_never_ran_has_no_runs_and_shares_the_empty_tuple() -> None:
    h = Harness()
    h.submit("a", delay=60_000)
    task = h.core.task("a")
    assert task is not None and task.runs is EMPTY
    assert "runs" not in h.info("a", T0)
    restored_task = task_from_row(msgpack.unpackb(msgpack.packb(task_to_row(task))))
    assert restored_task.runs is EMPTY


def test_a_success_and_the_run_in_flight_before_it() -> None:
    h = Harness()
    h.submit("a")
    (run,) = h.tick(T0 + 5)
    assert runs(h, now=T0 + 5) == [ran(1, T0 + 5, None, None)]  # in flight: no end yet
    h.succeed(run, T0 + 25)
    assert runs(h, now=T0 + 25) == [ran(1, T0 + 5, T0 + 25, "success", statusCode=200)]


def test_a_retry_then_a_success() -> None:
    h = Harness()
    h.submit("a", attempts=2, backoff=1_000)
    (run,) = h.tick(T0)
    h.fail(run, T0 + 10, error="boom", code=503)
    assert runs(h, now=T0 + 10) == [
        ran(1, T0, T0 + 10, "failed", statusCode=503, error="boom")]
    (again,) = h.tick(T0 + 1_010)
    assert runs(h, now=T0 + 1_010) == [
        ran(1, T0, T0 + 10, "failed", statusCode=503, error="boom"),
        ran(2, T0 + 1_010, None, None)]
    h.succeed(again, T0 + 1_030)
    assert runs(h, now=T0 + 1_030) == [
        ran(1, T0, T0 + 10, "failed", statusCode=503, error="boom"),
        ran(2, T0 + 1_010, T0 + 1_030, "success", statusCode=200)]


def test_a_timeout_is_its_own_outcome_ending_at_the_deadline() -> None:
    h = Harness()
    h.submit("a", timeout=300, attempts=0)
    h.tick(T0)
    h.tick_all(T0 + 1_000)  # the driver noticed late: the run ended at its deadline
    assert runs(h, now=T0 + 1_000) == [ran(1, T0, T0 + 300, "timeout",
                                           error="cloud function timed out after 300 ms")]
    (failed,) = [e for e in h.events if isinstance(e, RunFailed)]
    assert failed.kind is FailureKind.TIMEOUT


def test_a_timeout_retries_under_at_least_once_and_is_final_under_at_most_once() -> None:
    for mode, final in ((DeliveryMode.AT_LEAST_ONCE, False), (DeliveryMode.AT_MOST_ONCE, True)):
        h = Harness()
        h.submit("a", timeout=300, attempts=2, delivery_mode=mode)
        h.tick(T0)
        h.tick_all(T0 + 300)
        assert h.core.task_info("a", T0 + 300).state.is_final is final


def test_a_host_that_could_not_be_reached_then_a_success() -> None:
    h = Harness()
    h.submit("a")
    (run,) = h.tick(T0)
    h._keep(h.core.run_requeued("a", run.run_seq, "could not reach the function host: refused",
                                T0 + 2))
    (again,) = h.tick(T0 + 2)
    assert again.attempt == 1  # no attempt spent
    h.succeed(again, T0 + 9)
    assert runs(h, now=T0 + 9) == [
        ran(1, T0, T0 + 2, "unavailable", error="could not reach the function host: refused"),
        ran(1, T0 + 2, T0 + 9, "success", statusCode=200)]


@pytest.mark.parametrize("mode", list(DeliveryMode))
def test_a_run_lost_in_a_restart(mode: DeliveryMode) -> None:
    h = Harness()
    h.submit("a", attempts=1, delivery_mode=mode)
    h.tick(T0)
    core = replayed(h, T0 + 50)
    core.recover(T0 + 50)
    if mode is DeliveryMode.AT_LEAST_ONCE:
        assert runs(core, now=T0 + 50) == [
            ran(1, T0, T0 + 50, "lost", error="the queue restarted during the run")]
        core.tick(T0 + 50)  # runs again as the same attempt
        assert runs(core, now=T0 + 50)[-1] == ran(1, T0 + 50, None, None)
    else:
        assert runs(core, now=T0 + 50) == [ran(
            1, T0, T0 + 50, "lost",
            error="the run was lost when the queue restarted; atMostOnce tasks are not run "
                  "again")]


def test_continued_slices_then_a_success() -> None:
    h = Harness()
    h.submit("a")
    for n in range(2):
        (run,) = h.tick(T0 + 10 * n)
        h._keep(h.core.run_continued("a", run.run_seq, {"step": n + 1}, T0 + 10 * n + 4))
    (last,) = h.tick(T0 + 20)
    h.succeed(last, T0 + 27)
    assert runs(h, now=T0 + 27) == [
        ran(1, T0, T0 + 4, "continued", 0),
        ran(1, T0 + 10, T0 + 14, "continued", 1),
        ran(1, T0 + 20, T0 + 27, "success", 2, statusCode=200)]


def test_a_failed_slice_is_retried_as_the_next_attempt_from_the_same_slice() -> None:
    h = Harness()
    h.submit("a", attempts=1, backoff=0)
    (run,) = h.tick(T0)
    h._keep(h.core.run_continued("a", run.run_seq, {"step": 1}, T0 + 1))
    (second,) = h.tick(T0 + 1)
    h.fail(second, T0 + 2, error="boom", code=None)
    (third,) = h.tick(T0 + 2)
    assert (third.attempt, third.slice) == (2, 1)
    assert [(r["attempt"], r["slice"], r.get("outcome")) for r in runs(h, now=T0 + 2)] == [
        (1, 0, "continued"), (1, 1, "failed"), (2, 1, None)]


def test_only_the_last_twenty_runs_are_kept_the_run_in_flight_among_them() -> None:
    h = Harness()
    h.submit("a")
    for n in range(KEPT_RUNS + 5):
        (run,) = h.tick(T0 + n)
        h._keep(h.core.run_continued("a", run.run_seq, {"step": n}, T0 + n))
    kept = runs(h, now=T0 + 30)
    assert len(kept) == KEPT_RUNS == 20
    assert [r["slice"] for r in kept] == list(range(5, 25))
    h.tick(T0 + 30)  # one more in flight: shown last, the oldest kept one left out
    shown = runs(h, now=T0 + 30)
    assert len(shown) == 20 and [r["slice"] for r in shown] == list(range(6, 26))
    assert "outcome" not in shown[-1]


def test_only_the_latest_failed_run_keeps_its_traceback() -> None:
    h = Harness()
    h.submit("a", attempts=3, backoff=0)
    kept = []
    for n, trace in enumerate(["Traceback 1\n", None, "Traceback 3\n"]):
        (run,) = h.tick(T0 + n)
        h._keep(h.core.run_failed("a", run.run_seq, f"boom {n}", T0 + n, traceback=trace))
        kept.append([r.traceback for r in h.core.task_info("a", T0 + n).runs])
    assert kept == [["Traceback 1\n"], ["Traceback 1\n", None], [None, None, "Traceback 3\n"]]
    (run,) = h.tick(T0 + 3)
    h.succeed(run, T0 + 4)
    assert [r.get("traceback") for r in runs(h, now=T0 + 4)] == [
        None, None, "Traceback 3\n", None]


def test_a_traceback_over_the_cap_keeps_its_innermost_frames() -> None:
    frames = "".join(f'  File "deep.py", line {n}, in level_{n}\n    call()\n'
                     for n in range(400))
    trace = f"Traceback (most recent call last):\n{frames}KeyError: 'missing thing'\n"
    assert len(trace) > MAX_TRACEBACK_CHARS
    kept = storable_traceback(trace)
    assert len(kept) <= MAX_TRACEBACK_CHARS
    assert kept.startswith("Traceback (most recent call last):\n  ... (")
    assert "characters of outer frames left out)\n" in kept
    assert kept.endswith("in level_399\n    call()\nKeyError: 'missing thing'\n")
    assert "level_0\n" not in kept
    h = Harness()
    h.submit("a", attempts=0)
    (run,) = h.tick(T0)
    h._keep(h.core.run_failed("a", run.run_seq, "KeyError: 'missing thing'", T0 + 1,
                              traceback=trace))
    (failed,) = [e for e in h.events if isinstance(e, RunFailed)]
    assert failed.traceback == kept


def test_replay_and_restore_give_the_same_history() -> None:
    h = Harness(concurrency=3)
    h.submit("ok", attempts=2, backoff=0)
    h.submit("slices")
    h.submit("away", timeout=100, attempts=1, backoff=0)
    first = {r.unique_id: r for r in h.tick(T0)}
    h.fail(first["ok"], T0 + 1, error="boom", code=500)
    h._keep(h.core.run_failed("ok", first["ok"].run_seq, "late", T0 + 2))  # not current
    h._keep(h.core.run_continued("slices", first["slices"].run_seq, {"at": 1}, T0 + 3))
    h._keep(h.core.run_requeued("away", first["away"].run_seq, "unreachable", T0 + 4))
    h.tick(T0 + 5)
    h.tick_all(T0 + 200)  # "away" times out
    live = {uid: h.core.task_info(uid, T0 + 200) for uid in ("ok", "slices", "away")}
    assert [r.outcome for r in live["away"].runs] == ["unavailable", "timeout", None]
    events = h.events
    config = CoreConfig(concurrency=3)
    for other in (replayed(h, T0 + 200), restored(config, T0, events, len(events)),
                  restored(config, T0, events, len(events) // 2)):
        assert {uid: other.task_info(uid, T0 + 200) for uid in live} == live


def test_a_log_written_before_timeouts_had_a_kind_reads_them_as_timeouts() -> None:
    options = TaskOptions(timeout_ms=300)
    events: list[Event] = [
        TaskSubmitted(1, T0, "a", "f", {}, options, T0),
        RunStarted(2, T0, "a", 1),
        RunFailed(3, T0 + 300, "a", 2, "cloud function timed out after 300 ms",
                  FailureKind.UNKNOWN),
        RunStarted(4, T0 + 60_300, "a", 2),
        RunFailed(5, T0 + 60_310, "a", 4, "cloud function timed out after 300 ms (no)",
                  FailureKind.UNKNOWN)]
    core = rebuild(EngineCore(start_ms=T0), events)
    assert [r.outcome for r in core.task_info("a", T0 + 60_310).runs] == [
        RunOutcome.TIMEOUT, RunOutcome.FAILED]


def test_a_requeue_names_a_restart_or_an_unreachable_host() -> None:
    options = TaskOptions()
    core = rebuild(EngineCore(start_ms=T0), [
        TaskSubmitted(1, T0, "a", "f", {}, options, T0), RunStarted(2, T0, "a", 1),
        RunRequeued(3, T0 + 1, "a", 2, "the queue restarted during the run"),
        RunStarted(4, T0 + 2, "a", 1),
        RunRequeued(5, T0 + 3, "a", 4, "could not reach the function host: refused")])
    assert [r.outcome for r in core.task_info("a", T0 + 3).runs] == ["lost", "unavailable"]


# ---------------------------------------------------------------------------- on disk


def record_of(event: Event) -> Any:
    (payload,) = scan(encode_batch([event], 0, 0)).payloads
    return msgpack.unpackb(payload)[2][0]


def event_of(record: Any) -> Event:
    (event,) = decode_log_payload(msgpack.packb([3, 0, [record], 0]))
    return event


def test_a_failed_run_without_a_traceback_is_written_as_before_it_existed() -> None:
    plain = RunFailed(7, T0, "b", 4, "boom", FailureKind.ERROR, 500)
    assert record_of(plain) == [3, 7, T0, "b", 4, "boom", "error", 500]
    assert event_of([3, 7, T0, "b", 4, "boom", "error", 500]) == plain
    traced = RunFailed(7, T0, "b", 4, "KeyError: 'x'", FailureKind.ERROR, None, "Traceback\n")
    assert record_of(traced) == [3, 7, T0, "b", 4, "KeyError: 'x'", "error", None, "Traceback\n"]
    assert event_of(record_of(traced)) == traced
    assert event_of([3, 8, T0, "b", 4, "late", "timeout", None]) == RunFailed(
        8, T0, "b", 4, "late", FailureKind.TIMEOUT)


def test_a_snapshot_row_keeps_the_history_and_an_older_row_reads_without_one() -> None:
    h = Harness()
    h.submit("a", attempts=1, backoff=0)
    (run,) = h.tick(T0)
    h._keep(h.core.run_failed("a", run.run_seq, "KeyError: 'x'", T0 + 1, traceback="tb\n"))
    (run,) = h.tick(T0 + 1)
    h.succeed(run, T0 + 3)
    task = h.core.task("a")
    assert task is not None
    row = msgpack.unpackb(msgpack.packb(task_to_row(task)), raw=False)
    # the runs column (row version 2), before run_now_ms (3) and actions (4)
    assert ROW_VERSION == 4 and row[-3] == [[1, 0, T0, T0 + 1, "failed", None, "KeyError: 'x'",
                                             "tb\n"], [2, 0, T0 + 1, T0 + 3, "success", 200]]
    back = task_from_row(row)
    assert back.runs == task.runs == (
        RunRecord(1, 0, T0, T0 + 1, RunOutcome.FAILED, None, "KeyError: 'x'", "tb\n"),
        RunRecord(2, 0, T0 + 1, T0 + 3, RunOutcome.SUCCESS, 200))
    assert all(type(r.outcome) is RunOutcome for r in back.runs)
    assert task_from_row(row[:-2], 2).runs == task.runs  # a row of version 2
    assert task_from_row(row[:-3], 1).runs == ()  # a row of version 1
