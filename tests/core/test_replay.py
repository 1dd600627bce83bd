"""One path from facts to state: after every step, a core folded from the logged events and a
core restored from a snapshot (of the whole log, and of its first half with the rest folded on
top) agree with the live core on every task, the next deadline and what the next tick does.

The live core is what answered callers; the folded and restored ones are what a restart, a
``cloudqueue log`` command or a compaction would make of the log. A disagreement means a restart
changes what the queue does. Two machines drive it: the model test's steps (with its model's
checks), and a broader one with schedules, progress reports, requeued runs, continuations,
tracebacks and operator actions (retry, run now, cancel, pause and resume, bulk retry, cancel and
purge by filter), checked only against the replayed cores, which must also agree on the paused
state and the audit list. Every task's run history is compared with its other fields.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import fields, replace
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cloudqueue.engine.core.actions import Actor, BulkAction, bulk_filter
from cloudqueue.engine.core.batch_codec import decode_log_payload, encode_batch
from cloudqueue.engine.core.codec import schedule_from_record, schedule_to_record
from cloudqueue.engine.core.commands import Append, CancelRun, Command, Invoke, TaskFinished
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.errors import EngineError
from cloudqueue.engine.core.events import ActionTaken, Event, FailureKind
from cloudqueue.engine.core.framing import scan
from cloudqueue.engine.core.options import DeliveryMode, TaskOptions
from cloudqueue.engine.core.progress import parse_progress
from cloudqueue.engine.core.schedules import ScheduleSpec
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import Task
from cloudqueue.engine.core.task_rows import task_from_row, task_to_row
from cloudqueue.engine.runtime.rebuild import rebuild
from tests.core.test_model import WHEELS, QueueMachine

# Fields of a task that derive from its place in the core, not from the log: its timer, the
# seq of its latest change (0 once restored, which means durable).
DERIVED = {"timer", "timer_token", "changed_seq"}
TASK_FIELDS = [f.name for f in fields(Task) if f.name not in DERIVED]
assert "runs" in TASK_FIELDS  # the run history is compared with the rest


class RecordingCore(EngineCore):
    """An EngineCore that keeps every event it applies: exactly what a store would log."""

    def __init__(self, config: CoreConfig | None = None, *, start_ms: int = 0) -> None:
        self.log: list[Event] = []
        super().__init__(config, start_ms=start_ms)

    def apply(self, event: Event) -> None:
        self.log.append(event)
        super().apply(event)


def as_logged(events: list[Event]) -> list[Event]:
    """The events as the log gives them back: written as one batch, its frames read back."""
    if not events:
        return []
    frames = scan(encode_batch(events, 0, 0))
    return [event for payload in frames.payloads for event in decode_log_payload(payload)]


def folded(config: CoreConfig, start_ms: int, events: list[Event]) -> EngineCore:
    return rebuild(EngineCore(config, start_ms=start_ms), as_logged(events))


def between_batches(events: list[Event], cut: int) -> int:
    """``cut``, moved past the facts of an operator action it would split from the action's
    record: they are one batch, and a snapshot is of the core between batches."""
    for i, event in enumerate(events[:cut]):
        if isinstance(event, ActionTaken):
            end = i + 1 + max(event.count, 1)  # its facts (a pause's: one DispatchPaused)
            if i < cut < end:
                cut = end
    return min(cut, len(events))


def restored(config: CoreConfig, start_ms: int, events: list[Event], cut: int) -> EngineCore:
    """A core restored from a snapshot of the first ``cut`` events (moved to the end of a
    batch), rows written and read as a snapshot file holds them, and the rest of the log
    folded on top."""
    cut = between_batches(events, cut)
    before = folded(config, start_ms, events[:cut])
    tasks = [task_from_row(task_to_row(task)) for task in before.tasks()]
    schedules = [schedule_from_record(schedule_to_record(s)) for s in before.schedules()]
    return rebuild(EngineCore(config, start_ms=start_ms), as_logged(events[cut:]),
                   snapshot_seq=before.last_seq, snapshot_tasks=tasks,
                   snapshot_schedules=schedules, counters=before.counters())


def task_state(core: EngineCore) -> dict[str, dict[str, Any]]:
    """Every task's fields, as the log keeps them (a task's options do not repeat its
    uniqueId: that is the task's own), and its run history as task info shows it."""
    return {task.unique_id: {name: getattr(task, name) for name in TASK_FIELDS}
            | {"options": replace(task.options, unique_id=None),
               "shown runs": [run._asdict() for run in task.info().runs]}
            for task in core.tasks()}


def schedule_state(core: EngineCore) -> list[tuple[Any, ...]]:
    return [(s.spec, s.created_ms, s.last_slot_ms, s.next_slot_ms, s.after_ms)
            for s in core.schedules()]


def diff(live: Any, other: Any) -> str:
    """What differs, field by field (for a failure's message)."""
    if isinstance(live, dict) and isinstance(other, dict):
        keys = sorted(set(live) | set(other), key=str)
        return "; ".join(f"{k}: {diff(live.get(k), other.get(k))}" for k in keys
                         if live.get(k) != other.get(k))
    if isinstance(live, tuple | list) and isinstance(other, tuple | list) \
            and len(live) == len(other):
        pairs = enumerate(zip(live, other, strict=True))
        return "; ".join(f"[{i}] {diff(a, b)}" for i, (a, b) in pairs if a != b)
    return f"live {live!r}, replayed {other!r}"


def comparable(commands: list[Command]) -> list[Any]:
    out: list[Any] = []
    for command in commands:
        if isinstance(command, TaskFinished):
            out.append(("finished", command.task.unique_id))
        else:
            assert isinstance(command, Append | Invoke | CancelRun)
            out.append(command)
    return out


def check_replay(live: RecordingCore, config: CoreConfig, start_ms: int) -> None:
    """The folded and restored cores hold the live core's tasks and schedules; ticked at the
    live core's next deadline (or now), they do what it does, and then agree on the deadline
    after. (Before that tick they may differ only in a timer whose effect is never logged: a
    delayed task's start time passing makes it ready, which a rebuilt core learns at its first
    tick.)"""
    now = live.ticked_ms
    events = live.log
    others = {"folded": folded(config, start_ms, events),
              "restored": restored(config, start_ms, events, len(events)),
              "restored from half": restored(config, start_ms, events, len(events) // 2)}
    deadline = live.next_deadline_ms()
    at = now if deadline is None else max(now, deadline)
    ahead = copy.deepcopy(live)
    ahead.progress.clear()  # held progress reports are not logged: a restart never has them
    expected = (task_state(live), schedule_state(live), live.last_seq, live.counters())
    expected_tick = comparable(ahead.tick(at))
    expected_after = (task_state(ahead), ahead.next_deadline_ms(), ahead.running_count,
                      ahead.ready_count)
    for name, other in others.items():
        found = (task_state(other), schedule_state(other), other.last_seq, other.counters())
        assert found == expected, f"{name}: {diff(expected, found)}"
        tick = comparable(other.tick(at))
        assert tick == expected_tick, f"{name}, the tick at {at}: {diff(expected_tick, tick)}"
        after = (task_state(other), other.next_deadline_ms(), other.running_count,
                 other.ready_count)
        assert after == expected_after, f"{name}, after the tick at {at}: " \
                                        f"{diff(expected_after, after)}"
    for name, core in {"live": live, "ahead": ahead, **others}.items():
        counted = Counter(task.state for task in core.tasks())
        assert core.tasks_by_state() == {state: counted[state] for state in TaskState}, \
            f"{name}: tasks by state (counted as events are applied) differ from the tasks"


# ------------------------------------------------------------------------------------------------
# The model test's steps, with the replay check after each


class ReplayedQueueMachine(QueueMachine):
    core_class = RecordingCore

    @invariant()
    def replays_agree(self) -> None:
        h = self.h
        if h is not None:
            assert isinstance(h.core, RecordingCore)
            check_replay(h.core, h.config, h.start_ms)


TestReplayedModel = ReplayedQueueMachine.TestCase
TestReplayedModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
# shrinking a failure can take minutes: let it finish and print the minimal example
TestReplayedModel = pytest.mark.timeout(600)(TestReplayedModel)


# ------------------------------------------------------------------------------------------------
# Schedules, progress, requeues and continuations too


T0 = 1_700_000_000_000
SPECS = st.builds(
    lambda name, every, mode, paused: ScheduleSpec(
        name, "tick", {"s": name}, None, every, "UTC",
        TaskOptions(delivery_mode=mode, keep_result_ms=1_000, timeout_ms=700), paused),
    st.sampled_from(["a", "b"]), st.sampled_from([250, 1_000, 1_500]),
    st.sampled_from(list(DeliveryMode)), st.booleans())


class BroadMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core: RecordingCore | None = None
        self.config = CoreConfig()
        self.now = T0
        self.runs: list[tuple[str, int]] = []  # (uniqueId, run seq) as invoked

    @initialize(concurrency=st.integers(1, 3), wheel=st.sampled_from(WHEELS),
                own_group=st.sampled_from([None, 1]))
    def start(self, concurrency: int, wheel: tuple[int, int], own_group: int | None) -> None:
        self.config = CoreConfig(concurrency=concurrency, wheel_tick_ms=wheel[0],
                                 wheel_slots=wheel[1], schedule_concurrency=own_group)
        self.core = RecordingCore(self.config, start_ms=T0)

    @property
    def live(self) -> RecordingCore:
        assert self.core is not None
        return self.core

    def _run(self, commands: list[Command]) -> None:
        self.runs.extend((c.unique_id, c.run_seq) for c in commands if isinstance(c, Invoke))

    @rule(n=st.integers(0, 9), delay=st.sampled_from([0, 0, 300, 1_000]),
          attempts=st.integers(0, 2), backoff=st.sampled_from([0, 200, 1_000]),
          priority=st.one_of(st.none(), st.integers(0, 3)))
    def enqueue(self, n: int, delay: int, attempts: int, backoff: int,
                priority: int | None) -> None:
        options = TaskOptions(delay_ms=delay, attempts=attempts, backoff_ms=backoff,
                              priority=priority, timeout_ms=800, keep_result_ms=1_500,
                              delivery_mode=DeliveryMode.AT_LEAST_ONCE if n % 2
                              else DeliveryMode.AT_MOST_ONCE)
        try:
            self.live.submit(f"t{n}", "work", {"n": n}, options, self.now)
        except EngineError:
            pass

    @rule(dt=st.sampled_from([0, 1, 100, 250, 500, 799, 800, 1_000, 3_000]))
    def tick(self, dt: int) -> None:
        self.now += dt
        self._run(self.live.tick(self.now))

    @precondition(lambda self: self.core is not None and bool(self.runs))
    @rule(pick=st.integers(0, 63), how=st.sampled_from(["ok", "error", "unknown", "requeue",
                                                          "continue"]))
    def answer(self, pick: int, how: str) -> None:
        uid, run_seq = self.runs[pick % len(self.runs)]
        live, now = self.live, self.now
        if how == "ok":
            self._run(live.run_succeeded(uid, run_seq, {"r": run_seq}, now, 200))
        elif how == "requeue":
            self._run(live.run_requeued(uid, run_seq, "host unreachable", now))
        elif how == "continue":
            self._run(live.run_continued(uid, run_seq, {"step": run_seq}, now))
        else:
            kind = FailureKind.ERROR if how == "error" else FailureKind.UNKNOWN
            trace = f"Traceback {run_seq}\n" if how == "error" and run_seq % 2 else None
            self._run(live.run_failed(uid, run_seq, f"boom {run_seq}", now, kind, 500, trace))

    @precondition(lambda self: self.core is not None and bool(self.runs))
    @rule(pick=st.integers(0, 63), percent=st.integers(0, 100), say=st.booleans())
    def progress(self, pick: int, percent: int, say: bool) -> None:
        uid, run_seq = self.runs[pick % len(self.runs)]
        report = parse_progress(percent=percent, message=f"at {percent}" if say else None)
        try:
            self.live.report_progress(uid, run_seq, report, self.now)
        except EngineError:
            pass  # not the current run

    @rule(n=st.integers(0, 9))
    def cancel(self, n: int) -> None:
        try:
            self.live.cancel(f"t{n}", self.now)
        except EngineError:
            pass

    @rule(spec=SPECS)
    def set_schedule(self, spec: ScheduleSpec) -> None:
        self.live.set_schedule(spec, self.now)

    @rule(name=st.sampled_from(["a", "b"]), paused=st.booleans(), delete=st.booleans())
    def change_schedule(self, name: str, paused: bool, delete: bool) -> None:
        try:
            if delete:
                self.live.delete_schedule(name, self.now)
            else:
                self.live.pause_schedule(name, paused, self.now)
        except EngineError:
            pass

    @precondition(lambda self: self.core is not None and len(self.core) > 0)
    @rule(pick=st.integers(0, 63), how=st.sampled_from(["retry", "run_now", "cancel"]),
          via=st.sampled_from([None, "cli"]))
    def operate(self, pick: int, how: str, via: str | None) -> None:
        """An operator's action on one of the tasks (refused, as often as not, by its
        state)."""
        actor, live = Actor("operator", via), self.live
        ids = sorted(task.unique_id for task in live.tasks())
        act = {"retry": live.retry, "run_now": live.run_now, "cancel": live.cancel}[how]
        try:
            act(ids[pick % len(ids)], self.now, actor)
        except EngineError:
            pass

    @rule(paused=st.sampled_from([True, False, False]))  # paused a third of the time
    def pause(self, paused: bool) -> None:
        self.live.set_paused(paused, self.now, Actor("master"))

    @rule(action=st.sampled_from(list(BulkAction)),
          function=st.sampled_from([None, "work", "tick"]),
          since=st.sampled_from([None, 0, 1_000, 5_000]), limit=st.integers(1, 4),
          dry_run=st.booleans())
    def bulk(self, action: BulkAction, function: str | None, since: int | None, limit: int,
             dry_run: bool) -> None:
        chosen = bulk_filter(action, function=function,
                             created_from=None if since is None else T0 + since)
        self.live.bulk(action, chosen, self.now, Actor("operator", "cli"), dry_run=dry_run,
                       limit=limit)

    @precondition(lambda self: self.core is not None)
    @rule(dt=st.sampled_from([0, 500, 5_000]))
    def restart(self, dt: int) -> None:
        """The live core is replaced by what a restart makes of its log: restored from a
        snapshot of it, then ``recover``: what happens next must follow from the log alone."""
        live = self.live
        self.now += dt
        core = RecordingCore(self.config, start_ms=self.now)
        fresh = restored(self.config, T0, live.log, len(live.log))
        core.restore_many(fresh.tasks())
        for found in fresh.schedules():
            core.restore_schedule(found)
        core.restore_counters(fresh.counters())
        core.last_seq = fresh.last_seq
        core.log = list(live.log)
        self.core = core
        self._run(core.recover(self.now))
        self.runs = [(uid, seq) for uid, seq in self.runs if core.run_is_current(uid, seq)]

    @invariant()
    def replays_agree(self) -> None:
        if self.core is not None:
            check_replay(self.core, self.config, T0)


TestReplayedBroad = BroadMachine.TestCase
TestReplayedBroad.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestReplayedBroad = pytest.mark.timeout(600)(TestReplayedBroad)
