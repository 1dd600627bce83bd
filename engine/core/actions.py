"""Operator actions: who acts, which tasks a bulk action takes, the audit list. Pure.

An operator (the app's master key, the server's operator token, or code embedding the engine)
may retry a finished task, run a waiting one now, cancel, pause and resume the app's dispatch,
and retry, cancel or purge many tasks at once by a filter (docs/operating.md, "Operator
actions"). Each action is logged as an ``ActionTaken`` record, who and what, followed in the
same batch by the facts it causes; ``AuditLog`` folds those records into the last
``MAX_AUDIT`` actions, which a snapshot keeps (``EngineCore.counters``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.events import ActionTaken
from cloudqueue.engine.core.options import _describe, check_function_name
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import Task, iso_ms
from cloudqueue.engine.core.value import value

MAX_AUDIT = 200  # actions the audit list keeps (the newest)
MAX_BULK = 10_000  # tasks one bulk action changes at most; the rest wait for the next request
MAX_VIA_CHARS = 64


@value
class Actor:
    """Who acts: ``by`` the credential (``master``, ``operator``, ``embedded``), ``via`` what
    the caller says it is (``cli``, ``dashboard``, ...; None: unsaid)."""

    by: str
    via: str | None = None


EMBEDDED = Actor("embedded")


def check_via(via: Any, field: str = "via") -> str | None:
    """A caller's name for itself: None, or 1 to 64 printable ASCII characters without spaces
    (it is stored in the log and shown in the audit list). Raises ``ValidationError``."""
    if via is None:
        return None
    if (isinstance(via, str) and 0 < len(via) <= MAX_VIA_CHARS and via.isascii()
            and via.isprintable() and " " not in via):
        return via
    raise ValidationError(f"{field} must be 1 to {MAX_VIA_CHARS} printable ASCII characters "
                          f"without spaces (e.g. cli), got {_describe(via)}", field)


class BulkAction(StrEnum):
    RETRY = "retry"
    CANCEL = "cancel"
    PURGE = "purge"


_FINAL = (TaskState.FAILED, TaskState.CANCELLED, TaskState.SUCCESS)
# the states each bulk action applies to (also its filter's default)
APPLIES_TO: dict[BulkAction, tuple[TaskState, ...]] = {
    BulkAction.RETRY: (TaskState.FAILED, TaskState.CANCELLED),
    BulkAction.CANCEL: (TaskState.QUEUED, TaskState.RETRY_WAIT),
    BulkAction.PURGE: (TaskState.SUCCESS, TaskState.FAILED, TaskState.CANCELLED),
}


@value
class TaskFilter:
    """Which tasks a bulk action takes: in one of ``states``, of ``function`` (None: any),
    created at or after ``created_from_ms`` and before ``created_to_ms`` (epoch ms; None: no
    bound)."""

    states: tuple[TaskState, ...]
    function: str | None = None
    created_from_ms: int | None = None
    created_to_ms: int | None = None

    def matches(self, task: Task) -> bool:
        return (task.state in self.states
                and (self.function is None or task.function == self.function)
                and (self.created_from_ms is None or task.created_ms >= self.created_from_ms)
                and (self.created_to_ms is None or task.created_ms < self.created_to_ms))

    def to_record(self) -> dict[str, Any]:
        """As the log keeps it (wire names, times in epoch ms; absent bounds left out)."""
        record: dict[str, Any] = {"state": [state.value for state in self.states]}
        for key, given in (("function", self.function), ("createdFrom", self.created_from_ms),
                           ("createdTo", self.created_to_ms)):
            if given is not None:
                record[key] = given
        return record


def bulk_filter(action: BulkAction | str, state: Any = None, function: Any = None,
                created_from: Any = None, created_to: Any = None) -> TaskFilter:
    """The filter of a bulk ``action``: ``state`` one state or several (default: every state
    the action applies to), ``function`` a name, ``created_from`` / ``created_to`` epoch ms.
    Raises ``ValidationError`` naming the field (``state``, ``function``, ``createdFrom``,
    ``createdTo``)."""
    action = BulkAction(action)
    allowed = APPLIES_TO[action]
    return TaskFilter(_states(action, state, allowed),
                      None if function is None else check_function_name(function),
                      _epoch_ms(created_from, "createdFrom"), _epoch_ms(created_to, "createdTo"))


def _states(action: BulkAction, state: Any, allowed: tuple[TaskState, ...]
            ) -> tuple[TaskState, ...]:
    if state is None:
        return allowed
    given = [state] if isinstance(state, str) else state
    if not isinstance(given, list | tuple) or not given:
        raise ValidationError(f"state must be a state or a non-empty list of states, got "
                              f"{_describe(state)}", "state")
    names = ", ".join(s.value for s in allowed)
    states: list[TaskState] = []
    for item in given:
        found = (TaskState(item) if isinstance(item, str)
                 and item in TaskState._value2member_map_ else None)
        if found is None or found not in allowed:
            shown = repr(item) if isinstance(item, str) else _describe(item)
            raise ValidationError(f"{action.value} applies to tasks that are {names}; state "
                                  f"{shown} is not one of them", "state")
        if found not in states:
            states.append(found)
    return tuple(sorted(states, key=allowed.index))


def _epoch_ms(given: Any, field: str) -> int | None:
    if given is None:
        return None
    if isinstance(given, bool) or not isinstance(given, int) or not 0 <= given < 1 << 53:
        raise ValidationError(f"{field} must be a time (epoch ms, or ISO-8601 over HTTP), got "
                              f"{_describe(given)}", field)
    return given


def selected(tasks: Iterable[Task], chosen: TaskFilter, live: Any) -> list[Task]:
    """The tasks ``chosen`` takes, oldest first (by submission seq), of those ``live`` says
    are still there (a finished task whose keepResult passed is gone, purge or not)."""
    return sorted((task for task in tasks if chosen.matches(task) and live(task)),
                  key=lambda task: task.seq)


@value
class BulkResult:
    """What a bulk action did: ``count`` tasks changed (a dry run: would change) of ``matched``
    that the filter takes now; ``count`` < ``matched`` when more match than one request
    changes (``MAX_BULK``, or the request's ``limit``)."""

    count: int
    matched: int
    dry_run: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {"count": self.count, "matched": self.matched, "dryRun": self.dry_run}


@value
class DispatchState:
    """Whether the app's dispatch is paused (no run starts; enqueues are still accepted), and
    since when (epoch ms)."""

    paused: bool
    paused_ms: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"paused": self.paused}
        if self.paused_ms is not None:
            wire["pausedAt"] = iso_ms(self.paused_ms)
        return wire


@value
class AuditEntry:
    """One operator action, as ``Engine.audit`` shows it: when (``at_ms``), who (``by``,
    ``via``), what (``action``: retry, run_now, cancel, pause, resume, purge), on which task
    (``target``) or which tasks (``filter``, as logged), how many tasks it changed, and the
    seq of its record."""

    seq: int
    at_ms: int
    action: str
    by: str
    via: str | None
    target: str | None
    filter: dict[str, Any] | None
    count: int

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"seq": self.seq, "at": iso_ms(self.at_ms),
                                "action": self.action, "by": self.by}
        if self.via is not None:
            wire["via"] = self.via
        if self.target is not None:
            wire["uniqueId"] = self.target
        if self.filter is not None:
            wire["filter"] = {key: iso_ms(given) if key in ("createdFrom", "createdTo")
                              else given for key, given in self.filter.items()}
        wire["count"] = self.count
        return wire


class AuditLog:
    """The last ``MAX_AUDIT`` actions, folded from the ``ActionTaken`` records (and kept in a
    snapshot, whose records it outlives)."""

    def __init__(self) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=MAX_AUDIT)

    def apply(self, event: ActionTaken) -> None:
        self._entries.append(AuditEntry(event.seq, event.t_ms, event.action, event.by,
                                        event.via, event.target, event.filter, event.count))

    def newest(self, limit: int) -> list[AuditEntry]:
        """Up to ``limit`` entries, newest first."""
        found: list[AuditEntry] = []
        for entry in reversed(self._entries):
            if len(found) >= limit:
                break
            found.append(entry)
        return found

    def to_record(self) -> list[list[Any]]:
        return [[e.seq, e.at_ms, e.action, e.by, e.via, e.target, e.filter, e.count]
                for e in self._entries]

    def restore(self, record: Any) -> None:
        self._entries.clear()
        for seq, at_ms, action, by, via, target, chosen, count in record or ():
            self._entries.append(AuditEntry(int(seq), int(at_ms), str(action), str(by), via,
                                            target, chosen, int(count)))
