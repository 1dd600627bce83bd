"""The tasks, and the fold of task events into them.

``TaskTable`` holds every task and what derives from the tasks' fields: the ready queues (by
``(priority, seq)``), the running set, each task's one timer, the count of unfinished tasks and
of tasks in each state (``by_state``: every transition goes through ``_fire``). An
applier sets a task's fields from an event and fires its state machine; then ``place`` derives
where the task belongs from its fields alone. A restore from a snapshot sets the fields and calls
the same ``place``: live, replay and restore cannot disagree on derived state. Each run's end
is also kept in the task's history (``Task.runs``, ``engine.core.history``), by the same appliers.

    queued      ready (or a START timer, while a first run's delay has not passed and no
                operator said run now: ``run_now_ms``)
    running     the running set, and a TIMEOUT timer at started + timeout
    retry_wait  a WAKE timer at retryAt
    final       an EXPIRE timer at finished + keepResult
"""

from __future__ import annotations

from collections.abc import Iterable

from cloudqueue.engine.core.events import (
    ActionTaken,
    FailureKind,
    ProgressReported,
    RunContinued,
    RunFailed,
    RunRequeued,
    RunStarted,
    RunSucceeded,
    TaskCancelled,
    TaskPurged,
    TaskRetried,
    TaskRunNow,
    TaskSubmitted,
    TaskWoken,
)
from cloudqueue.engine.core.history import (
    KEPT_RUNS,
    ActionRecord,
    RunOutcome,
    RunRecord,
    failure_outcome,
    requeue_outcome,
    with_action,
    with_run,
)
from cloudqueue.engine.core.options import DeliveryMode
from cloudqueue.engine.core.quotas import QuotaTracker
from cloudqueue.engine.core.ready_queue import ReadyQueue
from cloudqueue.engine.core.states import TaskState, Trigger, fire
from cloudqueue.engine.core.task import ABSENT, Task, pack_params
from cloudqueue.engine.core.timers import TimerKind, Timers

_QUEUED, _RUNNING, _RETRY_WAIT = TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRY_WAIT
_FINAL = frozenset(state for state in TaskState if state.is_final)
_START, _WAKE, _TIMEOUT, _EXPIRE = (TimerKind.START, TimerKind.WAKE, TimerKind.TIMEOUT,
                                    TimerKind.EXPIRE)


class TaskTable:
    """Not thread-safe: the core's one caller at a time."""

    def __init__(self, timers: Timers, quota: QuotaTracker,
                 schedule_concurrency: int | None) -> None:
        self.tasks: dict[str, Task] = {}
        self.ready = ReadyQueue()
        self.ready_scheduled = ReadyQueue()  # used when schedules have their own group
        self.running: dict[str, int] = {}  # uniqueId -> the current run's seq
        self.running_scheduled: set[str] = set()
        # Functions with a run limit of their own: their ready tasks wait in a queue per
        # function (the ordinary group's, whatever their schedule), so that a function at its
        # limit holds back only its own tasks; and their runs in flight are counted.
        self.function_limits: dict[str, int] = {}
        self.ready_by_function: dict[str, ReadyQueue] = {}
        self.running_by_function: dict[str, int] = {}
        self.unfinished = 0
        self.by_state = dict.fromkeys(TaskState, 0)  # tasks held in each state (metrics)
        # an operator action whose facts follow: (the seq its next fact has, how many facts
        # are still to come, the record each task it changes keeps)
        self._acting: tuple[int, int, ActionRecord] | None = None
        self._timers = timers
        self._arm = timers.arm
        self._quota = quota
        self._schedule_concurrency = schedule_concurrency

    def let_go(self) -> None:
        """Drop every task (``EngineCore.let_go``)."""
        self.tasks.clear()
        for queue in (self.ready, self.ready_scheduled, *self.ready_by_function.values()):
            queue.clear()
        self.running.clear()
        self.running_scheduled.clear()
        self.running_by_function.clear()
        self.unfinished = 0
        self.by_state = dict.fromkeys(TaskState, 0)

    # ------------------------------------------------------------------ where a task belongs

    def place(self, task: Task) -> None:
        """Put ``task`` where its fields say it belongs (after ``unplace``, or new: it has no
        timer)."""
        state = task.state
        if state is _QUEUED:
            delay_ms = task.options.delay_ms
            if delay_ms > 0 and task.started_ms is None and task.run_now_ms is None:
                self._arm(task, _START, task.created_ms + delay_ms, task.unique_id)
            elif self.function_limits and task.function in self.function_limits:
                self.ready_by_function[task.function].push(task.unique_id, task.priority,
                                                           task.seq)
            elif task.schedule is not None and self._schedule_concurrency is not None:
                self.ready_scheduled.push(task.unique_id, task.priority, task.seq)
            else:
                self.ready.push(task.unique_id, task.priority, task.seq)
        elif state is _RUNNING:
            unique_id = task.unique_id
            self.running[unique_id] = task.run_seq
            if self.function_limits and task.function in self.function_limits:
                self.running_by_function[task.function] += 1
            elif task.schedule is not None and self._schedule_concurrency is not None:
                self.running_scheduled.add(unique_id)
            self._arm(task, _TIMEOUT, (task.started_ms or 0) + task.options.timeout_ms,
                      unique_id)
        elif state is _RETRY_WAIT:
            self._arm(task, _WAKE, task.retry_at_ms or 0, task.unique_id)
        else:
            self._arm(task, _EXPIRE, task.expires_at_ms(), task.unique_id)

    def unplace(self, task: Task) -> None:
        """Take ``task`` out of where its current state put it (before its state changes)."""
        state, unique_id = task.state, task.unique_id
        if state is _QUEUED:
            if task.timer_token == 0:  # ready (or just taken from the ready queue to start)
                self.ready_queue(task).discard(unique_id)
        elif state is _RUNNING:
            del self.running[unique_id]
            if self.function_limits and task.function in self.function_limits:
                self.running_by_function[task.function] -= 1
            elif self.running_scheduled:
                self.running_scheduled.discard(unique_id)
        if task.timer_token:
            self._timers.clear(task)

    def make_ready(self, task: Task) -> None:
        """A delayed task's START timer fired: it may start now."""
        self.ready_queue(task).push(task.unique_id, task.priority, task.seq)

    def ready_queue(self, task: Task) -> ReadyQueue:
        """The queue ``task`` waits in while it is ready."""
        if self.function_limits and task.function in self.function_limits:
            return self.ready_by_function[task.function]
        if task.schedule is not None and self._schedule_concurrency is not None:
            return self.ready_scheduled
        return self.ready

    def set_function_limit(self, function: str, limit: int | None) -> None:
        """Let at most ``limit`` runs of ``function`` be in flight (None: no limit of its own).
        Its ready and running tasks move to where the new limit puts them."""
        if self.function_limits.get(function) == limit:
            return
        moving = [task for task in self.tasks.values() if task.function == function and (
            task.state is _RUNNING or (task.state is _QUEUED and task.timer_token == 0))]
        for task in moving:
            self.unplace(task)
        if limit is None:
            del self.function_limits[function]
            del self.ready_by_function[function], self.running_by_function[function]
        else:
            self.function_limits[function] = limit
            self.ready_by_function.setdefault(function, ReadyQueue())
            self.running_by_function.setdefault(function, 0)
        for task in moving:
            if task.state is _QUEUED:  # ready before, ready still (a delay's timer has fired)
                self.ready_queue(task).push(task.unique_id, task.priority, task.seq)
            else:
                self.place(task)

    def restore(self, tasks: Iterable[Task]) -> int:
        """Insert tasks read from a snapshot (fields set; derived state none) and place them.
        Returns the highest seq they name."""
        by_id, place, last_seq = self.tasks, self.place, 0
        unfinished, final, by_state = 0, _FINAL, self.by_state
        for task in tasks:
            by_id[task.unique_id] = task
            task.timer = None
            task.timer_token = 0
            by_state[task.state] += 1
            if task.state not in final:
                unfinished += 1
            place(task)
            if task.seq > last_seq:
                last_seq = task.seq
            if task.run_seq > last_seq:
                last_seq = task.run_seq
        self.unfinished += unfinished
        return last_seq

    # ------------------------------------------------------------------ appliers

    def submitted(self, event: TaskSubmitted) -> Task:
        task = Task(event.unique_id, event.function, pack_params(event.params), event.options,
                    event.priority, event.seq, event.t_ms)
        task.changed_seq = event.seq
        task.schedule = event.schedule
        self.tasks[event.unique_id] = task
        self.unfinished += 1
        self.by_state[_QUEUED] += 1
        if event.schedule is None:  # a schedule's firings are not enqueues against the quota
            self._quota.counted(event.t_ms)
        self.place(task)
        return task

    def started(self, event: RunStarted) -> None:
        task = self._changing(event.unique_id, event.seq)
        if task.state is _RETRY_WAIT:
            # A log written before wakes were logged: the start implies the wake.
            self._fire(task, Trigger.WAKE)
        self._fire(task, Trigger.START)
        task.attempt = event.attempt
        task.run_seq = event.seq
        task.started_ms = event.t_ms
        task.retry_at_ms = None
        self.place(task)

    def woken(self, event: TaskWoken) -> None:
        task = self._changing(event.unique_id, event.seq)
        self._fire(task, Trigger.WAKE)
        task.retry_at_ms = None
        self.place(task)

    def succeeded(self, event: RunSucceeded) -> None:
        task = self._changing(event.unique_id, event.seq)
        _ran(task, event.t_ms, _SUCCESS, event.status_code)
        self._fire(task, Trigger.SUCCEED)
        task.result = event.result
        task.status_code = event.status_code
        task.error = None
        self._finish(task, event.t_ms)

    def failed(self, event: RunFailed) -> None:
        task = self._changing(event.unique_id, event.seq)
        _ran(task, event.t_ms, failure_outcome(event.kind, event.error, event.status_code),
             event.status_code, event.error, event.traceback)
        task.error = event.error
        task.status_code = event.status_code
        if _gives_up(task, event.kind):
            self._fire(task, Trigger.GIVE_UP)
            self._finish(task, event.t_ms)
        else:
            self._fire(task, Trigger.RETRY_LATER)
            task.retry_at_ms = event.t_ms + task.options.retry_wait_ms(task.unique_id, task.attempt)
            self.place(task)

    def requeued(self, event: RunRequeued) -> None:
        task = self._changing(event.unique_id, event.seq)
        _ran(task, event.t_ms, requeue_outcome(event.reason), error=event.reason)
        self._fire(task, Trigger.REQUEUE)
        task.attempt -= 1
        self.place(task)

    def continued(self, event: RunContinued) -> None:
        task = self._changing(event.unique_id, event.seq)
        _ran(task, event.t_ms, _CONTINUED)
        self._fire(task, Trigger.REQUEUE)
        task.attempt -= 1  # the next slice runs as the same attempt
        task.checkpoint = event.checkpoint
        task.slices += 1
        self.place(task)

    def acting(self, event: ActionTaken) -> None:
        """An operator action: the ``count`` task facts logged right after it (consecutive
        seqs, in its batch) were its doing, and each of those tasks keeps it in its
        ``actions``."""
        self._acting = None if event.count <= 0 else (
            event.seq + 1, event.count,
            ActionRecord(event.t_ms, event.action, event.by, event.via, event.target is None))

    def _acted(self, task: Task, seq: int) -> None:
        acting = self._acting
        if acting is not None:
            next_seq, remaining, record = acting
            if next_seq == seq:
                task.actions = with_action(task.actions, record)
                self._acting = (seq + 1, remaining - 1, record) if remaining > 1 else None
            else:
                self._acting = None

    def cancelled(self, event: TaskCancelled) -> None:
        task = self._changing(event.unique_id, event.seq)
        self._acted(task, event.seq)
        self._fire(task, Trigger.CANCEL)
        task.error = "the task was cancelled"
        task.retry_at_ms = None
        self._finish(task, event.t_ms)

    def retried(self, event: TaskRetried) -> None:
        """Fresh runs: what the task's runs left is cleared; it is ready at once."""
        task = self._changing(event.unique_id, event.seq)
        self._acted(task, event.seq)
        self._fire(task, Trigger.RETRY)
        task.attempt = 0
        task.started_ms = task.finished_ms = task.status_code = task.retry_at_ms = None
        task.result, task.error = ABSENT, None
        task.checkpoint, task.slices = None, 0
        task.progress, task.progress_ms, task.messages = None, None, ()
        task.run_now_ms = event.t_ms
        self.unfinished += 1
        self.place(task)

    def run_now(self, event: TaskRunNow) -> None:
        """Ready at once: a retry's wait ends, a first run's delay no longer holds."""
        task = self._changing(event.unique_id, event.seq)
        self._acted(task, event.seq)
        if task.state is _RETRY_WAIT:
            self._fire(task, Trigger.WAKE)
            task.retry_at_ms = None
        task.run_now_ms = event.t_ms
        self.place(task)

    def purged(self, event: TaskPurged) -> None:
        self.remove(self.tasks[event.unique_id])

    def progress(self, event: ProgressReported) -> None:
        task = self.tasks[event.unique_id]
        task.changed_seq = event.seq
        task.progress, task.progress_ms = dict(event.progress), event.t_ms
        task.messages = event.messages

    def remove(self, task: Task) -> None:
        """The task is gone: purged, or withdrawn before the store made it durable."""
        del self.tasks[task.unique_id]
        self.unplace(task)
        self.by_state[task.state] -= 1
        if not task.state.is_final:
            self.unfinished -= 1

    def _fire(self, task: Task, trigger: Trigger) -> None:
        """Move ``task`` by ``trigger`` (``fire``), counting it in its new state."""
        before, by_state = task.state, self.by_state
        by_state[fire(task, trigger)] += 1  # (raises before counting when illegal)
        by_state[before] -= 1

    def _changing(self, unique_id: str, seq: int) -> Task:
        task = self.tasks[unique_id]
        task.changed_seq = seq
        self.unplace(task)
        return task

    def _finish(self, task: Task, t_ms: int) -> None:
        self.unfinished -= 1
        task.finished_ms = t_ms
        self.place(task)


_SUCCESS, _CONTINUED = RunOutcome.SUCCESS, RunOutcome.CONTINUED
_new_tuple = tuple.__new__


def _ran(task: Task, t_ms: int, outcome: RunOutcome, status_code: int | None = None,
         error: str | None = None, traceback: str | None = None) -> None:
    """Keep the run that just ended in the task's history (before its state moves on: its
    attempt and slice are still the run's). Every replayed run's end passes here: the record
    is built as the plain tuple it is, and appended directly while nothing is dropped."""
    started_ms = task.started_ms
    record = _new_tuple(RunRecord, (task.attempt, task.slices,
                                    t_ms if started_ms is None else started_ms, t_ms, outcome,
                                    status_code, error, traceback))
    runs = task.runs
    if traceback is None and len(runs) < KEPT_RUNS:
        task.runs = (*runs, record)
    else:
        task.runs = with_run(runs, record)


def _gives_up(task: Task, kind: FailureKind) -> bool:
    if kind is FailureKind.LOST or kind is FailureKind.DEADLINE:
        return True
    if ((kind is FailureKind.UNKNOWN or kind is FailureKind.TIMEOUT)
            and task.options.delivery_mode is DeliveryMode.AT_MOST_ONCE):
        return True
    return task.attempt >= task.options.max_runs
