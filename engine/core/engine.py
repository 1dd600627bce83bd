"""EngineCore: the pure, deterministic queue. Requests and outcomes in, events and commands out.

Theory of operation
-------------------
The core owns every task's state, a ``ReadyQueue`` of tasks that may start now (ordered by
``(priority, seq)``) and a ``TimerWheel`` of tasks waiting for a time (a delayed start, a retry's
backoff, a run's timeout, the end of a result's keepResult window). It never reads a clock: each
entry point takes ``now_ms``.

Every change goes through ``apply(event)``, the one function that mutates state. The live entry
points (``submit``, ``cancel``, ``run_succeeded``, ``run_failed``, ``run_requeued``, ``tick``) check
the request, build the event with the next ``seq``, ``apply`` it, and return commands: ``Append``
(log these events) first, then ``Invoke`` / ``CancelRun`` / ``TaskFinished``. Replay after a
restart calls the same ``apply`` for each stored event and then ``recover(now_ms)``, which decides
the fate of runs the crash interrupted and logs that decision too.

Worked example (concurrency 1, attempts 1, backoff 1000)::

    submit("a", now=0)        -> [Append(TaskSubmitted seq=1)]
    tick(0)                   -> [Append(RunStarted seq=2 attempt=1), Invoke(run_seq=2)]
    run_failed("a", 2, now=5) -> [Append(RunFailed seq=3)]       state retry_wait, retryAt 1005
    tick(1004)                -> []
    tick(1005)                -> [Append(RunStarted seq=4 attempt=2), Invoke(run_seq=4)]
    run_failed("a", 4, now=9) -> [Append(RunFailed seq=5), TaskFinished("a")]   state failed

Derived state (ready queue, timers, the running set) is never logged: ``apply`` rebuilds it, and a
timer whose time passed while the queue was down fires at the first ``tick``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from cloudqueue.engine.core.commands import Append, CancelRun, Command, Invoke, TaskFinished
from cloudqueue.engine.core.errors import (
    DuplicateTaskError,
    InvalidTransitionError,
    StaleRunError,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.events import (
    Event,
    FailureKind,
    ProgressReported,
    RunContinued,
    RunFailed,
    RunRequeued,
    RunStarted,
    RunSucceeded,
    ScheduleDeleted,
    SchedulePaused,
    ScheduleSet,
    ScheduleSkipped,
    TaskCancelled,
    TaskPurged,
    TaskSubmitted,
)
from cloudqueue.engine.core.options import DeliveryMode, Limits, TaskOptions
from cloudqueue.engine.core.progress import KEPT_MESSAGES, PROGRESS_WINDOW_MS, checkpoint_problem
from cloudqueue.engine.core.quotas import Quotas, QuotaTracker
from cloudqueue.engine.core.ready_queue import ReadyQueue
from cloudqueue.engine.core.schedule_ops import ScheduleOps
from cloudqueue.engine.core.schedules import Schedule
from cloudqueue.engine.core.states import TaskState, Trigger, can_fire, fire
from cloudqueue.engine.core.task import (
    MAX_RESULT_BYTES,
    Task,
    TaskInfo,
    pack_params,
    storable_text,
    unpacked,
    unstorable,
)
from cloudqueue.engine.core.timer_wheel import TimerWheel


class TimerKind(IntEnum):
    START = 1    # a delayed task may start
    WAKE = 2     # a retry's backoff has passed
    TIMEOUT = 3  # a run has had its time
    EXPIRE = 4   # a finished task's keepResult window has passed
    CRON = 5     # a schedule's next slot (keyed by the schedule's name)


TimerKey = tuple[TimerKind, str, int]  # (kind, uniqueId, token)


@dataclass(frozen=True, slots=True)
class CoreConfig:
    concurrency: int = 1
    limits: Limits = field(default_factory=Limits)
    wheel_tick_ms: int = 1
    wheel_slots: int = 4096
    quotas: Quotas = field(default_factory=Quotas)
    # Runs in flight for schedules' firings, in a group of their own (None: they share
    # ``concurrency`` with every other task).
    schedule_concurrency: int | None = None
    # The largest result a run may hand back, packed as the log stores it (a record holds at
    # most 16 MiB); a larger one fails the run (``run_succeeded``).
    max_result_bytes: int = MAX_RESULT_BYTES


class EngineCore(ScheduleOps):
    """The queue's state and rules for one app. Not thread-safe: one caller at a time."""

    def __init__(self, config: CoreConfig | None = None, *, start_ms: int = 0) -> None:
        self.config = config or CoreConfig()
        self.concurrency = self.config.concurrency
        # a lower limit on runs in flight set from outside while the machine is overloaded
        # (engine/runtime/pacing.py); None: ``concurrency`` alone
        self.run_cap: int | None = None
        self._tasks: dict[str, Task] = {}
        self._ready = ReadyQueue()
        self._ready_scheduled = ReadyQueue()  # used when schedules have their own group
        self._running_scheduled: set[str] = set()
        self._progress_due: dict[str, int] = {}  # uniqueId -> when its pending report is logged
        self._appliers = self._make_appliers()
        self._wheel: TimerWheel[TimerKey] = TimerWheel(
            start_ms, self.config.wheel_tick_ms, self.config.wheel_slots)
        self._due: list[TimerKey] = []
        self._running: dict[str, int] = {}
        self._schedules: dict[str, Schedule] = {}
        self._timer_tokens = 0
        self._unfinished = 0
        self.quota = QuotaTracker(self.config.quotas)
        self.last_seq = 0

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    @property
    def has_ready(self) -> bool:
        """Some task may start now (in either concurrency group)."""
        return bool(self._ready) or bool(self._ready_scheduled)

    @property
    def run_limit(self) -> int:
        """Runs of the ordinary group allowed in flight now: ``concurrency``, or ``run_cap``
        while that is lower."""
        return self.concurrency if self.run_cap is None else min(self.concurrency, self.run_cap)

    @property
    def can_start(self) -> bool:
        """A tick would start a run now: a task is ready and its group has a free slot (under
        ``run_cap`` too)."""
        own_group = self.config.schedule_concurrency
        if self._ready_scheduled and own_group is not None \
                and len(self._running_scheduled) < own_group:
            return True
        return bool(self._ready) and (len(self._running) - len(self._running_scheduled)
                                      < self.run_limit)

    def task_info(self, unique_id: str, now_ms: int) -> TaskInfo:
        """Raises ``UnknownTaskError`` for an id never seen or whose keepResult has passed.
        The state in memory, which may run ahead of the log: a reader outside waits until
        ``task_info_at``'s seq is durable."""
        return self._live_task(unique_id, now_ms).info()

    def task_info_at(self, unique_id: str, now_ms: int) -> tuple[TaskInfo, int]:
        """``task_info`` and the seq of the task's latest logged change: the info may be shown
        once that seq is durable (``Engine.get_task_info``)."""
        task = self._live_task(unique_id, now_ms)
        return task.info(), task.changed_seq

    def next_deadline_ms(self) -> int | None:
        """When ``tick`` next has something to do by the clock (None: only a request or an
        outcome can make work)."""
        if self._due:
            return self._wheel.current_ms
        wheel = self._wheel.next_expiry_ms()
        if self._progress_due:
            soonest = min(self._progress_due.values())
            return soonest if wheel is None else min(wheel, soonest)
        return wheel

    def tasks(self) -> list[Task]:
        return list(self._tasks.values())

    def run_is_current(self, unique_id: str, run_seq: int) -> bool:
        return self._running.get(unique_id) == run_seq

    def run_checkpoint(self, unique_id: str, run_seq: int) -> tuple[Any, int]:
        """The checkpoint run ``run_seq`` continues from and how many slices came before it
        (``(None, 0)`` on a first slice).

        Raises:
            StaleRunError: ``run_seq`` is not the task's current run.
        """
        if not self.run_is_current(unique_id, run_seq):
            raise StaleRunError(unique_id, run_seq)
        task = self._tasks[unique_id]
        return task.checkpoint, task.slices

    # ------------------------------------------------------------------ requests

    def submit(self, unique_id: str, function: str, params: Any, options: TaskOptions,
               now_ms: int) -> list[Command]:
        """Accept a new task (already validated). Raises ``DuplicateTaskError`` while the
        uniqueId is held."""
        events: list[Event] = []
        existing = self._tasks.get(unique_id)
        if existing is not None and not self._expired(existing, now_ms):
            raise DuplicateTaskError(unique_id, existing.state.wire_status, existing.state.value)
        self.quota.check(now_ms, self._unfinished)  # before anything changes
        if existing is not None:  # expired but not purged yet: its uniqueId is free again
            events.append(self._emit(TaskPurged(self._seq(), now_ms, unique_id)))
        priority = now_ms if options.priority is None else options.priority
        events.append(self._emit(TaskSubmitted(self._seq(), now_ms, unique_id, function, params,
                                               options, priority)))
        return [Append(tuple(events))]

    def submit_many(self, batch: Sequence[tuple[str, str, Any, TaskOptions]],
                    now_ms: int) -> list[Command]:
        """Accept ``(uniqueId, function, params, options)`` tasks (already validated) all or
        none: one ``Append`` holds them, so they share one write. Raises
        ``DuplicateTaskError`` (naming the item) if an id is held or given twice in the batch,
        ``QuotaExceededError`` if the batch would break a quota; then nothing changed."""
        tasks = self._tasks
        first_at: dict[str, int] = {}
        freed: set[str] = set()  # held by tasks whose keepResult ran out: purged first
        for index, item in enumerate(batch):
            unique_id = item[0]
            first = first_at.setdefault(unique_id, index)
            if first != index:
                raise DuplicateTaskError.within_batch(unique_id, index, first)
            existing = tasks.get(unique_id)
            if existing is not None:
                if not self._expired(existing, now_ms):
                    raise DuplicateTaskError(unique_id, existing.state.wire_status,
                                             existing.state.value, index=index)
                freed.add(unique_id)
        self.quota.check(now_ms, self._unfinished, len(batch))
        events: list[Event] = []
        apply_submitted = self._apply_submitted
        for unique_id, function, params, options in batch:
            if freed and unique_id in freed:
                events.append(self._emit(TaskPurged(self._seq(), now_ms, unique_id)))
            self.last_seq = seq = self.last_seq + 1
            event = TaskSubmitted(seq, now_ms, unique_id, function, params, options,
                                  now_ms if options.priority is None else options.priority)
            apply_submitted(event)  # what apply() does for it; last_seq is already seq
            events.append(event)
        return [Append(tuple(events))]

    def cancel(self, unique_id: str, now_ms: int) -> list[Command]:
        """Cancel a queued or retry-waiting task. Raises ``UnknownTaskError`` or
        ``InvalidTransitionError`` (running or finished tasks)."""
        task = self._live_task(unique_id, now_ms)
        if not can_fire(task.state, Trigger.CANCEL):
            raise InvalidTransitionError(unique_id, task.state.value, Trigger.CANCEL.value)
        event = self._emit(TaskCancelled(self._seq(), now_ms, unique_id))
        return [Append((event,)), TaskFinished(task)]

    # ------------------------------------------------------------------ run outcomes

    # Every run outcome becomes an event here (run_succeeded, run_failed, run_requeued,
    # run_continued), so here is where what a run handed back is checked against what the log
    # can store. A result or checkpoint it cannot store (an integer beyond 64 bits, NaN, a value
    # that is not JSON, text that is not Unicode, over the size cap) would kill the log writer,
    # and after a restart the task would run and kill it again. Instead the run fails as an
    # *unknown* outcome: the function ran, but what it handed back is lost. So an atMostOnce task
    # fails for good (its function must not run twice) and an atLeastOnce task is retried while
    # its runs last: at most its normal attempts, never forever. Error texts are cut to size and
    # made valid Unicode rather than refused.

    def run_succeeded(self, unique_id: str, run_seq: int, result: Any, now_ms: int,
                      status_code: int | None = None) -> list[Command]:
        """Record a run's success (a failure if its result cannot be stored). An outcome for a
        run that is no longer current (it timed out, or the task was requeued) is dropped:
        returns []."""
        late = self._timers_first(unique_id, run_seq, now_ms)
        if late is None or not self.run_is_current(unique_id, run_seq):
            return late or []
        problem = unstorable(result, "the result", self.config.max_result_bytes)
        if problem is not None:
            return late + self.run_failed(
                unique_id, run_seq, f"the function's result cannot be stored: {problem}",
                now_ms, FailureKind.UNKNOWN, status_code)
        events = self._run_ended(unique_id, lambda seq: RunSucceeded(
            seq, now_ms, unique_id, run_seq, result, status_code))
        return [*late, Append(events), TaskFinished(self._tasks[unique_id])]

    def _timers_first(self, unique_id: str, run_seq: int, now_ms: int) -> list[Command] | None:
        """Before an outcome is recorded: None if its run is not current (the outcome is
        dropped); else what the timers due now did. An outcome handled at or past its run's
        deadline is late, whatever arrived first in a busy moment (the timeout timer and the
        answer race after a stall): the timers fire first, so the run times out and the late
        outcome changes nothing (the caller sees the run is no longer current)."""
        if not self.run_is_current(unique_id, run_seq):
            return None
        task = self._tasks[unique_id]
        started_ms = task.started_ms
        if started_ms is None or now_ms < started_ms + task.options.timeout_ms:
            return []
        return self.tick(now_ms, dispatch=False)

    def run_failed(self, unique_id: str, run_seq: int, error: str, now_ms: int,
                   kind: FailureKind = FailureKind.ERROR,
                   status_code: int | None = None) -> list[Command]:
        """Record a failed run; the task retries after ``backoff`` or fails for good."""
        late = self._timers_first(unique_id, run_seq, now_ms)
        if late is None or not self.run_is_current(unique_id, run_seq):
            return late or []
        error = storable_text(error)
        events = self._run_ended(unique_id, lambda seq: RunFailed(
            seq, now_ms, unique_id, run_seq, error, kind, status_code))
        return late + self._with_finish([Append(events)], unique_id)

    def run_requeued(self, unique_id: str, run_seq: int, reason: str,
                     now_ms: int) -> list[Command]:
        """A run that did no countable work (host unreachable): no attempt is spent."""
        if not self.run_is_current(unique_id, run_seq):
            return []
        reason = storable_text(reason)
        return [Append(self._run_ended(unique_id, lambda seq: RunRequeued(
            seq, now_ms, unique_id, run_seq, reason)))]

    def forget(self, unique_id: str) -> None:
        """Undo a submission the store could not make durable (disk full). Such a task never
        ran (a run waits for its submission to be durable), so nothing else refers to it."""
        task = self._tasks.pop(unique_id, None)
        if task is None:
            return
        if not task.state.is_final:
            self._unfinished -= 1
        self.quota.uncounted(task.created_ms)
        self._unready(unique_id)
        self._running.pop(unique_id, None)
        self._running_scheduled.discard(unique_id)
        self._set_timer(task, None, 0)

    def report_progress(self, unique_id: str, run_seq: int, report: dict[str, Any],
                        now_ms: int) -> list[Command]:
        """A running task's progress (validated by ``progress.parse_progress``): shown at once,
        logged at most once per ``PROGRESS_WINDOW_MS`` (the latest wins).

        Raises:
            StaleRunError: ``run_seq`` is not the task's current run.
        """
        if not self.run_is_current(unique_id, run_seq):
            raise StaleRunError(unique_id, run_seq)
        problem = unstorable(report, "the progress report", self.config.max_result_bytes)
        if problem is not None:
            raise ValidationError(problem)
        task = self._tasks[unique_id]
        messages = task.messages
        if "message" in report:
            messages = (*messages, (now_ms, report["message"]))[-KEPT_MESSAGES:]
        task.progress = {**(task.progress or {}), **report}
        task.progress_ms, task.messages = now_ms, messages
        logged = task.progress_logged_ms
        if logged is not None and now_ms - logged < PROGRESS_WINDOW_MS:
            self._progress_due.setdefault(unique_id, logged + PROGRESS_WINDOW_MS)
            return []
        events: list[Event] = []
        self._log_progress(task, events)
        return [Append(tuple(events))]

    def _log_progress(self, task: Task, events: list[Event]) -> None:
        self._progress_due.pop(task.unique_id, None)
        events.append(self._emit(ProgressReported(
            self._seq(), task.progress_ms or 0, task.unique_id, task.run_seq,
            dict(task.progress or {}), task.messages)))

    def _run_ended(self, unique_id: str, outcome: Callable[[int], Event]) -> tuple[Event, ...]:
        """A pending progress report (logged first, so the final progress is durable), then the
        run's outcome, built with the next seq."""
        events: list[Event] = []
        self._flush_progress(unique_id, events)
        events.append(self._emit(outcome(self._seq())))
        return tuple(events)

    def _flush_progress(self, unique_id: str, events: list[Event]) -> None:
        """Log a report still waiting for its window before the run's outcome is logged."""
        if unique_id in self._progress_due:
            self._log_progress(self._tasks[unique_id], events)

    def run_continued(self, unique_id: str, run_seq: int, checkpoint: Any,
                      now_ms: int) -> list[Command]:
        """A run ended "not finished: continue from ``checkpoint``". The task runs again as the
        same attempt with the checkpoint, unless the checkpoint cannot be stored (not JSON,
        over ``MAX_CHECKPOINT_BYTES``: a failed run with an unknown outcome, as for a result) or
        its overall ``deadline`` has passed (failed for good)."""
        late = self._timers_first(unique_id, run_seq, now_ms)
        if late is None or not self.run_is_current(unique_id, run_seq):
            return late or []
        task = self._tasks[unique_id]
        problem = checkpoint_problem(checkpoint) or unstorable(
            checkpoint, "the checkpoint", self.config.max_result_bytes)
        deadline_ms = task.options.deadline_ms

        def outcome(seq: int) -> Event:
            if problem is not None:
                return RunFailed(seq, now_ms, unique_id, run_seq,
                                 f"the function's checkpoint cannot be stored: {problem}",
                                 FailureKind.UNKNOWN)
            if deadline_ms and now_ms >= task.created_ms + deadline_ms:
                return RunFailed(seq, now_ms, unique_id, run_seq,
                                 f"the task's overall deadline of {deadline_ms} ms passed after "
                                 f"{task.slices + 1} slice(s)", FailureKind.DEADLINE)
            return RunContinued(seq, now_ms, unique_id, run_seq, checkpoint)

        return late + self._with_finish([Append(self._run_ended(unique_id, outcome))],
                                        unique_id)

    def recover(self, now_ms: int) -> list[Command]:
        """After replay: runs the restart interrupted. atLeastOnce runs again (not charged);
        atMostOnce fails with an error saying its run was lost. The decisions are logged."""
        events: list[Event] = []
        finished: list[Command] = []
        self._recover_schedules(now_ms, events)
        for unique_id, run_seq in sorted(self._running.items(), key=lambda item: item[1]):
            task = self._tasks[unique_id]
            if task.options.delivery_mode is DeliveryMode.AT_MOST_ONCE:
                events.append(self._emit(RunFailed(
                    self._seq(), now_ms, unique_id, run_seq,
                    "the run was lost when the queue restarted; atMostOnce tasks are not run again",
                    FailureKind.LOST)))
                finished.append(TaskFinished(task))
            else:
                events.append(self._emit(RunRequeued(
                    self._seq(), now_ms, unique_id, run_seq,
                    "the queue restarted during the run")))
        return [Append(tuple(events)), *finished] if events else []

    # ------------------------------------------------------------------ snapshots

    def counters(self) -> dict[str, int]:
        """State a snapshot must keep beyond the tasks (the records it was counted from go)."""
        return {"quota_day": self.quota.day, "quota_day_count": self.quota.day_count}

    def restore_counters(self, counters: dict[str, int]) -> None:
        self.quota.day = counters.get("quota_day", -1)
        self.quota.day_count = counters.get("quota_day_count", 0)

    def restore(self, task: Task) -> None:
        """Insert a task read from a snapshot and rebuild what derives from its state (the
        ready queue, its timer, the running set): the same rules ``apply`` follows."""
        self.restore_many((task,))

    def restore_many(self, tasks: Iterable[Task]) -> None:
        """``restore`` for a whole snapshot: one loop with the lookups hoisted (a start from a
        snapshot restores every live task, ~100,000 of them in the restart target's case)."""
        by_id = self._tasks
        queued, running, retry_wait = TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRY_WAIT
        unfinished, last_seq = 0, self.last_seq
        for task in tasks:
            unique_id, state, options = task.unique_id, task.state, task.options
            by_id[unique_id] = task
            task.timer = None
            if state is queued:
                unfinished += 1
                if task.started_ms is not None or options.delay_ms <= 0:
                    task.timer_token = 0
                    self._make_ready(task)
                    kind = None
                else:
                    kind, at_ms = TimerKind.START, task.created_ms + options.delay_ms
            elif state is running:
                unfinished += 1
                self._running[unique_id] = task.run_seq
                if self._own_group(task):
                    self._running_scheduled.add(unique_id)
                kind, at_ms = TimerKind.TIMEOUT, (task.started_ms or 0) + options.timeout_ms
            elif state is retry_wait:
                unfinished += 1
                kind, at_ms = TimerKind.WAKE, task.retry_at_ms or 0
            else:  # final (cancelled tasks too): kept until keepResult passes
                kind, at_ms = TimerKind.EXPIRE, (task.finished_ms or 0) + options.keep_result_ms
            if kind is not None:
                self._arm_timer(task, kind, unique_id, at_ms)
            if task.seq > last_seq or task.run_seq > last_seq:
                last_seq = max(last_seq, task.seq, task.run_seq)
        self._unfinished += unfinished
        self.last_seq = last_seq

    # ------------------------------------------------------------------ the clock

    def tick(self, now_ms: int, *, dispatch: bool = True) -> list[Command]:
        """Fire every timer due at ``now_ms`` and (unless ``dispatch`` is False, e.g. while the
        store refuses work) start ready tasks while slots are free."""
        events: list[Event] = []
        commands: list[Command] = []
        self._due.extend(self._wheel.advance(now_ms))
        while self._due:
            due, self._due = self._due, []
            for kind, unique_id, token in due:
                if kind is TimerKind.CRON:
                    found = self._schedules.get(unique_id)
                    if found is not None and found.timer_token == token:
                        found.timer, found.timer_token = None, 0
                        self._fire(found, now_ms, events)
                    continue
                task = self._tasks.get(unique_id)
                # A timer replaced or cancelled after it became due no longer speaks for the task.
                if task is not None and task.timer_token == token:
                    task.timer = None
                    task.timer_token = 0
                    self._on_timer(kind, task, now_ms, events, commands)
        for unique_id, due_ms in list(self._progress_due.items()):
            if due_ms <= now_ms:
                self._log_progress(self._tasks[unique_id], events)
        if dispatch:
            self._dispatch(now_ms, events, commands)
        return [Append(tuple(events)), *commands] if events else commands

    def _on_timer(self, kind: TimerKind, task: Task, now_ms: int, events: list[Event],
                  commands: list[Command]) -> None:
        unique_id = task.unique_id
        if kind is TimerKind.START and task.state is TaskState.QUEUED:
            self._make_ready(task)
        elif kind is TimerKind.WAKE and task.state is TaskState.RETRY_WAIT:
            fire(task, Trigger.WAKE)
            self._make_ready(task)
        elif kind is TimerKind.TIMEOUT and task.state is TaskState.RUNNING:
            run_seq = task.run_seq
            self._flush_progress(unique_id, events)
            # The run failed at its deadline, however late the driver noticed: retryAt counts
            # from there.
            started_ms = now_ms if task.started_ms is None else task.started_ms
            deadline_ms = started_ms + task.options.timeout_ms
            events.append(self._emit(RunFailed(
                self._seq(), min(now_ms, deadline_ms), unique_id, run_seq,
                f"cloud function timed out after {task.options.timeout_ms} ms",
                FailureKind.UNKNOWN)))
            commands.append(CancelRun(unique_id, run_seq))
            if task.state.is_final:
                commands.append(TaskFinished(task))
        elif kind is TimerKind.EXPIRE and task.state.is_final:
            events.append(self._emit(TaskPurged(self._seq(), now_ms, unique_id)))

    def _dispatch(self, now_ms: int, events: list[Event], commands: list[Command]) -> None:
        own_group = self.config.schedule_concurrency
        if own_group is not None:
            while len(self._running_scheduled) < own_group:
                unique_id = self._ready_scheduled.pop()
                if unique_id is None:
                    break
                self._start(self._tasks[unique_id], now_ms, events, commands)
        limit = self.run_limit
        while len(self._running) - len(self._running_scheduled) < limit:
            unique_id = self._ready.pop()
            if unique_id is None:
                return
            self._start(self._tasks[unique_id], now_ms, events, commands)

    def _start(self, task: Task, now_ms: int, events: list[Event],
               commands: list[Command]) -> None:
        started = RunStarted(self._seq(), now_ms, task.unique_id, task.attempt + 1)
        self.apply(started)
        events.append(started)
        options = task.options
        at_most_once = options.delivery_mode is DeliveryMode.AT_MOST_ONCE
        commands.append(Invoke(
            unique_id=task.unique_id, run_seq=started.seq, attempt=started.attempt,
            function=task.function, params=unpacked(task.params), timeout_ms=options.timeout_ms,
            deadline_ms=now_ms + options.timeout_ms,
            durable_seq=started.seq if at_most_once else task.seq,
            checkpoint=task.checkpoint, slice=task.slices))

    # ------------------------------------------------------------------ the fold

    def apply(self, event: Event) -> None:
        """Apply one event to the state. The only mutator, shared by live handling and replay."""
        self._appliers[type(event)](event)
        if event.seq > self.last_seq:
            self.last_seq = event.seq

    def _make_appliers(self) -> dict[type, Callable[[Any], None]]:
        return {
            TaskSubmitted: self._apply_submitted,
            RunStarted: self._apply_started,
            RunSucceeded: self._apply_succeeded,
            RunFailed: self._apply_failed,
            RunRequeued: self._apply_requeued,
            RunContinued: self._apply_continued,
            TaskCancelled: self._apply_cancelled,
            TaskPurged: self._apply_purged,
            ProgressReported: self._apply_progress,
            ScheduleSet: self._apply_schedule_event,
            SchedulePaused: self._apply_schedule_event,
            ScheduleDeleted: self._apply_schedule_event,
            ScheduleSkipped: self._apply_schedule_event,
        }

    def _apply_requeued(self, event: RunRequeued) -> None:
        task = self._end_run(event.unique_id, event.seq)
        fire(task, Trigger.REQUEUE)
        task.attempt -= 1
        self._make_ready(task)

    def _apply_continued(self, event: RunContinued) -> None:
        task = self._end_run(event.unique_id, event.seq)
        fire(task, Trigger.REQUEUE)
        task.attempt -= 1  # the next slice runs as the same attempt
        task.checkpoint = event.checkpoint
        task.slices += 1
        self._make_ready(task)

    def _apply_cancelled(self, event: TaskCancelled) -> None:
        task = self._tasks[event.unique_id]
        task.changed_seq = event.seq
        fire(task, Trigger.CANCEL)
        self._unready(task.unique_id)
        task.error = "the task was cancelled"
        task.retry_at_ms = None
        self._finish(task, event.t_ms)

    def _apply_purged(self, event: TaskPurged) -> None:
        task = self._tasks.pop(event.unique_id)
        self._set_timer(task, None, 0)

    def _apply_progress(self, event: ProgressReported) -> None:
        task = self._tasks[event.unique_id]
        task.changed_seq = event.seq
        task.progress, task.progress_ms = dict(event.progress), event.t_ms
        task.messages = event.messages
        task.progress_logged_ms = event.t_ms

    def _apply_submitted(self, event: TaskSubmitted) -> None:
        unique_id, t_ms, options = event.unique_id, event.t_ms, event.options
        task = Task(unique_id, event.function, pack_params(event.params), options,
                    event.priority, event.seq, t_ms)
        task.changed_seq = event.seq
        self._tasks[unique_id] = task
        self._unfinished += 1
        if event.schedule is None:  # a schedule's firings are not enqueues against the quota
            self.quota.counted(t_ms)
        else:
            task.schedule = event.schedule
            self._slot_fired(event)
        if options.delay_ms > 0:
            self._set_timer(task, TimerKind.START, t_ms + options.delay_ms)
        else:
            self._make_ready(task)

    def _apply_started(self, event: RunStarted) -> None:
        task = self._tasks[event.unique_id]
        if task.state is TaskState.RETRY_WAIT:
            # The wake is derived from retryAt, not logged; in replay the start implies it.
            fire(task, Trigger.WAKE)
        fire(task, Trigger.START)
        self._unready(task.unique_id)
        task.attempt = event.attempt
        task.run_seq = task.changed_seq = event.seq
        task.started_ms = event.t_ms
        task.retry_at_ms = None
        self._running[task.unique_id] = event.seq
        if self._own_group(task):
            self._running_scheduled.add(task.unique_id)
        self._set_timer(task, TimerKind.TIMEOUT, event.t_ms + task.options.timeout_ms)

    def _apply_succeeded(self, event: RunSucceeded) -> None:
        task = self._end_run(event.unique_id, event.seq)
        fire(task, Trigger.SUCCEED)
        task.result = event.result
        task.status_code = event.status_code
        task.error = None
        self._finish(task, event.t_ms)

    def _apply_failed(self, event: RunFailed) -> None:
        task = self._end_run(event.unique_id, event.seq)
        task.error = event.error
        task.status_code = event.status_code
        if self._gives_up(task, event.kind):
            fire(task, Trigger.GIVE_UP)
            self._finish(task, event.t_ms)
        else:
            fire(task, Trigger.RETRY_LATER)
            task.retry_at_ms = event.t_ms + task.options.backoff_ms
            self._set_timer(task, TimerKind.WAKE, task.retry_at_ms)

    @staticmethod
    def _gives_up(task: Task, kind: FailureKind) -> bool:
        if kind is FailureKind.LOST or kind is FailureKind.DEADLINE:
            return True
        if kind is FailureKind.UNKNOWN and task.options.delivery_mode is DeliveryMode.AT_MOST_ONCE:
            return True
        return task.attempt >= task.options.max_runs

    # ------------------------------------------------------------------ helpers

    def _seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def _emit(self, event: Event) -> Event:
        self.apply(event)
        return event

    def _with_finish(self, commands: list[Command], unique_id: str) -> list[Command]:
        task = self._tasks.get(unique_id)
        if task is not None and task.state.is_final:
            commands.append(TaskFinished(task))
        return commands

    def _live_task(self, unique_id: str, now_ms: int) -> Task:
        task = self._tasks.get(unique_id)
        if task is None or self._expired(task, now_ms):
            raise UnknownTaskError(unique_id)
        return task

    @staticmethod
    def _expired(task: Task, now_ms: int) -> bool:
        return (task.finished_ms is not None
                and now_ms >= task.finished_ms + task.options.keep_result_ms)

    def _own_group(self, task: Task) -> bool:
        return task.schedule is not None and self.config.schedule_concurrency is not None

    def _make_ready(self, task: Task) -> None:
        queue = self._ready_scheduled if self._own_group(task) else self._ready
        queue.push(task.unique_id, task.priority, task.seq)

    def _unready(self, unique_id: str) -> None:
        if not self._ready.discard(unique_id):
            self._ready_scheduled.discard(unique_id)

    def _end_run(self, unique_id: str, seq: int) -> Task:
        self._progress_due.pop(unique_id, None)
        task = self._tasks[unique_id]
        task.changed_seq = seq
        self._running.pop(unique_id, None)
        self._running_scheduled.discard(unique_id)
        self._set_timer(task, None, 0)
        return task

    def _finish(self, task: Task, t_ms: int) -> None:
        self._unfinished -= 1
        task.finished_ms = t_ms
        self._set_timer(task, TimerKind.EXPIRE, t_ms + task.options.keep_result_ms)

    def _cron_kind(self) -> TimerKind:
        return TimerKind.CRON

    def _set_timer(self, task: Any, kind: TimerKind | None, at_ms: int,
                   key: str | None = None) -> None:
        """Replace the one pending timer of a task (or, with ``key``, a schedule): a task waits
        for at most one time at once."""
        if task.timer is not None:
            self._wheel.cancel(task.timer)
            task.timer = None
        task.timer_token = 0
        if kind is not None:
            self._arm_timer(task, kind, task.unique_id if key is None else key, at_ms)

    def _arm_timer(self, task: Any, kind: TimerKind, key: str, at_ms: int) -> None:
        """Arm the timer of a task (or schedule) that has none: due now, it goes straight to
        ``_due``."""
        self._timer_tokens = token = self._timer_tokens + 1
        timer_key = (kind, key, token)
        task.timer_token = token
        handle = self._wheel.add(timer_key, at_ms)
        if handle is None:
            self._due.append(timer_key)
        else:
            task.timer = handle
