"""Model-based test: the pure ``EngineCore`` against a small reference model of the LeanCloud
Cloud Queue contract (task options, task info, delivery modes and retries).

The reference model (``Model``/``ModelTask``) is written from LeanCloud's documented protocol
only; it shares no logic with the engine. It keeps, per task: its detailed state, runs charged so
far, the earliest time it may start, ``retryAt``, ``finishedAt``, the keepResult deadline, the
latest execution's ``statusCode``/``error``/``result``. The contract rules it encodes:

* runs = attempts + 1 at most (docs/protocol.md §3.2);
* a failed run with runs left: status stays ``queued``, ``error`` is set, ``retryAt`` = failure time
  + backoff, and the next run never starts before ``retryAt`` (§3.3);
* an error answer (HTTP 500) is retried under both delivery modes; a timeout is a failed run under
  atLeastOnce and makes the task ``failed`` at once under atMostOnce (§3.4);
* success is final: ``result`` = what the run returned, no ``error``, no ``retryAt`` (§1.5);
* the first run never starts before enqueue time + delay (3.5);
* at most ``concurrency`` runs are in flight; among tasks that may start, the lowest
  ``(priority, enqueue order)`` starts first, priority defaulting to the enqueue time (§3.5);
* a uniqueId is held (409 on enqueue) until finishedAt + keepResult; from then on task info is 404
  (``UnknownTaskError``) and the id may be enqueued again as a new task (1.4, 3.1).

Choices the contract leaves open, stated explicitly (the core's comments state the same intent):

* C1 time is discrete. Nothing starts inside ``submit``/``run_*``; every start happens in
  ``tick(now)``. A tick first handles everything that is due at ``now`` (timeouts, retries whose
  ``retryAt <= now``, delays that have passed), and only then fills free slots. So a slot freed by a
  timeout in this tick is usable in this tick, and a task woken by a timer in this very tick
  competes on equal terms with one that has been ready for a long time: only
  ``(priority, enqueue order)`` decides, never how long a task has been ready.
* C2 a run with no answer fails at its deadline ``start + timeout``: that is its failure time
  (``finishedAt``, ``retryAt`` = deadline + backoff) even when the tick that notices it comes later,
  since the execution's time was up then (3.3, 3.4). The late tick handles the consequences at
  once: the retry may already be due, or the keepResult window already over.
* C3 with ``backoff: 0`` a failed run is retried in the same tick that handled the failure.
* C4 ``retryAt`` is shown while the task waits for its retry (``retry_wait``): from the failure up
  to the first tick at or after ``retryAt``. After that the task is back in the lifecycle diagram's
  plain ``queued`` (slot wait) and has no ``retryAt``; the failed run's ``error`` stays visible (it
  is still the latest *completed* execution), also while the retry runs.
* C5 ``statusCode`` is the latest completed execution's HTTP status: a timeout removes it.
* C6 the keepResult window is ``[finishedAt, finishedAt + keepResult)``: ``keepResult: 0`` frees the
  id at once.
* C7 cancel (an extension: the SDK has no cancel call) is allowed only for queued or retry-waiting
  tasks. It finishes the task as ``failed`` with ``finishedAt`` and an ``error``, keeps an earlier
  run's ``statusCode``, and holds the id for keepResult like any finished task. Running or
  finished tasks: ``InvalidTransitionError``; unknown or expired ids: ``UnknownTaskError``.
* C8 an outcome for a run that is no longer current (it timed out, or was already answered) is
  ignored.

Safety properties are also checked from the commands alone, independently of the model: no task
is invoked more than attempts + 1 times, an atMostOnce task is never invoked again after a timeout,
no run starts before enqueue + delay nor before failure time + backoff, at most ``concurrency``
runs are in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from cloudqueue.engine.core.commands import CancelRun, Command, Invoke, TaskFinished
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.errors import (
    DuplicateTaskError,
    InvalidTransitionError,
    UnknownTaskError,
)
from cloudqueue.engine.core.events import FailureKind
from cloudqueue.engine.core.options import DeliveryMode, TaskOptions
from cloudqueue.engine.core.task import iso_ms

AT_LEAST_ONCE = DeliveryMode.AT_LEAST_ONCE
AT_MOST_ONCE = DeliveryMode.AT_MOST_ONCE

# The model's detailed states (the same words as the wire's ``state`` extension field).
QUEUED = "queued"          # waiting for its delay, for a woken retry's turn, or for a slot
RUNNING = "running"
RETRY_WAIT = "retry_wait"  # a failed run, waiting for retryAt
SUCCESS = "success"
FAILED = "failed"
CANCELLED = "cancelled"
FINAL = frozenset({SUCCESS, FAILED, CANCELLED})

ABSENT = "<absent>"  # how a missing wire field shows up in comparisons


# ------------------------------------------------------------------------------------------------
# The reference model


def _set(ms: int | None) -> int:
    """A time the model always sets in the state at hand (None there is a bug in the model)."""
    assert ms is not None
    return ms


@dataclass
class ModelTask:
    uid: str
    order: int                   # enqueue order (the model's own counter)
    options: TaskOptions
    priority: int | float        # explicit, or the enqueue time
    state: str = QUEUED
    ready_at: int = 0            # may start at a tick >= ready_at (enqueue + delay, or retryAt)
    runs: int = 0                # runs charged so far
    run_seq: int | None = None   # the core's handle of the current run (from its Invoke)
    deadline: int | None = None  # current run's start + timeout
    retry_at: int | None = None
    finished_at: int | None = None
    error: str | None = None     # expected substring of the wire's ``error``
    status_code: int | None = None
    result: Any = None

    @property
    def max_runs(self) -> int:
        return self.options.attempts + 1

    def held(self, now: int) -> bool:
        return self.finished_at is None or now < self.finished_at + self.options.keep_result_ms

    def finish(self, state: str, now: int) -> None:
        self.state = state
        self.finished_at = now
        self.retry_at = None
        self.run_seq = None
        self.deadline = None

    def expected_wire(self) -> dict[str, Any]:
        final = self.state in FINAL
        status = SUCCESS if self.state == SUCCESS else FAILED if final else QUEUED
        return {
            "status": status,
            "state": self.state,
            "attempt": self.runs,
            "maxRuns": self.max_runs,
            "retryAt": iso_ms(_set(self.retry_at)) if self.state == RETRY_WAIT else ABSENT,
            "finishedAt": iso_ms(self.finished_at) if self.finished_at is not None else ABSENT,
            "statusCode": self.status_code if self.status_code is not None else ABSENT,
            "result": self.result if self.state == SUCCESS else ABSENT,
        }


class Model:
    """The contract, as a tiny discrete-time simulation."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.tasks: dict[str, ModelTask] = {}
        self.enqueued = 0

    def running(self) -> list[ModelTask]:
        return [t for t in self.tasks.values() if t.state == RUNNING]

    def enqueue(self, uid: str, options: TaskOptions, now: int) -> bool:
        old = self.tasks.get(uid)
        if old is not None and old.held(now):
            return False  # 409: the id is still taken
        priority = now if options.priority is None else options.priority
        self.tasks[uid] = ModelTask(uid, self.enqueued, options, priority,
                                    ready_at=now + options.delay_ms)
        self.enqueued += 1
        return True

    def tick(self, now: int) -> tuple[list[str], list[tuple[str, int]]]:
        """Returns (tasks started in start order, (uid, run_seq) of runs that timed out)."""
        timed_out: list[tuple[str, int]] = []
        for t in self.running():
            if t.deadline is not None and t.deadline <= now:
                assert t.run_seq is not None
                timed_out.append((t.uid, t.run_seq))
                # C2: the run failed at its deadline, however late the tick that noticed it.
                self.fail(t.uid, t.deadline, error="timed out", status_code=None, timeout=True)
        for t in self.tasks.values():  # C4: the retry is due, back to plain queued
            if t.state == RETRY_WAIT and t.retry_at is not None and t.retry_at <= now:
                t.state = QUEUED
                t.ready_at = t.retry_at
        started: list[str] = []
        free = self.concurrency - len(self.running())
        ready = sorted((t for t in self.tasks.values() if t.state == QUEUED and t.ready_at <= now),
                       key=lambda t: (t.priority, t.order))
        for t in ready[:max(free, 0)]:
            t.state = RUNNING
            t.runs += 1
            t.deadline = now + t.options.timeout_ms
            t.retry_at = None
            started.append(t.uid)
        return started, timed_out

    def succeed(self, uid: str, now: int, result: Any) -> None:
        t = self.tasks[uid]
        t.finish(SUCCESS, now)
        t.result = result
        t.status_code = 200
        t.error = None

    def fail(self, uid: str, now: int, *, error: str, status_code: int | None,
             timeout: bool) -> None:
        t = self.tasks[uid]
        t.error = error
        t.status_code = status_code
        if (timeout and t.options.delivery_mode is AT_MOST_ONCE) or t.runs >= t.max_runs:
            t.finish(FAILED, now)
        else:
            t.state = RETRY_WAIT
            t.retry_at = now + t.options.backoff_ms
            t.run_seq = None
            t.deadline = None

    def cancel(self, uid: str, now: int) -> str:
        t = self.tasks.get(uid)
        if t is None or not t.held(now):
            return "unknown"
        if t.state not in (QUEUED, RETRY_WAIT):
            return "invalid"
        t.finish(CANCELLED, now)
        t.error = "cancel"
        return "ok"

    def next_deadline(self, now: int) -> int | None:
        """When something next becomes due (a timeout, a delay, a retry, an expiry)."""
        times: list[int] = []
        for t in self.tasks.values():
            if t.state == RUNNING and t.deadline is not None:
                times.append(t.deadline)
            elif t.state == QUEUED and t.ready_at > now:
                times.append(t.ready_at)
            elif t.state == RETRY_WAIT and t.retry_at is not None:
                times.append(t.retry_at)
            elif t.finished_at is not None and t.held(now):
                times.append(t.finished_at + t.options.keep_result_ms)
        return min(times, default=None)


# ------------------------------------------------------------------------------------------------
# Driving the core and the model side by side


@dataclass
class Seen:
    """What the commands alone tell about one task (independent of the model)."""

    options: TaskOptions
    not_before: int
    deadline: int = 0
    invoked: int = 0
    timed_out: bool = False


class Harness:
    def __init__(self, concurrency: int = 1, *, wheel: tuple[int, int] = (1, 4096),
                 start_ms: int = 0, check_each_step: bool = False,
                 core_class: type[EngineCore] = EngineCore) -> None:
        tick_ms, slots = wheel
        self.config = CoreConfig(concurrency=concurrency, wheel_tick_ms=tick_ms,
                                 wheel_slots=slots)
        self.start_ms = start_ms
        self.core = core_class(self.config, start_ms=start_ms)
        self.model = Model(concurrency)
        self.now = start_ms
        self.ids: list[str] = []                     # every uniqueId ever used
        self.stale_runs: list[tuple[str, int]] = []  # runs that timed out or were answered
        self.seen: dict[str, Seen] = {}
        self.check_each_step = check_each_step

    # -- steps

    def enqueue(self, uid: str, options: TaskOptions | None = None) -> bool:
        options = replace(options or TaskOptions(), unique_id=uid)
        if uid not in self.ids:
            self.ids.append(uid)
        accepted = self.model.enqueue(uid, options, self.now)
        if accepted:
            self.core.submit(uid, "work", {"uid": uid}, options, self.now)
            self.seen[uid] = Seen(options, not_before=self.now + options.delay_ms)
        else:
            with pytest.raises(DuplicateTaskError) as refused:
                self.core.submit(uid, "work", {"uid": uid}, options, self.now)
            assert refused.value.http_status == 409
        self._after()
        return accepted

    def advance(self, dt: int) -> tuple[list[str], list[str]]:
        """Move the clock, tick, and return (started in order, timed out sorted)."""
        self.now += dt
        commands = self.core.tick(self.now)
        invokes = [c for c in commands if isinstance(c, Invoke)]
        cancels = [c for c in commands if isinstance(c, CancelRun)]
        self._check_safety(invokes, cancels)
        started, timed_out = self.model.tick(self.now)
        assert [i.unique_id for i in invokes] == started, (
            f"t={self.now}: core started {[i.unique_id for i in invokes]}, model {started}")
        assert sorted((c.unique_id, c.run_seq) for c in cancels) == sorted(timed_out), (
            f"t={self.now}: core timed out {cancels}, model {timed_out}")
        for inv in invokes:
            t = self.model.tasks[inv.unique_id]
            t.run_seq = inv.run_seq
            assert (inv.attempt, inv.deadline_ms, inv.timeout_ms) == (
                t.runs, t.deadline, t.options.timeout_ms)
        self.stale_runs.extend(timed_out)
        self._after()
        return started, sorted(uid for uid, _ in timed_out)

    def answer(self, uid: str, ok: bool) -> None:
        t = self.model.tasks[uid]
        assert t.state == RUNNING and t.run_seq is not None
        run_seq = t.run_seq
        commands: list[Command]
        if ok:
            result = {"result": f"{uid}#{t.runs}"}
            commands = self.core.run_succeeded(uid, run_seq, result, self.now, status_code=200)
            self.model.succeed(uid, self.now, result)
        else:
            error = f"boom {uid}#{t.runs}"
            commands = self.core.run_failed(uid, run_seq, error, self.now,
                                            kind=FailureKind.ERROR, status_code=500)
            self.model.fail(uid, self.now, error=error, status_code=500, timeout=False)
            self.seen[uid].not_before = self.now + t.options.backoff_ms
        finished = [c for c in commands if isinstance(c, TaskFinished)]
        assert len(finished) == (1 if t.state in FINAL else 0)
        self.stale_runs.append((uid, run_seq))
        self._after()

    def late_answer(self, uid: str, run_seq: int, ok: bool) -> None:
        """An outcome for a run that timed out or was answered already: ignored (C8)."""
        if ok:
            commands = self.core.run_succeeded(uid, run_seq, {"result": "late"}, self.now, 200)
        else:
            commands = self.core.run_failed(uid, run_seq, "late", self.now,
                                            kind=FailureKind.ERROR, status_code=500)
        assert commands == []
        self._after()

    def cancel(self, uid: str) -> str:
        expected = self.model.cancel(uid, self.now)
        if expected == "unknown":
            with pytest.raises(UnknownTaskError):
                self.core.cancel(uid, self.now)
        elif expected == "invalid":
            with pytest.raises(InvalidTransitionError):
                self.core.cancel(uid, self.now)
        else:
            commands = self.core.cancel(uid, self.now)
            assert any(isinstance(c, TaskFinished) for c in commands)
        self._after()
        return expected

    # -- checks

    def _after(self) -> None:
        if self.check_each_step:
            self.check()

    def _check_safety(self, invokes: list[Invoke], cancels: list[CancelRun]) -> None:
        # A run that timed out in this tick may be retried in the same tick (C3): cancels first.
        for c in cancels:
            seen = self.seen[c.unique_id]
            seen.timed_out = True
            seen.not_before = seen.deadline + seen.options.backoff_ms
        for inv in invokes:
            seen = self.seen[inv.unique_id]
            seen.invoked += 1
            seen.deadline = inv.deadline_ms
            assert seen.invoked <= seen.options.attempts + 1, f"{inv.unique_id} ran too often"
            assert not (seen.options.delivery_mode is AT_MOST_ONCE and seen.timed_out), (
                f"atMostOnce task {inv.unique_id} ran again after a timeout")
            assert self.now >= seen.not_before, f"{inv.unique_id} started before {seen.not_before}"
        assert self.core.running_count <= self.model.concurrency

    def check(self) -> None:
        running = self.model.running()
        assert self.core.running_count == len(running) <= self.model.concurrency
        for uid, t in self.model.tasks.items():
            if not t.held(self.now):
                with pytest.raises(UnknownTaskError):
                    self.core.task_info(uid, self.now)
                continue
            wire = self.core.task_info(uid, self.now).to_wire()
            expected = t.expected_wire()
            actual = {key: wire.get(key, ABSENT) for key in expected}
            assert actual == expected, f"t={self.now} task {uid}: {wire}"
            if t.error is None or t.state == SUCCESS:
                assert "error" not in wire, f"t={self.now} task {uid}: {wire}"
            else:
                assert t.error in wire.get("error", ""), f"t={self.now} task {uid}: {wire}"
        # A driver sleeps until next_deadline_ms(): it must not sleep past anything that is due.
        due = self.model.next_deadline(self.now)
        if due is not None:
            wake = self.core.next_deadline_ms()
            assert wake is not None and wake <= max(due, self.now), (self.now, wake, due)

    def wire(self, uid: str) -> dict[str, Any]:
        return self.core.task_info(uid, self.now).to_wire()


# ------------------------------------------------------------------------------------------------
# The state machine


def _ms(hi: int) -> st.SearchStrategy[int]:
    # Round values make coincidences (several things due at the same tick) common.
    return st.one_of(st.sampled_from([0, 500, 1000, 2000]), st.integers(0, hi))


def _task_options(fields: dict[str, Any]) -> TaskOptions:
    return TaskOptions(**fields)


# A random subset of the options (the rest keep LeanCloud's defaults). ``timeout`` is always given:
# with the 15 s default, runs would rarely time out within a 40-step run.
OPTIONS = st.fixed_dictionaries({
    "timeout_ms": st.one_of(st.sampled_from([1, 500, 1000, 2000]), st.integers(1, 5000)),
}, optional={
    "attempts": st.integers(0, 3),
    "backoff_ms": _ms(5000),
    "delay_ms": _ms(5000),
    "delivery_mode": st.sampled_from(DeliveryMode),
    "keep_result_ms": st.one_of(st.sampled_from([0, 1, 1000]), st.integers(0, 10_000)),
    "priority": st.one_of(st.none(), st.integers(0, 3), st.sampled_from([500, 1000, 2000])),
}).map(_task_options)

# (wheel_tick_ms, wheel_slots): the default, and small wheels whose timers wrap many rounds.
WHEELS = [(1, 4096), (1, 8), (5, 16)]


class QueueMachine(RuleBasedStateMachine):
    core_class: type[EngineCore] = EngineCore

    def __init__(self) -> None:
        super().__init__()
        self.h: Harness | None = None

    @property
    def harness(self) -> Harness:
        assert self.h is not None
        return self.h

    @initialize(concurrency=st.integers(1, 3), wheel=st.sampled_from(WHEELS))
    def start(self, concurrency: int, wheel: tuple[int, int]) -> None:
        self.h = Harness(concurrency, wheel=wheel, core_class=self.core_class)

    @rule(options=OPTIONS, reuse=st.one_of(st.none(), st.integers(0, 63)))
    def enqueue(self, options: TaskOptions, reuse: int | None) -> None:
        ids = self.harness.ids
        uid = ids[reuse % len(ids)] if reuse is not None and ids else f"t{len(ids)}"
        reused = uid in self.harness.model.tasks
        accepted = self.harness.enqueue(uid, options)
        event(f"enqueue: {'409 duplicate' if not accepted else 'id reused' if reused else 'new'}")

    @rule(dt=st.one_of(st.just(0), st.integers(0, 7000)))
    def advance(self, dt: int) -> None:
        self._tick(dt)

    def _tick(self, dt: int) -> None:
        h = self.harness
        cut_short = {t.uid for t in h.model.running()
                     if t.options.delivery_mode is AT_MOST_ONCE and t.runs < t.max_runs}
        started, timed_out = h.advance(dt)
        if len(started) > 1:
            event("tick: several runs started at once")
        if timed_out and started:
            event("tick: timeouts and starts in the same tick")
        if set(timed_out) & set(started):
            event("tick: a timed-out run retried in the same tick")
        if cut_short & set(timed_out):
            event("tick: atMostOnce timeout with runs left")

    @precondition(lambda self: self.h is not None
                  and self.h.model.next_deadline(self.h.now) is not None)
    @rule(just_before=st.booleans())
    def advance_to_next_deadline(self, just_before: bool) -> None:
        h = self.harness
        target = h.model.next_deadline(h.now)
        assert target is not None
        self._tick(max(target - int(just_before), h.now) - h.now)

    @precondition(lambda self: self.h is not None and bool(self.h.model.running()))
    @rule(pick=st.integers(0, 7), ok=st.booleans())
    def answer(self, pick: int, ok: bool) -> None:
        running = self.harness.model.running()
        self.harness.answer(running[pick % len(running)].uid, ok)

    @precondition(lambda self: self.h is not None and bool(self.h.stale_runs))
    @rule(pick=st.integers(0, 63), ok=st.booleans())
    def late_answer(self, pick: int, ok: bool) -> None:
        stale = self.harness.stale_runs
        uid, run_seq = stale[pick % len(stale)]
        self.harness.late_answer(uid, run_seq, ok)

    @rule(pick=st.integers(0, 63))
    def cancel(self, pick: int) -> None:
        pool = [*self.harness.ids, "never-enqueued"]
        event(f"cancel: {self.harness.cancel(pool[pick % len(pool)])}")

    @invariant()
    def core_agrees_with_model(self) -> None:
        if self.h is not None:
            self.h.check()


TestQueueModel = QueueMachine.TestCase
TestQueueModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None,
                                   derandomize=False, report_multiple_bugs=False)
# A passing run takes ~12 s, but shrinking a failure of a 40-step machine can take a minute or
# two: let it finish, so that the minimal failing example gets printed instead of a timeout.
TestQueueModel = pytest.mark.timeout(600)(TestQueueModel)


# ------------------------------------------------------------------------------------------------
# Scripted examples through the same harness (every step is checked against the model)


def test_retry_after_backoff_then_success_and_keep_result() -> None:
    """The core's worked example, then the uniqueId's keepResult window."""
    h = Harness(1, check_each_step=True)
    h.enqueue("a", TaskOptions(attempts=1, backoff_ms=1000, keep_result_ms=2000, timeout_ms=5000))
    assert h.advance(0) == (["a"], [])
    h.advance(5)
    h.answer("a", ok=False)  # run 1 of 2 failed at t=5
    wire = h.wire("a")
    assert (wire["status"], wire["retryAt"], wire["error"], wire["statusCode"]) == (
        "queued", iso_ms(1005), "boom a#1", 500)
    assert h.advance(999) == ([], [])  # t=1004: not before retryAt
    assert h.advance(1) == (["a"], [])  # t=1005
    h.advance(10)
    h.answer("a", ok=True)  # t=1015
    wire = h.wire("a")
    assert wire["status"] == "success" and wire["finishedAt"] == iso_ms(1015)
    assert wire["result"] == {"result": "a#2"} and wire["attempt"] == 2
    assert "error" not in wire and "retryAt" not in wire
    assert not h.enqueue("a")  # 409 while held
    h.advance(1999)  # t=3014: still held
    assert not h.enqueue("a")
    h.advance(1)  # t=3015 = finishedAt + keepResult: gone, the id is free
    with pytest.raises(UnknownTaskError):
        h.core.task_info("a", h.now)
    assert h.enqueue("a", TaskOptions(keep_result_ms=0))
    assert h.wire("a")["attempt"] == 0


def test_one_late_tick_timeouts_retries_delays_and_priority_ties() -> None:
    """Concurrency 2. Runs a and m time out at t=500, but the driver only ticks at t=600; they
    failed at 500 all the same (C2). In that one tick: m (atMostOnce) fails for good although it
    has runs left; a's retry (backoff 0, due at 500) and the delayed d (due at 500) become ready;
    e has been ready since t=0. The two free slots go by (priority, enqueue order) only (C1): all
    four have priority 7, so a and d start and e, though ready the longest, waits."""
    h = Harness(2, check_each_step=True)
    common = TaskOptions(timeout_ms=500, priority=7, backoff_ms=0, attempts=1)
    h.enqueue("a", common)                                           # atLeastOnce
    h.enqueue("m", replace(common, attempts=3, delivery_mode=AT_MOST_ONCE))
    h.enqueue("d", replace(common, delay_ms=500))                    # ready at t=500
    h.enqueue("e", common)                                           # ready since t=0
    assert h.advance(0) == (["a", "m"], [])
    assert h.advance(499) == ([], [])  # t=499: nothing is due yet
    assert h.advance(101) == (["a", "d"], ["a", "m"])  # t=600
    m = h.wire("m")
    assert (m["status"], m["finishedAt"], m["attempt"]) == ("failed", iso_ms(500), 1)
    assert "timed out" in m["error"] and "retryAt" not in m and "statusCode" not in m
    a = h.wire("a")
    assert (a["status"], a["state"], a["attempt"]) == ("queued", "running", 2)
    assert "timed out" in a["error"]  # C4: the latest completed run's error stays visible
    h.answer("a", ok=False)  # run 2 of 2: final
    assert h.wire("a")["status"] == "failed"
    assert h.advance(0) == (["e"], [])


def test_cancel_rules_and_late_answers() -> None:
    h = Harness(1, check_each_step=True)
    h.enqueue("x", TaskOptions(attempts=0, keep_result_ms=100))
    h.enqueue("y")
    assert h.advance(0) == (["x"], [])
    assert h.cancel("x") == "invalid"  # running
    assert h.cancel("y") == "ok"       # queued
    y = h.wire("y")
    assert (y["status"], y["finishedAt"]) == ("failed", iso_ms(0)) and "error" in y
    assert h.cancel("y") == "invalid"  # finished
    assert h.cancel("ghost") == "unknown"
    x_run = h.model.tasks["x"].run_seq
    assert x_run is not None
    h.advance(10)
    h.answer("x", ok=False)  # attempts 0: the only run failed, final
    assert h.wire("x")["status"] == "failed"
    h.late_answer("x", x_run, ok=True)  # ignored
    assert h.cancel("x") == "invalid"
    h.advance(100)  # keepResult over
    assert h.cancel("x") == "unknown"
    assert h.enqueue("x")
