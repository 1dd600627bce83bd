"""The ``Queue`` protocol: one API for a queue in this process (``Engine``) and a remote one
(``QueueClient``).

Both implement every method here with the same names, arguments, units and answers: every
duration is in milliseconds (as the task options ``delay``, ``backoff``, ``timeout`` and
``keep_result`` are), a task's state is a ``TaskInfo``, a schedule's a ``ScheduleInfo``, and a
refusal is one of the typed errors of ``engine.core.errors``. Code written against ``Queue``
runs unchanged on either::

    async def resize_all(queue: Queue, images: list[str]) -> list[TaskInfo]:
        uids = [await queue.enqueue("resize", {"image": i}, timeout=30_000) for i in images]
        return [await queue.wait(uid, timeout=60_000) for uid in uids]
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from cloudqueue.engine.core.actions import MAX_BULK, AuditEntry, BulkResult, DispatchState
from cloudqueue.engine.core.errors import EngineError, ValidationError
from cloudqueue.engine.core.schedules import ScheduleInfo
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import TaskInfo


class _Page(NamedTuple):
    tasks: list[TaskInfo]
    total: int | None


class TaskPage(_Page):
    """What ``list_tasks`` answers: the tasks shown (newest first); how many match
    (``total``: kept as the queue works, so known without counting; None when the filter
    names a function or a time, which only a scan could count); and ``next``, the cursor of
    the page after this one (None: this is the last). Unpacks as
    ``tasks, total = await queue.list_tasks()``."""

    next: str | None

    def __new__(cls, tasks: list[TaskInfo], total: int | None, next: str | None = None
                ) -> TaskPage:
        page = super().__new__(cls, tasks, total)
        page.next = next
        return page


STATUSES = ("queued", "success", "failed")


def parse_cursor(cursor: str | None) -> int | None:
    """A page cursor (what ``TaskPage.next`` was) as the seq it stands for. Raises
    ``ValidationError`` for anything else."""
    if cursor is None:
        return None
    if (isinstance(cursor, str) and 0 < len(cursor) <= 20 and cursor.isascii()
            and cursor.isdigit()):
        return int(cursor)
    raise ValidationError("cursor must be the next of an earlier page of the same listing",
                          "cursor")


def task_filter(state: TaskState | str | None, status: str | None
                ) -> Callable[[TaskState], bool]:
    """Which states a listing keeps: one detailed ``state``, or every state of LeanCloud's
    ``status``. Raises ``ValidationError`` for both, or an unknown value."""
    if state is not None and status is not None:
        raise ValidationError("give state (the detailed one) or status (LeanCloud's: queued "
                              "means every unfinished task), not both", "status")
    if status is not None:
        if status not in STATUSES:
            raise ValidationError(f"status must be one of {', '.join(STATUSES)}", "status")
        return lambda found: found.wire_status == status
    if state is None:
        return lambda found: True
    if state not in {s.value for s in TaskState}:
        raise ValidationError(f"state must be one of {', '.join(s.value for s in TaskState)}",
                              "state")
    wanted = TaskState(state)
    return lambda found: found is wanted


class Queue(Protocol):
    """A task queue: tasks (enqueue, read, cancel, list, wait, watch), operator actions (retry,
    run now, pause and resume dispatch, bulk retry, cancel and purge, the audit list) and named
    schedules."""

    async def enqueue(self, function: str, params: Any = None, **options: Any) -> str:
        """Queue a task; its uniqueId once it is durable. Options as LeanCloud's, snake_case,
        durations in ms: attempts, backoff (backoff_type, backoff_max), delay, delivery_mode,
        keep_result, priority, timeout, unique_id, deadline."""
        ...

    async def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[str]:
        """Queue many tasks, all or none (items: ``{"function", "params", **options}``); their
        uniqueIds once all are durable. An error's ``index`` names the item refused."""
        ...

    async def enqueue_each(self, items: Iterable[Mapping[str, Any]]) -> list[str | EngineError]:
        """Queue many tasks, each on its own: in each item's place its uniqueId (durable) or
        the error that refused it."""
        ...

    async def get_task_info(self, unique_id: str) -> TaskInfo:
        """The task's state (``UnknownTaskError`` for an unknown or expired uniqueId)."""
        ...

    async def cancel(self, unique_id: str) -> TaskInfo:
        """Cancel a queued or retry-waiting task; its final info."""
        ...

    async def retry(self, unique_id: str) -> TaskInfo:
        """Queue a failed or cancelled task again, now (fresh runs, the same uniqueId); its
        info. ``InvalidTransitionError`` for a task not finished or one that succeeded."""
        ...

    async def run_now(self, unique_id: str) -> TaskInfo:
        """Make a task waiting for its delay or its retry ready at once; its info."""
        ...

    async def pause(self) -> DispatchState:
        """Pause dispatch: no run starts until ``resume`` (enqueues are still accepted)."""
        ...

    async def resume(self) -> DispatchState: ...

    async def dispatch_state(self) -> DispatchState:
        """Whether dispatch is paused, and since when."""
        ...

    async def retry_tasks(self, *, state: Any = None, function: str | None = None,
                          created_from: int | None = None, created_to: int | None = None,
                          dry_run: bool = False, limit: int = MAX_BULK) -> BulkResult:
        """Retry the failed or cancelled tasks a filter takes (``state``, ``function``,
        created in ``[created_from, created_to)``, epoch ms), oldest first, at most
        ``limit``; ``dry_run`` counts them only."""
        ...

    async def cancel_tasks(self, *, state: Any = None, function: str | None = None,
                           created_from: int | None = None, created_to: int | None = None,
                           dry_run: bool = False, limit: int = MAX_BULK) -> BulkResult:
        """Cancel the queued or retry-waiting tasks a filter takes (as ``retry_tasks``)."""
        ...

    async def purge_tasks(self, *, state: Any = None, function: str | None = None,
                          created_from: int | None = None, created_to: int | None = None,
                          dry_run: bool = False, limit: int = MAX_BULK) -> BulkResult:
        """Forget the finished tasks a filter takes (as ``retry_tasks``)."""
        ...

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        """The last ``limit`` operator actions, newest first."""
        ...

    async def list_tasks(self, state: TaskState | str | None = None,
                         limit: int = 100, *, status: str | None = None,
                         function: str | None = None, created_from: int | None = None,
                         created_to: int | None = None, cursor: str | None = None) -> TaskPage:
        """Up to ``limit`` tasks (in ``state``, or in LeanCloud's ``status``, of ``function``,
        created in ``[created_from, created_to)`` epoch ms, when given), newest first, their
        count, and the next page's cursor (pass it as ``cursor`` with the same filter)."""
        ...

    async def wait(self, unique_id: str, timeout: int | None = None) -> TaskInfo:
        """The task's info once it is final; ``TimeoutError`` after ``timeout`` ms (None: no
        limit)."""
        ...

    def watch(self, unique_id: str) -> AsyncIterator[tuple[str, TaskInfo]]:
        """Live updates as ``(type, info)``: ``state`` first, then ``queued``, ``running``,
        ``progress``, ``retry``, ``continued``, and a last ``finished`` (``UnknownTaskError``
        for an unknown task, at the latest from the first iteration)."""
        ...

    async def set_schedule(self, name: str, function: str, params: Any = None, *,
                           cron: str | None = None, interval: int | None = None,
                           timezone: str | None = None, paused: bool = False,
                           **options: Any) -> ScheduleInfo:
        """Create or replace a schedule: ``cron`` or ``interval`` (ms), in ``timezone``."""
        ...

    async def get_schedule(self, name: str, upcoming: int = 5) -> ScheduleInfo:
        """One schedule with its next ``upcoming`` fire times (``UnknownScheduleError``)."""
        ...

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name, each with its next fire time."""
        ...

    async def pause_schedule(self, name: str) -> ScheduleInfo: ...

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Fire again from now (slots missed while paused are not caught up)."""
        ...

    async def run_schedule_now(self, name: str) -> str:
        """Fire ``name`` once now, outside its slots (an operator action): the task's
        uniqueId."""
        ...

    async def delete_schedule(self, name: str) -> None: ...

    async def preview_schedule(self, *, cron: str | None = None, interval: int | None = None,
                               timezone: str | None = None, from_ms: int | None = None,
                               count: int = 5) -> list[int]:
        """The next ``count`` fire times (epoch ms) strictly after ``from_ms`` (default now),
        in ``timezone`` (None: the queue's default zone; ``QueueClient`` defaults to UTC)."""
        ...
