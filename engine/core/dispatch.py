"""What the clock makes happen: a timer's effect, and runs started while slots are free.

A due timer acts on its task by its kind: a delayed task becomes ready (derived state only: the
task's fields do not change), a retry's backoff ends (a logged ``TaskWoken``), a run times out (a
logged ``RunFailed`` at its deadline, and the run is cancelled), a finished task's keepResult
ends (a logged ``TaskPurged``). Then ready tasks start, by ``(priority, seq)``, while their
concurrency group has a free slot: each start a logged ``RunStarted`` and an ``Invoke``.
"""

from __future__ import annotations

from collections.abc import Callable

from cloudqueue.engine.core.commands import CancelRun, Command, Invoke, TaskFinished
from cloudqueue.engine.core.events import (
    Event,
    FailureKind,
    RunFailed,
    RunStarted,
    TaskPurged,
    TaskWoken,
)
from cloudqueue.engine.core.fold import TaskTable
from cloudqueue.engine.core.options import DeliveryMode
from cloudqueue.engine.core.runs import Emit, Runs
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import Task, unpacked
from cloudqueue.engine.core.timers import TimerKind


class Dispatch:
    def __init__(self, table: TaskTable, runs: Runs, emit: Emit, next_seq: Callable[[], int],
                 apply: Callable[[Event], None], schedule_concurrency: int | None) -> None:
        self._table = table
        self._runs = runs
        self._emit = emit
        self._next_seq = next_seq  # the hot path (a run's start) builds its event directly
        self._apply = apply
        self._own_group = schedule_concurrency

    def timer_fired(self, kind: TimerKind, task: Task, now_ms: int, events: list[Event],
                    commands: list[Command]) -> None:
        unique_id, state, emit = task.unique_id, task.state, self._emit
        if kind is TimerKind.START and state is TaskState.QUEUED:
            self._table.make_ready(task)
        elif kind is TimerKind.WAKE and state is TaskState.RETRY_WAIT:
            events.append(emit(lambda seq: TaskWoken(seq, now_ms, unique_id)))
        elif kind is TimerKind.TIMEOUT and state is TaskState.RUNNING:
            run_seq, timeout_ms = task.run_seq, task.options.timeout_ms
            self._runs.flush_progress(unique_id, events)
            # The run failed at its deadline, however late the driver noticed: retryAt counts
            # from there.
            started_ms = now_ms if task.started_ms is None else task.started_ms
            failed_ms = min(now_ms, started_ms + timeout_ms)
            events.append(emit(lambda seq: RunFailed(
                seq, failed_ms, unique_id, run_seq,
                f"cloud function timed out after {timeout_ms} ms", FailureKind.TIMEOUT)))
            commands.append(CancelRun(unique_id, run_seq))
            if task.state.is_final:
                commands.append(TaskFinished(task))
        elif kind is TimerKind.EXPIRE and task.state.is_final:
            events.append(emit(lambda seq: TaskPurged(seq, now_ms, unique_id)))

    def fill(self, now_ms: int, run_limit: int, events: list[Event],
             commands: list[Command]) -> None:
        """Start ready tasks while their group has a free slot (schedules' firings first, when
        they have a group of their own)."""
        table, own_group = self._table, self._own_group
        if own_group is not None:
            while len(table.running_scheduled) < own_group:
                unique_id = table.ready_scheduled.pop()
                if unique_id is None:
                    break
                self._start(table.tasks[unique_id], now_ms, events, commands)
        if table.function_limits:
            self._fill_limited(now_ms, run_limit, events, commands)
            return
        while len(table.running) - len(table.running_scheduled) < run_limit:
            unique_id = table.ready.pop()
            if unique_id is None:
                return
            self._start(table.tasks[unique_id], now_ms, events, commands)

    def _fill_limited(self, now_ms: int, run_limit: int, events: list[Event],
                      commands: list[Command]) -> None:
        """``fill``'s ordinary group when some functions have a run limit of their own: the
        next task is the lowest ``(priority, seq)`` among the other tasks and those of the
        limited functions below their limit."""
        table = self._table
        limits, running, queues = (table.function_limits, table.running_by_function,
                                   table.ready_by_function)
        while len(table.running) - len(table.running_scheduled) < run_limit:
            best, source = table.ready.peek_entry(), table.ready
            for function, queue in queues.items():
                if running[function] < limits[function]:
                    entry = queue.peek_entry()
                    if entry is not None and (best is None or entry < best):
                        best, source = entry, queue
            if best is None:
                return
            source.pop()
            self._start(table.tasks[best[2]], now_ms, events, commands)

    def _start(self, task: Task, now_ms: int, events: list[Event],
               commands: list[Command]) -> None:
        unique_id, attempt = task.unique_id, task.attempt + 1
        started = RunStarted(self._next_seq(), now_ms, unique_id, attempt)
        self._apply(started)
        events.append(started)
        options = task.options
        at_most_once = options.delivery_mode is DeliveryMode.AT_MOST_ONCE
        commands.append(Invoke(
            unique_id=unique_id, run_seq=started.seq, attempt=attempt,
            function=task.function, params=unpacked(task.params), timeout_ms=options.timeout_ms,
            deadline_ms=now_ms + options.timeout_ms,
            durable_seq=started.seq if at_most_once else task.seq,
            checkpoint=task.checkpoint, slice=task.slices))



