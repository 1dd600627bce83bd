"""EngineCore: the pure, deterministic queue. Requests and outcomes in, events and commands out.

Theory of operation
-------------------
The core owns every task's state (``TaskTable``: the tasks, a ready queue ordered by
``(priority, seq)``, the running set), every schedule (``ScheduleBook``) and their timers
(``Timers``: a delayed start, a retry's backoff, a run's timeout, the end of a result's
keepResult window, a schedule's next slot). It never reads a clock: each entry point takes
``now_ms``.

Every change is an event, and ``apply(event)`` is the one way state changes. The live entry
points (``submit``, ``cancel``, ``run_succeeded``, ``run_failed``, ``run_requeued``,
``run_continued``, ``tick``) check the request, build the event with the next ``seq``, ``apply``
it, and return commands: ``Append`` (log these events) first, then ``Invoke`` / ``CancelRun`` /
``TaskFinished``. An operator's action (``retry``, ``run_now``, ``set_paused``, ``bulk``, and
``cancel`` given an actor) logs an ``ActionTaken`` record before its facts; the audit list and
the paused state are folded from them like the tasks are. A restart rebuilds the state from a
snapshot (``restore_*``: fields set, then the same derivation ``apply`` ends with) and the
events after it (the same ``apply``), then ``recover(now_ms)`` decides the fate of runs the
crash interrupted and logs that decision too.

Worked example (concurrency 1, attempts 1, backoff 1000)::

    submit("a", now=0)        -> [Append(TaskSubmitted seq=1)]
    tick(0)                   -> [Append(RunStarted seq=2 attempt=1), Invoke(run_seq=2)]
    run_failed("a", 2, now=5) -> [Append(RunFailed seq=3)]       state retry_wait, retryAt 1005
    tick(1004)                -> []
    tick(1005)                -> [Append(TaskWoken seq=4, RunStarted seq=5 attempt=2), Invoke]
    run_failed("a", 5, now=9) -> [Append(RunFailed seq=6), TaskFinished("a")]   state failed

Derived state (ready queue, timers, the running set) is never logged: it follows from the
tasks' fields. A timer whose time passed while the queue was down fires at the first ``tick``.
Two things live outside the fold, by design, and are never in a snapshot: a progress report
held for its logging window (shown at once, logged when the window ends), and the undo of a
submission the store refused (``forget``: the log holds neither).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cloudqueue.engine.core.actions import (
    MAX_BULK,
    Actor,
    AuditEntry,
    AuditLog,
    BulkAction,
    BulkResult,
    DispatchState,
    TaskFilter,
    selected,
)
from cloudqueue.engine.core.commands import Append, Command, TaskFinished
from cloudqueue.engine.core.dispatch import Dispatch
from cloudqueue.engine.core.errors import (
    DuplicateTaskError,
    InvalidTransitionError,
    StaleRunError,
    UnknownTaskError,
)
from cloudqueue.engine.core.events import (
    ActionTaken,
    DispatchPaused,
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
    TaskRetried,
    TaskRunNow,
    TaskSubmitted,
    TaskWoken,
    dispatch_table,
)
from cloudqueue.engine.core.fold import TaskTable
from cloudqueue.engine.core.options import Limits, TaskOptions
from cloudqueue.engine.core.progress import PendingProgress
from cloudqueue.engine.core.quotas import Quotas, QuotaTracker
from cloudqueue.engine.core.runs import Runs
from cloudqueue.engine.core.schedule_ops import ScheduleBook
from cloudqueue.engine.core.schedules import Schedule, ScheduleSpec
from cloudqueue.engine.core.states import TaskState, Trigger, can_fire
from cloudqueue.engine.core.task import (
    MAX_RESULT_BYTES,
    Task,
    TaskInfo,
    expired,
)
from cloudqueue.engine.core.timers import TimerKey, TimerKind, Timers
from cloudqueue.engine.core.waiting import AppFacts, Waiting, delayed_until, why_waiting


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


class EngineCore:
    """The queue's state and rules for one app. Not thread-safe: one caller at a time."""

    def __init__(self, config: CoreConfig | None = None, *, start_ms: int = 0) -> None:
        self.config = config or CoreConfig()
        self.concurrency = self.config.concurrency
        # a lower limit on runs in flight set from outside while the machine is overloaded
        # (engine/runtime/pacing.py); None: ``concurrency`` alone
        self.run_cap: int | None = None
        self.quota = QuotaTracker(self.config.quotas)
        self._timers = Timers(start_ms, self.config.wheel_tick_ms, self.config.wheel_slots)
        self._table = TaskTable(self._timers, self.quota, self.config.schedule_concurrency)
        self._book = ScheduleBook(self._timers, self._emit_new, self._table.tasks.get)
        self.progress = PendingProgress()
        self._runs = Runs(self._table, self.progress, self._emit_new,
                          lambda now_ms: self.tick(now_ms, dispatch=False),
                          self.config.max_result_bytes)
        self._dispatch = Dispatch(self._table, self._runs, self._emit_new, self._seq, self.apply,
                                  self.config.schedule_concurrency)
        self.last_seq = 0
        # an operator paused the app's dispatch at this time (None: it runs): no run starts
        self.paused_ms: int | None = None
        self.audit_log = AuditLog()  # the last operator actions
        self._appliers = self._make_appliers()

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        return len(self._table.tasks)

    @property
    def unfinished(self) -> int:
        """Tasks held that have not finished (what the ``held`` quota counts)."""
        return self._table.unfinished

    @property
    def running_count(self) -> int:
        return len(self._table.running)

    @property
    def ready_count(self) -> int:
        table = self._table
        return len(table.ready) + sum(len(queue) for queue in table.ready_by_function.values())

    def tasks_by_state(self) -> dict[TaskState, int]:
        """How many tasks are held in each state (kept as events are applied)."""
        return dict(self._table.by_state)

    def ready_heads(self) -> list[Task]:
        """Of each ready queue, the task that was made ready longest ago (in push order: a
        restart pushes them again in the order the snapshot and the log give them)."""
        table = self._table
        queues = [table.ready, table.ready_scheduled, *table.ready_by_function.values()]
        heads = [queue.first() for queue in queues if queue]
        return [table.tasks[unique_id] for unique_id in heads if unique_id is not None]

    @property
    def has_ready(self) -> bool:
        """Some task may start now (in either concurrency group; none while paused)."""
        table = self._table
        if self.paused_ms is not None:
            return False
        return bool(table.ready) or bool(table.ready_scheduled) or any(
            table.ready_by_function.values())

    def waiting(self, unique_id: str, now_ms: int, host_up: bool | None) -> Waiting | None:
        """Why the task waits (``engine.core.waiting``), None for one running or finished.
        Raises ``UnknownTaskError``."""
        task = self._live_task(unique_id, now_ms)
        table, own_group = self._table, self.config.schedule_concurrency
        if task.schedule is not None and own_group is not None \
                and task.function not in table.function_limits:
            running, limit = len(table.running_scheduled), own_group
        else:
            running = len(table.running) - len(table.running_scheduled)
            limit = self.run_limit
        function_limit = table.function_limits.get(task.function)
        return why_waiting(task, now_ms, AppFacts(
            paused=self.paused_ms is not None, host_up=host_up, running=running,
            run_limit=limit, function_limit=function_limit,
            function_running=table.running_by_function.get(task.function, 0)))

    @property
    def run_limit(self) -> int:
        """Runs of the ordinary group allowed in flight now: ``concurrency``, or ``run_cap``
        while that is lower."""
        return self.concurrency if self.run_cap is None else min(self.concurrency, self.run_cap)

    @property
    def can_start(self) -> bool:
        """A tick would start a run now: a task is ready and its group has a free slot (under
        ``run_cap`` too), and dispatch is not paused."""
        table, own_group = self._table, self.config.schedule_concurrency
        if self.paused_ms is not None:
            return False
        if table.ready_scheduled and own_group is not None \
                and len(table.running_scheduled) < own_group:
            return True
        if len(table.running) - len(table.running_scheduled) >= self.run_limit:
            return False
        return bool(table.ready) or any(
            queue and table.running_by_function[function] < table.function_limits[function]
            for function, queue in table.ready_by_function.items())

    def set_function_limit(self, function: str, limit: int | None) -> None:
        """At most ``limit`` runs of ``function`` in flight, within ``concurrency`` (None: no
        limit of its own). Configuration, like ``concurrency``: not logged."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ValueError(f"a function's concurrency must be a whole number >= 1, got "
                             f"{limit!r}")
        self._table.set_function_limit(function, limit)

    def task_info(self, unique_id: str, now_ms: int) -> TaskInfo:
        """Raises ``UnknownTaskError`` for an id never seen or whose keepResult has passed.
        The state in memory, which may run ahead of the log: a reader outside waits until
        ``task_info_at``'s seq is durable."""
        return self.info(self._live_task(unique_id, now_ms))

    def task_info_at(self, unique_id: str, now_ms: int) -> tuple[TaskInfo, int]:
        """``task_info`` and the seq of the task's latest logged change: the info may be shown
        once that seq is durable (``Engine.get_task_info``)."""
        task = self._live_task(unique_id, now_ms)
        return self.info(task), task.changed_seq

    def info(self, task: Task) -> TaskInfo:
        """The task as a reader sees it: with a progress report held for its window, and
        whether the app's dispatch is paused (an unfinished task's)."""
        info = self.progress.shown(task, task.info())
        if self.paused_ms is not None and not task.state.is_final:
            info = replace(info, app_paused=True)
        return info

    @property
    def ticked_ms(self) -> int:
        """The time of the latest ``tick``: every timer due by then has fired."""
        return self._timers.current_ms

    def next_deadline_ms(self) -> int | None:
        """When ``tick`` next has something to do by the clock (None: only a request or an
        outcome can make work)."""
        timer, report = self._timers.next_ms(), self.progress.next_due_ms()
        if timer is None or report is None:
            return timer if report is None else report
        return min(timer, report)

    def tasks(self) -> list[Task]:
        return list(self._table.tasks.values())

    def page(self, keep: Callable[[Task], bool], limit: int, below_seq: int | None = None
             ) -> tuple[list[Task], int | None]:
        """Up to ``limit`` tasks ``keep`` takes, newest first, of those with a seq below
        ``below_seq`` (None: all); and the seq to continue below if more may follow (the
        last one shown's), else None. The table holds tasks in seq order (they are inserted
        as submitted, a snapshot is written and read in that order), so a page costs the
        tasks it passes over, not the whole table."""
        shown: list[Task] = []
        for task in reversed(self._table.tasks.values()):
            if below_seq is not None and task.seq >= below_seq:
                continue
            if keep(task):
                if len(shown) == limit:
                    return shown, shown[-1].seq
                shown.append(task)
        return shown, None

    def task(self, unique_id: str) -> Task | None:
        return self._table.tasks.get(unique_id)

    def run_is_current(self, unique_id: str, run_seq: int) -> bool:
        return self._runs.current(unique_id, run_seq)

    def run_checkpoint(self, unique_id: str, run_seq: int) -> tuple[Any, int]:
        """The checkpoint run ``run_seq`` continues from and how many slices came before it
        (``(None, 0)`` on a first slice).

        Raises:
            StaleRunError: ``run_seq`` is not the task's current run.
        """
        if not self.run_is_current(unique_id, run_seq):
            raise StaleRunError(unique_id, run_seq)
        task = self._table.tasks[unique_id]
        return task.checkpoint, task.slices

    # ------------------------------------------------------------------ requests

    def submit(self, unique_id: str, function: str, params: Any, options: TaskOptions,
               now_ms: int) -> list[Command]:
        """Accept a new task (already validated). Raises ``DuplicateTaskError`` while the
        uniqueId is held."""
        existing = self._table.tasks.get(unique_id)
        if existing is not None:  # the whole check, as for a batch (rare: a reused uniqueId)
            return self._submit(((unique_id, function, params, options),), now_ms, one=True)
        self.quota.check(now_ms, self._table.unfinished)
        self.last_seq = seq = self.last_seq + 1
        event = TaskSubmitted(seq, now_ms, unique_id, function, params, options,
                              now_ms if options.priority is None else options.priority)
        self.apply(event)
        return [Append((event,))]

    def submit_many(self, batch: Sequence[tuple[str, str, Any, TaskOptions]],
                    now_ms: int) -> list[Command]:
        """Accept ``(uniqueId, function, params, options)`` tasks (already validated) all or
        none: one ``Append`` holds them, so they share one write. Raises
        ``DuplicateTaskError`` (naming the item) if an id is held or given twice in the batch,
        ``QuotaExceededError`` if the batch would break a quota; then nothing changed."""
        return self._submit(batch, now_ms, one=False)

    def submit_each(self, batch: Sequence[tuple[str, str, Any, TaskOptions]], now_ms: int,
                    indexes: Sequence[int] | None = None
                    ) -> tuple[list[Command], list[DuplicateTaskError | None]]:
        """Accept what can be accepted of ``batch``, in one ``Append``: an item whose id is held,
        or given to an earlier item too, is refused with a ``DuplicateTaskError`` in its place of
        the returned list (None where accepted), naming the item by its position in ``batch``
        or by ``indexes`` (the items' places in the caller's own list). Raises
        ``QuotaExceededError`` if the accepted items would break a quota together; then
        nothing changed."""
        tasks = self._table.tasks
        refused: list[DuplicateTaskError | None] = [None] * len(batch)
        accepted: list[tuple[str, str, Any, TaskOptions]] = []
        first_at: dict[str, int] = {}
        for position, item in enumerate(batch):
            unique_id, index = item[0], position if indexes is None else indexes[position]
            first = first_at.setdefault(unique_id, index)
            existing = tasks.get(unique_id)
            if first != index:
                refused[position] = DuplicateTaskError.within_batch(unique_id, index, first)
            elif existing is not None and not expired(existing, now_ms):
                refused[position] = DuplicateTaskError(unique_id, existing.state.wire_status,
                                                       existing.state.value, index=index)
            else:
                accepted.append(item)
        return (self._submit(accepted, now_ms, one=False) if accepted else []), refused

    def _submit(self, batch: Sequence[tuple[str, str, Any, TaskOptions]], now_ms: int, *,
                one: bool) -> list[Command]:
        tasks = self._table.tasks
        first_at: dict[str, int] = {}
        freed: set[str] = set()  # held by tasks whose keepResult ran out: purged first
        for index, item in enumerate(batch):
            unique_id = item[0]
            first = first_at.setdefault(unique_id, index)
            if first != index:
                raise DuplicateTaskError.within_batch(unique_id, index, first)
            existing = tasks.get(unique_id)
            if existing is not None:
                if not expired(existing, now_ms):
                    raise DuplicateTaskError(unique_id, existing.state.wire_status,
                                             existing.state.value,
                                             index=None if one else index)
                freed.add(unique_id)
        self.quota.check(now_ms, self._table.unfinished, len(batch))
        events: list[Event] = []
        emit = self._emit
        for unique_id, function, params, options in batch:
            if freed and unique_id in freed:
                events.append(emit(TaskPurged(self._seq(), now_ms, unique_id)))
            events.append(emit(TaskSubmitted(
                self._seq(), now_ms, unique_id, function, params, options,
                now_ms if options.priority is None else options.priority)))
        return [Append(tuple(events))]

    def cancel(self, unique_id: str, now_ms: int, actor: Actor | None = None) -> list[Command]:
        """Cancel a queued or retry-waiting task (``actor``: logged as an operator action, who
        did it first). Raises ``UnknownTaskError`` or ``InvalidTransitionError`` (running or
        finished tasks)."""
        task = self._live_task(unique_id, now_ms)
        if not can_fire(task.state, Trigger.CANCEL):
            raise InvalidTransitionError(unique_id, task.state.value, Trigger.CANCEL.value)
        events = self._action(actor, "cancel", now_ms, target=unique_id)
        events.append(self._emit(TaskCancelled(self._seq(), now_ms, unique_id)))
        return [Append(tuple(events)), TaskFinished(task)]

    # ------------------------------------------------------------------ operator actions

    def retry(self, unique_id: str, now_ms: int, actor: Actor) -> list[Command]:
        """Queue a failed or cancelled task again: fresh runs (attempt 0), the same uniqueId,
        params and options, ready at once. Raises ``UnknownTaskError``, or
        ``InvalidTransitionError`` (a task not finished, or one that succeeded: its result
        stands)."""
        task = self._live_task(unique_id, now_ms)
        if not can_fire(task.state, Trigger.RETRY):
            why = ("it succeeded: its result stands; enqueue it anew to run it again"
                   if task.state is TaskState.SUCCESS else "it has not finished")
            raise InvalidTransitionError(unique_id, task.state.value, Trigger.RETRY.value,
                                         reason=why)
        events = self._action(actor, "retry", now_ms, target=unique_id)
        events.append(self._emit(TaskRetried(self._seq(), now_ms, unique_id)))
        return [Append(tuple(events))]

    def run_now(self, unique_id: str, now_ms: int, actor: Actor) -> list[Command]:
        """Make a task that waits for its delay or for its retry ready at once (it starts when
        a slot is free). Raises ``UnknownTaskError``, or ``InvalidTransitionError`` (a task
        that is not waiting for either)."""
        task = self._live_task(unique_id, now_ms)
        if not self._waiting_for_time(task, now_ms):
            why = ("it waits only for a free slot" if task.state is TaskState.QUEUED
                   else "it is not waiting for a delay or a retry")
            raise InvalidTransitionError(unique_id, task.state.value, "run_now", reason=why)
        events = self._action(actor, "run_now", now_ms, target=unique_id)
        events.append(self._emit(TaskRunNow(self._seq(), now_ms, unique_id)))
        return [Append(tuple(events))]

    def _waiting_for_time(self, task: Task, now_ms: int) -> bool:
        return (task.state is TaskState.RETRY_WAIT
                or delayed_until(task, now_ms) is not None)

    def set_paused(self, paused: bool, now_ms: int, actor: Actor) -> list[Command]:
        """Pause the app's dispatch (no run starts; runs in flight finish; enqueues are still
        accepted) or resume it. Nothing is logged when it is already so."""
        if (self.paused_ms is not None) == paused:
            return []
        events = self._action(actor, "pause" if paused else "resume", now_ms)
        events.append(self._emit(DispatchPaused(self._seq(), now_ms, paused)))
        return [Append(tuple(events))]

    def dispatch_state(self) -> DispatchState:
        return DispatchState(self.paused_ms is not None, self.paused_ms)

    def bulk(self, action: BulkAction, chosen: TaskFilter, now_ms: int, actor: Actor, *,
             dry_run: bool = False, limit: int = MAX_BULK) -> tuple[list[Command], BulkResult]:
        """Retry, cancel or purge the tasks ``chosen`` takes (``filter.states`` among those
        ``action`` applies to), oldest first, at most ``limit``: one action record and a fact
        per task, in one ``Append``. ``dry_run``: nothing changes, the count is what would.
        Nothing is logged when no task matches."""
        tasks = selected(self._table.tasks.values(), chosen,
                         lambda task: not expired(task, now_ms))
        taken = tasks[:max(0, min(limit, MAX_BULK))]
        result = BulkResult(len(taken), len(tasks), dry_run)
        if dry_run or not taken:
            return [], result
        events = self._action(actor, action.value, now_ms, chosen=chosen, count=len(taken))
        finished: list[Command] = []
        facts: dict[BulkAction, type[TaskRetried | TaskCancelled | TaskPurged]] = {
            BulkAction.RETRY: TaskRetried, BulkAction.CANCEL: TaskCancelled,
            BulkAction.PURGE: TaskPurged}
        fact = facts[action]
        for task in taken:
            events.append(self._emit(fact(self._seq(), now_ms, task.unique_id)))
            if action is BulkAction.CANCEL:
                finished.append(TaskFinished(task))
        return [Append(tuple(events)), *finished], result

    def audit(self, limit: int) -> list[AuditEntry]:
        """The last ``limit`` operator actions, newest first."""
        return self.audit_log.newest(limit)

    def _action(self, actor: Actor | None, action: str, now_ms: int, *,
                target: str | None = None, chosen: TaskFilter | None = None,
                count: int = 1) -> list[Event]:
        """The record of an operator action (none without an ``actor``), applied."""
        if actor is None:
            return []
        return [self._emit(ActionTaken(
            self._seq(), now_ms, action, actor.by, actor.via, target,
            None if chosen is None else chosen.to_record(),
            count if target is not None or chosen is not None else 0))]

    def forget(self, unique_id: str) -> None:
        """Undo a submission the store could not make durable (disk full): the log holds
        neither it nor this undo. Such a task never ran (a run waits for its submission to be
        durable), so nothing else refers to it."""
        task = self._table.tasks.get(unique_id)
        if task is None:
            return
        self._table.remove(task)
        self.progress.drop(unique_id)
        if task.schedule is None:
            self.quota.uncounted(task.created_ms)

    # ------------------------------------------------------------------ runs (runs.py)

    def run_succeeded(self, unique_id: str, run_seq: int, result: Any, now_ms: int,
                      status_code: int | None = None) -> list[Command]:
        return self._runs.succeeded(unique_id, run_seq, result, now_ms, status_code)

    def run_failed(self, unique_id: str, run_seq: int, error: str, now_ms: int,
                   kind: FailureKind = FailureKind.ERROR, status_code: int | None = None,
                   traceback: str | None = None) -> list[Command]:
        return self._runs.failed(unique_id, run_seq, error, now_ms, kind, status_code,
                                 traceback)

    def run_requeued(self, unique_id: str, run_seq: int, reason: str,
                     now_ms: int) -> list[Command]:
        return self._runs.requeued(unique_id, run_seq, reason, now_ms)

    def run_continued(self, unique_id: str, run_seq: int, checkpoint: Any,
                      now_ms: int) -> list[Command]:
        return self._runs.continued(unique_id, run_seq, checkpoint, now_ms)

    def report_progress(self, unique_id: str, run_seq: int, report: dict[str, Any],
                        now_ms: int) -> list[Command]:
        return self._runs.report_progress(unique_id, run_seq, report, now_ms)

    # ------------------------------------------------------------------ schedules

    def set_schedule(self, spec: ScheduleSpec, now_ms: int) -> list[Command]:
        return [Append((self._emit(ScheduleSet(self._seq(), now_ms, spec)),))]

    def pause_schedule(self, name: str, paused: bool, now_ms: int) -> list[Command]:
        self._book.get(name)
        return [Append((self._emit(SchedulePaused(self._seq(), now_ms, name, paused)),))]

    def delete_schedule(self, name: str, now_ms: int) -> list[Command]:
        self._book.get(name)
        return [Append((self._emit(ScheduleDeleted(self._seq(), now_ms, name)),))]

    def schedule(self, name: str) -> Schedule:
        """Raises ``UnknownScheduleError``."""
        return self._book.get(name)

    def schedules(self) -> list[Schedule]:
        return self._book.all()

    def run_schedule_now(self, name: str, unique_id: str, now_ms: int, actor: Actor
                         ) -> list[Command]:
        """An operator fires schedule ``name`` once now, outside its slots: a task of its
        function, params and options, ``unique_id`` its own (an ordinary task: the schedule's
        slots and their catch-up are untouched). Raises ``UnknownScheduleError``, or
        ``DuplicateTaskError`` while ``unique_id`` is held."""
        spec = self._book.get(name).spec
        held = self._table.tasks.get(unique_id)
        if held is not None:
            raise DuplicateTaskError(unique_id, held.state.wire_status, held.state.value)
        events = self._action(actor, "run_schedule", now_ms, target=unique_id)
        priority = now_ms if spec.options.priority is None else spec.options.priority
        events.append(self._emit(TaskSubmitted(self._seq(), now_ms, unique_id, spec.function,
                                               spec.params, spec.options, priority)))
        return [Append(tuple(events))]

    # ------------------------------------------------------------------ restart

    def recover(self, now_ms: int, *, failover: bool = False) -> list[Command]:
        """After replay: runs the restart interrupted. atLeastOnce runs again (not charged);
        atMostOnce fails with an error saying its run was lost. Schedules' missed slots: one
        catch-up, or (``failover``: the app was dispatched by another node until moments ago)
        every missed slot (``ScheduleBook.recover``). The decisions are logged."""
        events: list[Event] = []
        finished: list[Command] = []
        self._book.recover(now_ms, events, every_slot=failover)
        self._runs.interrupted(now_ms, events, finished)
        return [Append(tuple(events)), *finished] if events else []

    def let_go(self) -> None:
        """Let go of every task and timer at once: for the core of an engine closed because its
        app is another node's now. The core's parts refer to one another, so the core dropped
        whole would keep every task until a full garbage collection (in a server, up to 15
        minutes); emptied here, the tasks go by reference counting. It holds nothing after."""
        self._table.let_go()
        self._timers.let_go()

    def counters(self) -> dict[str, Any]:
        """State a snapshot must keep beyond the tasks (the records it was counted from go):
        the day's enqueue count, since when dispatch is paused, the audit list."""
        counters: dict[str, Any] = {"quota_day": self.quota.day,
                                    "quota_day_count": self.quota.day_count}
        if self.paused_ms is not None:
            counters["paused_ms"] = self.paused_ms
        audit = self.audit_log.to_record()
        if audit:
            counters["audit"] = audit
        return counters

    def restore_counters(self, counters: dict[str, Any]) -> None:
        self.quota.day = counters.get("quota_day", -1)
        self.quota.day_count = counters.get("quota_day_count", 0)
        self.paused_ms = counters.get("paused_ms")
        self.audit_log.restore(counters.get("audit"))

    def restore(self, task: Task) -> None:
        """Insert a task read from a snapshot; what derives from it is rebuilt by the rules
        ``apply`` follows."""
        self.restore_many((task,))

    def restore_many(self, tasks: Iterable[Task]) -> None:
        self.last_seq = max(self.last_seq, self._table.restore(tasks))

    def restore_schedule(self, found: Schedule) -> None:
        """A schedule read from a snapshot."""
        self._book.restore(found)

    # ------------------------------------------------------------------ the clock

    def tick(self, now_ms: int, *, dispatch: bool = True) -> list[Command]:
        """Fire every timer due at ``now_ms`` and (unless ``dispatch`` is False, e.g. while the
        store refuses work, or an operator paused dispatch) start ready tasks while slots are
        free."""
        events: list[Event] = []
        commands: list[Command] = []
        tasks, fired, timers = self._table.tasks, Timers.fired, self._timers
        while due := timers.due(now_ms, self._timer_order):
            for kind, key, token in due:
                if kind is TimerKind.CRON:
                    self._book.due(key, token, now_ms, events)
                    continue
                task = tasks.get(key)
                # A timer replaced or cancelled after it became due no longer speaks for the task.
                if fired(task, token):
                    assert task is not None
                    self._dispatch.timer_fired(kind, task, now_ms, events, commands)
        for unique_id in self.progress.due(now_ms):
            self._runs.log_progress(tasks[unique_id], events)
        if dispatch and self.paused_ms is None:
            self._dispatch.fill(now_ms, self.run_limit, events, commands)
        return [Append(tuple(events)), *commands] if events else commands

    # ------------------------------------------------------------------ the fold

    def apply(self, event: Event) -> None:
        """Apply one event to the state: the one way state changes, shared by live handling,
        replay and every tool that reads the log."""
        self._appliers[type(event)](event)
        if event.seq > self.last_seq:
            self.last_seq = event.seq

    def _make_appliers(self) -> dict[type, Callable[[Any], None]]:
        """One applier per registered event (``dispatch_table`` refuses a table missing one)."""
        table, book = self._table, self._book
        return dispatch_table({
            TaskSubmitted: self._apply_submitted,
            RunStarted: table.started,
            TaskWoken: table.woken,
            RunSucceeded: table.succeeded,
            RunFailed: table.failed,
            RunRequeued: table.requeued,
            RunContinued: table.continued,
            TaskCancelled: table.cancelled,
            TaskPurged: table.purged,
            TaskRetried: table.retried,
            TaskRunNow: table.run_now,
            DispatchPaused: self._apply_paused,
            ActionTaken: self._apply_action,
            ProgressReported: table.progress,
            ScheduleSet: book.apply,
            SchedulePaused: book.apply,
            ScheduleDeleted: book.apply,
            ScheduleSkipped: book.apply,
        })

    def _apply_action(self, event: ActionTaken) -> None:
        self.audit_log.apply(event)
        self._table.acting(event)

    def _apply_paused(self, event: DispatchPaused) -> None:
        self.paused_ms = event.t_ms if event.paused else None

    def _apply_submitted(self, event: TaskSubmitted) -> None:
        self._table.submitted(event)
        if event.schedule is not None:
            self._book.slot_fired(event)

    # ------------------------------------------------------------------ helpers

    def _timer_order(self, key: TimerKey) -> int:
        """Among timers due at the same time, a task's fires by its submission seq (a
        schedule's first, then by name): what a restore rebuilds the same way."""
        kind, name, _ = key
        task = None if kind is TimerKind.CRON else self._table.tasks.get(name)
        return 0 if task is None else task.seq

    def _seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def _emit(self, event: Event) -> Event:
        self.apply(event)
        return event

    def _emit_new(self, make: Callable[[int], Event]) -> Event:
        """The event ``make`` builds with the next seq, applied (the parts' way to emit)."""
        self.last_seq = seq = self.last_seq + 1
        event = make(seq)
        self.apply(event)
        return event

    def _live_task(self, unique_id: str, now_ms: int) -> Task:
        task = self._table.tasks.get(unique_id)
        if task is None or expired(task, now_ms):
            raise UnknownTaskError(unique_id)
        return task
