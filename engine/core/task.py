"""The task record the core keeps, the read-only ``TaskInfo`` it hands out, and what a task
can keep: a run's result, checkpoint or error must fit the log (``unstorable``,
``storable_text``) and every answer must be valid JSON (``json_safe``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgpack

from cloudqueue.engine.core.errors import ValidationError
from cloudqueue.engine.core.history import ActionRecord, RunRecord, in_flight
from cloudqueue.engine.core.options import MAX_PARAMS_DEPTH, TaskOptions, check_params
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.value import value

# A run's result as the log stores it (packed): a log record is capped at
# engine.core.framing.MAX_RECORD_BYTES (16 MiB), and a snapshot keeps a task's params, result
# and checkpoint in one row, so params (options.MAX_PARAMS_BYTES) and result get 4 MiB each.
# The HTTP invoker refuses an answer over its own cap while reading it.
MAX_RESULT_BYTES = 4 * 1024 * 1024
# A run's error text (an exception's message, a host's error body) is cut to this many characters.
MAX_ERROR_CHARS = 16 * 1024

_packer = msgpack.Packer(use_bin_type=True)  # the log's own settings


def unstorable(value: Any, what: str, max_bytes: int) -> str | None:
    """Why ``value`` cannot be stored in the log and answered as JSON, or None: it must be plain
    JSON (no integer beyond 64 bits, no NaN or Infinity, no other types, nested at most 65
    levels), its text valid Unicode (JSON can carry a lone surrogate, UTF-8 cannot), and its
    packed size at most ``max_bytes`` (``check_params``, as for params)."""
    try:
        check_params(value, what, max_depth=MAX_PARAMS_DEPTH + 1, max_bytes=max_bytes)
    except ValidationError as exc:
        return str(exc)
    return None


def storable_text(text: str, max_chars: int = MAX_ERROR_CHARS) -> str:
    """``text`` as the log can store it: cut to ``max_chars`` characters, lone surrogates
    (which UTF-8 cannot encode) replaced by ``?``."""
    if len(text) > max_chars:
        text = f"{text[:max_chars]}... ({len(text) - max_chars} more characters)"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode()
    return text


def json_safe(item: Any) -> Any:
    """``item`` with every NaN or infinity replaced by None (JSON has neither), so an answer is
    valid JSON even if such a value was stored before the queue refused them; ``item`` itself
    (no copy) when it holds none."""
    kind = item.__class__
    if kind is str or kind is int or kind is bool or item is None:
        return item
    if kind is float:
        return item if math.isfinite(item) else None
    return _finite_copy(item) if _has_non_finite(item) else item


def _has_non_finite(item: Any) -> bool:
    stack = [item]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _finite_copy(item: Any) -> Any:
    if isinstance(item, float):
        return item if math.isfinite(item) else None
    if isinstance(item, dict):
        return {key: _finite_copy(v) for key, v in item.items()}
    if isinstance(item, list | tuple):
        return [_finite_copy(v) for v in item]
    return item


# Params whose encoding is over this many bytes (estimated) are kept packed (``pack_params``).
PACK_PARAMS_ABOVE = 4 * 1024


class PackedParams:
    """A task's large params, kept as the msgpack bytes the log stores (their encoded size)
    instead of Python objects (~5x that for a typical 1 MB JSON body: a dict, a str and an
    int object per field); decoded when a run starts (``EngineCore._start``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"PackedParams({len(self.data)} bytes)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PackedParams) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]

    def unpack(self) -> Any:
        return msgpack.unpackb(self.data, raw=False)


def pack_params(params: Any) -> Any:
    """``params`` as a task keeps them: a ``PackedParams`` when they are a large object or
    array, else ``params`` themselves (small params, the common case, stay as they are and
    cost one quick look). Params the log could not encode are left as they are."""
    kind = params.__class__
    if kind is dict:
        if not params or (len(params) <= 16 and _flat_and_small(params)):
            return params
    elif kind is not list:
        return params  # a scalar: a string is already about its encoded size
    if not _larger_than(params, PACK_PARAMS_ABOVE):
        return params
    try:
        return PackedParams(_packer.pack(params))
    except (ValueError, OverflowError, TypeError):  # the log will refuse them anyway
        return params


def unpacked(params: Any) -> Any:
    """The params value a run is given (``PackedParams`` decoded)."""
    return params.unpack() if params.__class__ is PackedParams else params


def _flat_and_small(params: dict[str, Any]) -> bool:
    """A dict of scalars whose strings are short: small, for sure."""
    size = 0
    for key, item in params.items():
        kind = item.__class__
        if kind is str:
            size += len(item)
        elif kind is dict or kind is list or kind is tuple:
            return False
        size += len(key) + 9
    return size <= PACK_PARAMS_ABOVE


def _larger_than(value: Any, budget: int) -> bool:
    """Whether ``value``'s encoding is (roughly) over ``budget`` bytes; stops as soon as it
    knows, so a large value costs no more to judge than a small one."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = item.__class__
        if kind is str:
            budget -= 1 + len(item)
        elif kind is dict:
            budget -= 1 + len(item)
            for key, child in item.items():
                if budget < 0:
                    return True
                budget -= len(key) if key.__class__ is str else 9
                stack.append(child)
        elif kind is list or kind is tuple:
            budget -= 1 + len(item)
            if budget >= 0:
                stack.extend(item)
        else:
            budget -= 9
        if budget < 0:
            return True
    return False


class _Absent:
    """Marks a field that has no value (distinct from a JSON ``null`` result)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "ABSENT"  # one of a kind: a copy or an unpickled task names this same object


ABSENT: Any = _Absent()


@dataclass(slots=True, eq=False)
class Task:
    """One task's live state. Mutated only by ``EngineCore.apply``."""

    unique_id: str
    function: str
    params: Any
    options: TaskOptions
    priority: int | float
    seq: int
    created_ms: int
    state: TaskState = TaskState.QUEUED
    attempt: int = 0
    run_seq: int = 0
    started_ms: int | None = None
    finished_ms: int | None = None
    status_code: int | None = None
    result: Any = ABSENT
    error: str | None = None
    retry_at_ms: int | None = None
    timer: Any = None
    timer_token: int = 0
    schedule: str | None = None  # the schedule whose firing this is
    progress: dict[str, Any] | None = None
    progress_ms: int | None = None
    messages: tuple[tuple[int, str], ...] = ()
    # the runs that ended, oldest first, the last history.KEPT_RUNS (a task that never ran
    # holds the one empty tuple)
    runs: tuple[RunRecord, ...] = ()
    checkpoint: Any = None  # what the last slice handed on (continuation)
    slices: int = 0  # runs that ended "continue" so far
    # when an operator made the task ready at once (run now, or a retry): its delay no longer
    # holds (``TaskTable.place``); None: it never was
    run_now_ms: int | None = None
    # the operator actions on it (retry, run now, cancel), oldest first, the last
    # history.KEPT_ACTIONS
    actions: tuple[ActionRecord, ...] = ()
    # derived: the seq of the latest logged event that changed this task (0 for a task restored
    # from a snapshot, which is durable); readers outside show it once that seq is durable
    changed_seq: int = 0

    def expires_at_ms(self) -> int:
        """When a finished task's keepResult ends (its EXPIRE timer)."""
        return (self.finished_ms or 0) + self.options.keep_result_ms

    def info(self) -> TaskInfo:
        return TaskInfo(
            unique_id=self.unique_id,
            state=self.state,
            function=self.function,
            attempt=self.attempt,
            max_runs=self.options.max_runs,
            created_ms=self.created_ms,
            started_ms=self.started_ms,
            finished_ms=self.finished_ms,
            status_code=self.status_code,
            result=self.result,
            error=self.error,
            retry_at_ms=self.retry_at_ms if self.state is TaskState.RETRY_WAIT else None,
            expires_ms=self.expires_at_ms() if self.finished_ms is not None else None,
            schedule=self.schedule,
            progress=self.progress,
            progress_ms=self.progress_ms,
            messages=self.messages,
            slices=self.slices,
            runs=(in_flight(self.runs, self.attempt, self.slices, self.started_ms)
                  if self.state is TaskState.RUNNING and self.started_ms is not None
                  else self.runs),
            actions=self.actions,
        )


def expired(task: Task, now_ms: int) -> bool:
    """The task's keepResult window has passed: its uniqueId is free (it stays in memory until
    its purge is logged)."""
    return task.finished_ms is not None and now_ms >= task.expires_at_ms()


@value
class TaskInfo:
    """A snapshot of one task, as ``get_task_info`` returns it.

    ``status`` is LeanCloud's three-valued status; ``state`` is the detailed one. ``result`` is
    ``ABSENT`` until the task succeeds; for a function host it is the host's whole JSON body
    (``{"result": v}``, docs/protocol.md §1.5), and in-process functions are wrapped the same way.
    """

    unique_id: str
    state: TaskState
    function: str
    attempt: int
    max_runs: int
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    status_code: int | None
    result: Any
    error: str | None
    retry_at_ms: int | None
    expires_ms: int | None
    schedule: str | None = None
    progress: dict[str, Any] | None = None
    progress_ms: int | None = None
    messages: tuple[tuple[int, str], ...] = ()
    slices: int = 0
    # the latest runs, oldest first; a run in flight is the last, without an end
    runs: tuple[RunRecord, ...] = ()
    app_paused: bool = False  # unfinished, and the app's dispatch is paused: no run starts
    actions: tuple[ActionRecord, ...] = ()  # operator actions on the task, oldest first

    @property
    def status(self) -> str:
        return self.state.wire_status

    @property
    def return_value(self) -> Any:
        """The function's own return value (``result["result"]``), or None."""
        if isinstance(self.result, dict):
            return self.result.get("result")
        return None

    def to_wire(self) -> dict[str, Any]:
        """The LeanCloud TaskInfo dict, plus extension fields (state, function, attempt,
        maxRuns, createdAt, startedAt, expiresAt, schedule, slices, progress, runs,
        appPaused). Absent fields are left out."""
        wire: dict[str, Any] = {"uniqueId": self.unique_id, "status": self.status}
        if self.finished_ms is not None:
            wire["finishedAt"] = iso_ms(self.finished_ms)
        if self.status_code is not None:
            wire["statusCode"] = self.status_code
        if self.result is not ABSENT and self.state is TaskState.SUCCESS:
            wire["result"] = json_safe(self.result)
        if self.error is not None and self.state is not TaskState.SUCCESS:
            wire["error"] = self.error
        if self.retry_at_ms is not None:
            wire["retryAt"] = iso_ms(self.retry_at_ms)
        wire.update(self._extensions())
        return wire

    def _extensions(self) -> dict[str, Any]:
        """cloudqueue's own fields, beside LeanCloud's."""
        extra: dict[str, Any] = {"state": self.state.value, "function": self.function,
                                 "attempt": self.attempt, "maxRuns": self.max_runs,
                                 "createdAt": iso_ms(self.created_ms)}
        optional = {"startedAt": self.started_ms, "expiresAt": self.expires_ms}
        extra.update({k: iso_ms(v) for k, v in optional.items() if v is not None})
        if self.schedule is not None:
            extra["schedule"] = self.schedule
        if self.slices:
            extra["slices"] = self.slices
        if self.app_paused:
            extra["appPaused"] = True
        if self.progress is not None:
            extra["progress"] = {**json_safe(self.progress),
                                 "updatedAt": iso_ms(self.progress_ms or 0),
                                 "messages": [{"at": iso_ms(t), "message": m}
                                              for t, m in self.messages]}
        if self.runs:
            extra["runs"] = [run_to_wire(run) for run in self.runs]
        if self.actions:
            extra["actions"] = [action_to_wire(record) for record in self.actions]
        return extra


def run_to_wire(run: RunRecord) -> dict[str, Any]:
    """An entry of ``runs`` in task info (docs/protocol.md §1.5): absent values left out."""
    wire: dict[str, Any] = {"attempt": run.attempt, "slice": run.slice,
                            "startedAt": iso_ms(run.started_ms)}
    if run.finished_ms is not None:
        wire["finishedAt"] = iso_ms(run.finished_ms)
        wire["durationMs"] = run.finished_ms - run.started_ms
    if run.outcome is not None:
        wire["outcome"] = str(run.outcome)
    if run.status_code is not None:
        wire["statusCode"] = run.status_code
    if run.error is not None:
        wire["error"] = run.error
    if run.traceback is not None:
        wire["traceback"] = run.traceback
    return wire


def action_to_wire(record: ActionRecord) -> dict[str, Any]:
    """An entry of ``actions`` in task info (docs/protocol.md §1.5)."""
    wire: dict[str, Any] = {"at": iso_ms(record.at_ms), "action": record.action,
                            "by": record.by}
    if record.via is not None:
        wire["via"] = record.via
    if record.bulk:
        wire["bulk"] = True
    return wire


def iso_ms(epoch_ms: int) -> str:
    """Epoch ms as ISO-8601 UTC with milliseconds and ``Z``: ``2019-05-31T07:23:19.467Z``."""
    dt = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{epoch_ms % 1000:03d}Z"
