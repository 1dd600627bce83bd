"""Decoding the queue's answers: a LeanCloud TaskInfo dict as a ``TaskInfo``, a schedule object
as a ``ScheduleInfo``, and the wire's times as epoch milliseconds."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from cloudqueue.engine.core.actions import AuditEntry, BulkResult, DispatchState
from cloudqueue.engine.core.errors import UnexpectedResponseError, ValidationError
from cloudqueue.engine.core.history import ActionRecord, RunRecord, outcome_named
from cloudqueue.engine.core.options import OPTION_NAMES, BackoffType, DeliveryMode, TaskOptions
from cloudqueue.engine.core.schedules import ScheduleInfo, ScheduleSpec
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import ABSENT, TaskInfo

_STATUS_STATES = {"queued": TaskState.QUEUED, "success": TaskState.SUCCESS,
                  "failed": TaskState.FAILED}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_LIST_LIMIT = 1000

def task_info_from_wire(wire: Any) -> TaskInfo:
    """A LeanCloud TaskInfo dict (with or without this queue's extension fields) as a TaskInfo.

    ``state`` comes from the ``state`` field, or from ``status`` when it is absent or unknown (a
    plain LeanCloud server sends no ``state``: ``failed`` then also covers a cancelled task).
    Missing extension fields read as ``function=""``, ``attempt=0``, ``max_runs=0``,
    ``created_ms=0``, ``schedule=None``, ``runs=()``. ``result`` is ``ABSENT`` unless the dict
    has a ``result`` key (a JSON null result stays None).

    Args:
        wire: the decoded JSON body of a task-info answer.

    Returns:
        The TaskInfo, equal to the server's own when the server is this queue.

    Raises:
        UnexpectedResponseError: the dict lacks ``uniqueId`` or ``status``, or a field has the
            wrong type.
    """
    if not isinstance(wire, Mapping):
        raise UnexpectedResponseError(f"a TaskInfo must be a JSON object, got {kind_of(wire)}")
    unique_id = wire.get("uniqueId")
    if not isinstance(unique_id, str):
        raise UnexpectedResponseError("the TaskInfo has no string uniqueId")
    return TaskInfo(
        unique_id=unique_id,
        state=_state(wire),
        function=_typed(wire, "function", str, ""),
        attempt=_typed(wire, "attempt", int, 0),
        max_runs=_typed(wire, "maxRuns", int, 0),
        created_ms=_time_ms(wire, "createdAt") or 0,
        started_ms=_time_ms(wire, "startedAt"),
        finished_ms=_time_ms(wire, "finishedAt"),
        status_code=_typed(wire, "statusCode", int, None),
        result=wire["result"] if "result" in wire else ABSENT,
        error=_typed(wire, "error", str, None),
        retry_at_ms=_time_ms(wire, "retryAt"),
        expires_ms=_time_ms(wire, "expiresAt"),
        schedule=_typed(wire, "schedule", str, None),
        slices=_typed(wire, "slices", int, 0),
        runs=_runs(wire),
        app_paused=wire.get("appPaused") is True,
        actions=_actions(wire),
        **_progress(wire),
    )


def _entries(wire: Mapping[str, Any], field: str, when: str
             ) -> list[tuple[Mapping[str, Any], int]]:
    """An extension array of objects (``runs``, ``actions``): each entry with its required
    time ``when`` as epoch ms; none when the field is absent."""
    entries = wire.get(field)
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise UnexpectedResponseError(f"the TaskInfo's {field} must be an array of objects")
    found = []
    for entry in entries:
        at = _time_ms(entry, when)
        if at is None:
            raise UnexpectedResponseError(f"an entry of the TaskInfo's {field} has no {when}")
        found.append((entry, at))
    return found


def _runs(wire: Mapping[str, Any]) -> tuple[RunRecord, ...]:
    """The ``runs`` extension: one ``RunRecord`` per entry (``durationMs`` is derived)."""
    what = "TaskInfo's run"
    records = []
    for run, started in _entries(wire, "runs", "startedAt"):
        outcome = _typed(run, "outcome", str, None, what)
        records.append(RunRecord(
            _typed(run, "attempt", int, 0, what), _typed(run, "slice", int, 0, what), started,
            _time_ms(run, "finishedAt"), None if outcome is None else outcome_named(outcome),
            _typed(run, "statusCode", int, None, what), _typed(run, "error", str, None, what),
            _typed(run, "traceback", str, None, what)))
    return tuple(records)


def _actions(wire: Mapping[str, Any]) -> tuple[ActionRecord, ...]:
    """The ``actions`` extension: one ``ActionRecord`` per operator action on the task."""
    what = "TaskInfo's action"
    return tuple(ActionRecord(at, _typed(action, "action", str, "", what),
                              _typed(action, "by", str, "", what),
                              _typed(action, "via", str, None, what), action.get("bulk") is True)
                 for action, at in _entries(wire, "actions", "at"))


def _progress(wire: Mapping[str, Any]) -> dict[str, Any]:
    """The ``progress`` extension: latest values, ``updatedAt`` and the last ``messages``."""
    progress = wire.get("progress")
    if not isinstance(progress, dict):
        return {}
    values = {k: v for k, v in progress.items() if k not in ("updatedAt", "messages")}
    messages = tuple((_time_ms(m, "at") or 0, str(m.get("message", "")))
                     for m in progress.get("messages") or () if isinstance(m, Mapping))
    return {"progress": values, "progress_ms": _time_ms(progress, "updatedAt"),
            "messages": messages}


def _state(wire: Mapping[str, Any]) -> TaskState:
    state = wire.get("state")
    if isinstance(state, str) and state in TaskState._value2member_map_:
        return TaskState(state)
    status = wire.get("status")
    if isinstance(status, str) and status in _STATUS_STATES:
        return _STATUS_STATES[status]
    raise UnexpectedResponseError(f"the TaskInfo's status {status!r} is not queued, success or "
                                  "failed")


def _typed(wire: Mapping[str, Any], key: str, kind: type, default: Any,
           what: str = "TaskInfo") -> Any:
    value = wire.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UnexpectedResponseError(f"the {what}'s {key} must be a {kind.__name__}, got "
                                      f"{kind_of(value)}")
    return value


def _time_ms(wire: Mapping[str, Any], key: str) -> int | None:
    """ISO-8601 (``2019-05-31T07:23:19.467Z``), LeanCloud's ``{"__type": "Date", "iso"}`` or
    epoch ms, as epoch ms."""
    value = wire.get(key)
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = value.get("iso")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            delta = dt - _EPOCH
            return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    raise UnexpectedResponseError(f"the TaskInfo's {key} is not a date: {kind_of(value)}")


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    return type(value).__name__



def dispatch_state_from_wire(wire: Any) -> DispatchState:
    """``{"paused", "pausedAt"}`` (pause, resume, dispatch) as a ``DispatchState``."""
    if not isinstance(wire, Mapping) or not isinstance(wire.get("paused"), bool):
        raise UnexpectedResponseError("the dispatch answer has no boolean paused")
    return DispatchState(wire["paused"], _time_ms(wire, "pausedAt"))


def bulk_result_from_wire(wire: Any) -> BulkResult:
    """``{"count", "matched", "dryRun"}`` (a bulk action's answer) as a ``BulkResult``."""
    if not isinstance(wire, Mapping):
        raise UnexpectedResponseError(f"a bulk answer must be a JSON object, got "
                                      f"{kind_of(wire)}")
    what = "bulk answer"
    count, matched = (_typed(wire, key, int, None, what) for key in ("count", "matched"))
    dry_run = wire.get("dryRun")
    if count is None or matched is None or not isinstance(dry_run, bool):
        raise UnexpectedResponseError("the bulk answer lacks its count, matched or dryRun")
    return BulkResult(count, matched, dry_run)


def audit_entry_from_wire(wire: Any) -> AuditEntry:
    """One entry of ``GET /audit`` as the ``AuditEntry`` the embedded engine answers with."""
    if not isinstance(wire, Mapping):
        raise UnexpectedResponseError(f"an audit entry must be a JSON object, got "
                                      f"{kind_of(wire)}")
    what = "audit entry"
    seq, count = (_typed(wire, key, int, None, what) for key in ("seq", "count"))
    action, by = (_typed(wire, key, str, None, what) for key in ("action", "by"))
    at_ms = _time_ms(wire, "at")
    if seq is None or count is None or action is None or by is None or at_ms is None:
        raise UnexpectedResponseError("the audit entry lacks its seq, at, action, by or count")
    shown = wire.get("filter")
    chosen = None
    if isinstance(shown, Mapping):
        chosen = {key: _time_ms(shown, key) if key in ("createdFrom", "createdTo") else value
                  for key, value in shown.items()}
    return AuditEntry(seq, at_ms, action, by, _typed(wire, "via", str, None, what),
                      _typed(wire, "uniqueId", str, None, what), chosen, count)


def fire_time_ms(value: Any) -> int:
    """One ``fireTimes`` / ``nextFireTimes`` entry (ISO-8601; UTC when it names no zone) as
    epoch ms."""
    when = None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            pass
    if when is None:
        raise UnexpectedResponseError(f"a fire time must be an ISO-8601 string, got "
                                      f"{kind_of(value)}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def schedule_info_from_wire(wire: Any) -> ScheduleInfo:
    """A schedule object (``PUT``/``GET /schedules/<name>``) as the ``ScheduleInfo`` the embedded
    engine answers with: ``info.to_wire()`` gives back what the server sent.

    Raises:
        UnexpectedResponseError: not an object, a field missing or of the wrong type, or not
            exactly one of ``cron`` and ``interval``.
    """
    if not isinstance(wire, Mapping):
        raise UnexpectedResponseError(f"a schedule must be a JSON object, got {kind_of(wire)}")
    what = "schedule"
    name, function, timezone = (_typed(wire, key, str, None, what)
                                for key in ("name", "function", "timezone"))
    if name is None or function is None or timezone is None:
        raise UnexpectedResponseError("the schedule lacks its name, function or timezone")
    cron = _typed(wire, "cron", str, None, what)
    interval = _typed(wire, "interval", int, None, what)
    if (cron is None) == (interval is None):
        raise UnexpectedResponseError("the schedule has not exactly one of cron and interval")
    paused = wire.get("paused", False)
    if not isinstance(paused, bool):
        raise UnexpectedResponseError(f"the schedule's paused must be a boolean, got "
                                      f"{kind_of(paused)}")
    try:
        mode = DeliveryMode(wire.get("deliveryMode", DeliveryMode.AT_LEAST_ONCE.value))
    except ValueError:
        raise UnexpectedResponseError("the schedule's deliveryMode is not one of "
                                      "atLeastOnce, atMostOnce") from None
    try:
        backoff_type = BackoffType(wire.get("backoffType", BackoffType.FIXED.value))
    except ValueError:
        raise UnexpectedResponseError("the schedule's backoffType is not one of "
                                      "fixed, exponential") from None
    default = TaskOptions()
    options = TaskOptions(
        attempts=_typed(wire, "attempts", int, default.attempts, what),
        backoff_ms=_typed(wire, "backoff", int, default.backoff_ms, what),
        backoff_type=backoff_type,
        backoff_max_ms=_typed(wire, "backoffMax", int, default.backoff_max_ms, what),
        delivery_mode=mode,
        timeout_ms=_typed(wire, "timeout", int, default.timeout_ms, what),
        keep_result_ms=_typed(wire, "keepResult", int, default.keep_result_ms, what))
    upcoming = wire.get("nextFireTimes") or []
    if not isinstance(upcoming, list):
        raise UnexpectedResponseError("the schedule's nextFireTimes is not an array")
    last = wire.get("lastFiredAt")
    spec = ScheduleSpec(name, function, wire.get("params"), cron, interval, timezone, options,
                        paused)
    return ScheduleInfo(spec, None if last is None else fire_time_ms(last),
                        tuple(fire_time_ms(value) for value in upcoming))


def segment(unique_id: str) -> str:
    """One percent-encoded path segment (``/``, ``?``, ``#``, ``%`` and the rest escaped)."""
    if not isinstance(unique_id, str):
        raise ValidationError(f"uniqueId must be a string, got {kind_of(unique_id)}",
                              "unique_id")
    return quote(unique_id, safe="")


def wire_options(given: Mapping[str, Any], parsed: TaskOptions) -> dict[str, Any]:
    """The options the caller gave, validated and normalised, in the wire's spelling."""
    wire: dict[str, Any] = {}
    for py_name, wire_name, field in OPTION_NAMES:
        if given.get(py_name) is None:
            continue
        value = getattr(parsed, field)
        wire[wire_name] = value.value if isinstance(value, StrEnum) else value
    return wire


def check_count(value: Any, name: str, maximum: int, field: str | None = None) -> int:
    """``value``, a whole number from 1 to ``maximum`` (else ``ValidationError`` on ``field``,
    default ``name``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ValidationError(f"{name} must be a whole number from 1 to {maximum}, got "
                              f"{value!r}", field or name)
    return value


def check_state(state: TaskState | str) -> TaskState:
    try:
        return TaskState(state)
    except ValueError:
        raise ValidationError(
            f"state must be one of {', '.join(s.value for s in TaskState)}, got {state!r}",
            "state") from None

