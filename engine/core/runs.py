"""What a run hands back, turned into events: outcomes, progress reports and checkpoints.

Every run outcome becomes an event here, so here is where what a run handed back is checked
against what the log can store. A result or checkpoint it cannot store (an integer beyond 64
bits, NaN, a value that is not JSON, text that is not Unicode, over the size cap) would kill the
log writer, and after a restart the task would run and kill it again. Instead the run fails as an
*unknown* outcome: the function ran, but what it handed back is lost. So an atMostOnce task fails
for good (its function must not run twice) and an atLeastOnce task is retried while its runs
last: at most its normal attempts, never forever. Error texts are cut to size and made valid
Unicode rather than refused.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from cloudqueue.engine.core.commands import Append, Command, TaskFinished
from cloudqueue.engine.core.errors import StaleRunError, ValidationError
from cloudqueue.engine.core.events import (
    Event,
    FailureKind,
    ProgressReported,
    RunContinued,
    RunFailed,
    RunRequeued,
    RunSucceeded,
)
from cloudqueue.engine.core.fold import TaskTable
from cloudqueue.engine.core.history import RESTART_REASON, storable_traceback
from cloudqueue.engine.core.options import DeliveryMode
from cloudqueue.engine.core.progress import PendingProgress, checkpoint_problem
from cloudqueue.engine.core.task import Task, storable_text, unstorable

# Build an event with the next seq, apply it, and return it (the core's).
Emit = Callable[[Callable[[int], Event]], Event]
# Fire the timers due at a time without starting runs (the core's tick).
CatchUp = Callable[[int], list[Command]]


class Runs:
    def __init__(self, table: TaskTable, progress: PendingProgress, emit: Emit,
                 catch_up: CatchUp, max_result_bytes: int) -> None:
        self._table = table
        self._progress = progress
        self._emit = emit
        self._catch_up = catch_up
        self._max_bytes = max_result_bytes

    def current(self, unique_id: str, run_seq: int) -> bool:
        return self._table.running.get(unique_id) == run_seq

    # ------------------------------------------------------------------ outcomes

    def succeeded(self, unique_id: str, run_seq: int, result: Any, now_ms: int,
                  status_code: int | None = None) -> list[Command]:
        """Record a run's success (a failure if its result cannot be stored). An outcome for a
        run that is no longer current (it timed out, or the task was requeued) is dropped:
        returns []."""
        late = self._timers_first(unique_id, run_seq, now_ms)
        if late is None or (late and not self.current(unique_id, run_seq)):
            return late or []
        problem = unstorable(result, "the result", self._max_bytes)
        if problem is not None:
            return late + self.failed(
                unique_id, run_seq, f"the function's result cannot be stored: {problem}",
                now_ms, FailureKind.UNKNOWN, status_code)
        events = self._run_ended(unique_id, lambda seq: RunSucceeded(
            seq, now_ms, unique_id, run_seq, result, status_code))
        return [*late, Append(events), TaskFinished(self._table.tasks[unique_id])]

    def failed(self, unique_id: str, run_seq: int, error: str, now_ms: int,
               kind: FailureKind = FailureKind.ERROR, status_code: int | None = None,
               traceback: str | None = None) -> list[Command]:
        """Record a failed run; the task retries after ``backoff`` or fails for good.
        ``traceback`` (an in-process function's) is kept cut to its innermost frames."""
        late = self._timers_first(unique_id, run_seq, now_ms)
        if late is None or (late and not self.current(unique_id, run_seq)):
            return late or []
        error = storable_text(error)
        if traceback is not None:
            traceback = storable_text(storable_traceback(traceback))
        events = self._run_ended(unique_id, lambda seq: RunFailed(
            seq, now_ms, unique_id, run_seq, error, kind, status_code, traceback))
        return late + self._with_finish([Append(events)], unique_id)

    def requeued(self, unique_id: str, run_seq: int, reason: str,
                 now_ms: int) -> list[Command]:
        """A run that did no countable work (host unreachable): no attempt is spent."""
        if not self.current(unique_id, run_seq):
            return []
        reason = storable_text(reason)
        return [Append(self._run_ended(unique_id, lambda seq: RunRequeued(
            seq, now_ms, unique_id, run_seq, reason)))]

    def continued(self, unique_id: str, run_seq: int, checkpoint: Any,
                  now_ms: int) -> list[Command]:
        """A run ended "not finished: continue from ``checkpoint``". The task runs again as the
        same attempt with the checkpoint, unless the checkpoint cannot be stored (not JSON,
        over ``MAX_CHECKPOINT_BYTES``: a failed run with an unknown outcome, as for a result) or
        its overall ``deadline`` has passed (failed for good)."""
        late = self._timers_first(unique_id, run_seq, now_ms)
        if late is None or (late and not self.current(unique_id, run_seq)):
            return late or []
        task = self._table.tasks[unique_id]
        problem = checkpoint_problem(checkpoint) or unstorable(
            checkpoint, "the checkpoint", self._max_bytes)
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

    def _timers_first(self, unique_id: str, run_seq: int, now_ms: int) -> list[Command] | None:
        """Before an outcome is recorded: None if its run is not current (the outcome is
        dropped); else what the timers due now did. An outcome handled at or past its run's
        deadline is late, whatever arrived first in a busy moment (the timeout timer and the
        answer race after a stall): the timers fire first, so the run times out and the late
        outcome changes nothing (the caller sees the run is no longer current)."""
        if self._table.running.get(unique_id) != run_seq:
            return None
        task = self._table.tasks[unique_id]
        started_ms = task.started_ms
        if started_ms is None or now_ms < started_ms + task.options.timeout_ms:
            return []
        return self._catch_up(now_ms)

    def _run_ended(self, unique_id: str, outcome: Callable[[int], Event]) -> tuple[Event, ...]:
        """A held progress report (logged first, so the final progress is durable), then the
        run's outcome, built with the next seq."""
        events: list[Event] = []
        self.flush_progress(unique_id, events)
        events.append(self._emit(outcome))
        return tuple(events)

    def _with_finish(self, commands: list[Command], unique_id: str) -> list[Command]:
        task = self._table.tasks.get(unique_id)
        if task is not None and task.state.is_final:
            commands.append(TaskFinished(task))
        return commands

    def interrupted(self, now_ms: int, events: list[Event], finished: list[Command]) -> None:
        """After a restart, the runs it interrupted (in the order they started): atLeastOnce
        runs again (not charged); atMostOnce fails, its run lost."""
        tasks = self._table.tasks
        for unique_id, run_seq in sorted(self._table.running.items(), key=lambda item: item[1]):
            task = tasks[unique_id]
            if task.options.delivery_mode is DeliveryMode.AT_MOST_ONCE:
                events.append(self._emit(partial(
                    RunFailed, t_ms=now_ms, unique_id=unique_id, run_seq=run_seq,
                    error="the run was lost when the queue restarted; atMostOnce tasks are not "
                          "run again", kind=FailureKind.LOST)))
                finished.append(TaskFinished(task))
            else:
                events.append(self._emit(partial(
                    RunRequeued, t_ms=now_ms, unique_id=unique_id, run_seq=run_seq,
                    reason=RESTART_REASON)))

    # ------------------------------------------------------------------ progress

    def report_progress(self, unique_id: str, run_seq: int, report: dict[str, Any],
                        now_ms: int) -> list[Command]:
        """A running task's progress (validated by ``progress.parse_progress``): shown at once,
        logged at most once per ``PROGRESS_WINDOW_MS`` (the latest wins).

        Raises:
            StaleRunError: ``run_seq`` is not the task's current run.
            ValidationError: the report cannot be stored.
        """
        if not self.current(unique_id, run_seq):
            raise StaleRunError(unique_id, run_seq)
        problem = unstorable(report, "the progress report", self._max_bytes)
        if problem is not None:
            raise ValidationError(problem)
        task = self._table.tasks[unique_id]
        if self._progress.hold(task, report, now_ms):
            return []
        events: list[Event] = []
        self.log_progress(task, events)
        return [Append(tuple(events))]

    def log_progress(self, task: Task, events: list[Event]) -> None:
        progress, progress_ms, messages = self._progress.take(task.unique_id)
        run_seq = task.run_seq
        events.append(self._emit(lambda seq: ProgressReported(
            seq, progress_ms, task.unique_id, run_seq, progress, messages)))

    def flush_progress(self, unique_id: str, events: list[Event]) -> None:
        """Log a report still held for its window before the run's outcome is logged."""
        if self._progress.holds(unique_id):
            self.log_progress(self._table.tasks[unique_id], events)
