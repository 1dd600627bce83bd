"""An async Python client for a remote queue speaking LeanCloud Cloud Queue's REST protocol.

It mirrors the embedded ``Engine`` API (same option names, same validator, same ``TaskInfo``,
same typed errors), so a service can move between an in-process queue and a remote one::

    async with QueueClient("http://127.0.0.1:3100", app_id, master_key=master_key) as queue:
        uid = await queue.enqueue("resize", {"image": "cat.png"}, attempts=3, backoff=1000)
        info = await queue.wait(uid, timeout_s=60)      # info.status == "success"

Requests are signed as the SDK signs them (``X-LC-Sign: md5(ts + key),ts[,master]``), with the
master key when one is given (enqueue, cancel, list and schedules need it), else with the app
key. Keys never appear in an error message or a repr.

Answers map to ``engine.core.errors``: by the body's ``type`` and fields when the server sends
them (this queue), else by status and ``code`` (LeanCloud): 400 ``ValidationError`` (the server's
message), 401 ``UnauthorizedError``, 403 ``ForbiddenError``, 404 ``UnknownTaskError``
(``UnknownScheduleError`` for a schedule), 409 ``DuplicateTaskError`` (enqueue) or
``InvalidTransitionError`` (cancel), 503 ``LogPoisonedError`` or ``EngineClosedError``, 507
``DiskFullError``; plus this module's ``QuotaExceededError`` (429), ``QueueUnavailableError``
(cannot reach the queue) and ``UnexpectedResponseError`` (an answer that is not the protocol's).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import math
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from cloudqueue.adapters.auth import sign
from cloudqueue.engine.core.cron import MAX_PREVIEW, check_interval, check_timezone, parse_cron
from cloudqueue.engine.core.errors import (
    ERROR_TYPES,
    ConfigError,
    CorruptionKind,
    DiskFullError,
    DuplicateTaskError,
    EngineClosedError,
    EngineError,
    ForbiddenError,
    InvalidTransitionError,
    LogCorruptError,
    LogError,
    LogPoisonedError,
    OutcomeUnknownError,
    StaleRunError,
    UnauthorizedError,
    UnknownScheduleError,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.options import (
    OPTION_NAMES,
    WIRE_OPTION_NAMES,
    TaskOptions,
    check_function_name,
    check_params,
    parse_options,
)
from cloudqueue.engine.core.quotas import QuotaExceededError as CoreQuotaExceededError
from cloudqueue.engine.core.redact import redact_url
from cloudqueue.engine.core.schedules import check_schedule_name, parse_schedule
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import ABSENT, TaskInfo, iso_ms

__all__ = [
    "QueueClient",
    "QueueUnavailableError",
    "QuotaExceededError",
    "UnexpectedResponseError",
    "task_info_from_wire",
]

API_BASE = "/1.1/engine/cloud-queue"
MAX_LIST_LIMIT = 1000
MAX_UPCOMING = 100  # most upcoming fire times get_schedule asks for (the server's bound)
# the longest silence an event stream may keep: well over the server's 15 s keep-alive
EVENTS_READ_TIMEOUT_S = 60.0

# (Python option name, wire name, TaskOptions field): the spelling the server expects.
_WIRE_OPTIONS = OPTION_NAMES

_STATUS_STATES = {"queued": TaskState.QUEUED, "success": TaskState.SUCCESS,
                  "failed": TaskState.FAILED}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------- errors


class QuotaExceededError(CoreQuotaExceededError):
    """The server refused an enqueue over one of the app's quotas (HTTP 429): nothing was created.

    A subclass of the embedded engine's ``QuotaExceededError``, so one ``except`` serves both.

    Attributes:
        retry_after_s: seconds to wait before trying again, from the ``Retry-After`` header (or
            the body's ``retryAfterMs``); None when the server gave neither.
        server_code: the ``code`` of the server's ``{code, error}`` body, if it sent one.
        quota: which quota was hit (the body's ``quota``), if the server said.
    """

    def __init__(self, message: str, retry_after_s: float | None = None,
                 server_code: int | None = None, quota: str | None = None) -> None:
        retry_after_ms = round(retry_after_s * 1000) if retry_after_s is not None else 0
        super().__init__(quota or "unknown", message, retry_after_ms)
        self.retry_after_s = retry_after_s
        self.server_code = server_code
        self.quota: str | None = quota  # type: ignore[assignment]

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.server_code or self.code, "error": str(self)}
        if self.quota is not None:
            body["quota"] = self.quota
        return body


class QueueUnavailableError(EngineError):
    """The queue could not be reached: refused, DNS, reset, no answer in time, or a gateway's
    502/503/504 without the queue's ``{code, error}`` body.

    Attributes:
        url: the URL requested (without any credentials).
        outcome_unknown: True when the request may have reached the queue (a timeout, a broken
            connection after sending, or a gateway's answer, which came after the request was
            sent and may have been passed on): an enqueue may then have been created, so retry
            it with the same ``unique_id``. False only when no connection was made.
    """

    http_status: ClassVar[int] = 503
    code: ClassVar[int] = 503

    def __init__(self, message: str, url: str, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.url = url
        self.outcome_unknown = outcome_unknown


class UnexpectedResponseError(EngineError):
    """An answer outside the protocol: an unmapped status, a non-JSON body, a malformed
    TaskInfo.

    Attributes:
        status: the HTTP status received (0 when the error is in a 200 answer's contents).
        server_code: the body's ``code``, if it had one.
    """

    http_status: ClassVar[int] = 502
    code: ClassVar[int] = 502

    def __init__(self, message: str, status: int = 0, server_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.server_code = server_code


# ---------------------------------------------------------------------------- wire -> TaskInfo


def task_info_from_wire(wire: Any) -> TaskInfo:
    """A LeanCloud TaskInfo dict (with or without this queue's extension fields) as a TaskInfo.

    ``state`` comes from the ``state`` field, or from ``status`` when it is absent or unknown (a
    plain LeanCloud server sends no ``state``: ``failed`` then also covers a cancelled task).
    Missing extension fields read as ``function=""``, ``attempt=0``, ``max_runs=0``,
    ``created_ms=0``, ``schedule=None``. ``result`` is ``ABSENT`` unless the dict has a
    ``result`` key (a JSON null result stays None).

    Args:
        wire: the decoded JSON body of a task-info answer.

    Returns:
        The TaskInfo, equal to the server's own when the server is this queue.

    Raises:
        UnexpectedResponseError: the dict lacks ``uniqueId`` or ``status``, or a field has the
            wrong type.
    """
    if not isinstance(wire, Mapping):
        raise UnexpectedResponseError(f"a TaskInfo must be a JSON object, got {_kind(wire)}")
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
        **_progress(wire),
    )


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


def _typed(wire: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = wire.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UnexpectedResponseError(f"the TaskInfo's {key} must be a {kind.__name__}, got "
                                      f"{_kind(value)}")
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
    raise UnexpectedResponseError(f"the TaskInfo's {key} is not a date: {_kind(value)}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    return type(value).__name__


# ---------------------------------------------------------------------------- answers -> errors


def _retry_after_s(headers: Mapping[str, str], body: Mapping[str, Any] | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), else the body's
    ``retryAfterMs``."""
    value = headers.get("Retry-After")
    if value:
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):
                return max(0.0, seconds)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    ms = body.get("retryAfterMs") if body is not None else None
    if isinstance(ms, int | float) and not isinstance(ms, bool):
        return max(0.0, ms / 1000)
    return None


def _with_message(error: EngineError, message: str) -> EngineError:
    """Keep the typed error's attributes but the server's own words."""
    error.args = (message,)
    return error


def _conflict(op: str, message: str, body: Mapping[str, Any] | None,
              unique_id: str | None) -> EngineError:
    """A 409 without a ``type`` (a server before structured bodies): by the operation."""
    uid = _text(body, "uniqueId") or unique_id or ""
    if op == "enqueue":
        status = _text(body, "status") or "queued"
        return _with_message(DuplicateTaskError(uid, status, _text(body, "state") or status),
                             message)
    return _with_message(InvalidTransitionError(uid, _text(body, "state") or "unknown", op),
                         message)


def _text(body: Mapping[str, Any] | None, key: str) -> str | None:
    value = body.get(key) if body is not None else None
    return value if isinstance(value, str) else None


def _number(body: Mapping[str, Any] | None, key: str) -> int | None:
    value = body.get(key) if body is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _typed_error(body: Mapping[str, Any], message: str,
                 unique_id: str | None) -> EngineError | None:
    """The error a body's ``type`` names, rebuilt from the body's fields (None: no known
    ``type``). The message stays the server's own words."""
    kind = body.get("type")
    cls = ERROR_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None
    uid = _text(body, "uniqueId") or unique_id or ""
    build = _BUILDERS.get(cls)
    error: EngineError
    if build is not None:
        error = build(body, message, uid)
    elif cls in _MESSAGE_ONLY:
        error = cls(message)
    elif issubclass(cls, LogError):  # one only a log reader raises: its base, in its words
        error = LogError(message)
    else:
        return None
    return _with_message(error, message)


def _duplicate(body: Mapping[str, Any], message: str, uid: str) -> EngineError:
    status = _text(body, "status") or "queued"
    error = DuplicateTaskError(uid, status, _text(body, "state") or status, message=message)
    error.index = _number(body, "index")
    return error


def _corrupt(body: Mapping[str, Any], message: str, uid: str) -> EngineError:
    reason = _text(body, "reasonKind")
    return LogCorruptError(_text(body, "segment") or "", _number(body, "offset") or 0, message,
                           CorruptionKind(reason) if reason is not None
                           and reason in CorruptionKind._value2member_map_ else None)


_Builder = Callable[[Mapping[str, Any], str, str], EngineError]
_BUILDERS: dict[type[EngineError], _Builder] = {
    DuplicateTaskError: _duplicate,
    InvalidTransitionError: lambda body, message, uid: InvalidTransitionError(
        uid, _text(body, "state") or "unknown", _text(body, "trigger") or "unknown"),
    StaleRunError: lambda body, message, uid: StaleRunError(uid, _number(body, "runSeq") or 0),
    UnknownScheduleError: lambda body, message, uid: UnknownScheduleError(
        _text(body, "schedule") or ""),
    OutcomeUnknownError: lambda body, message, uid: OutcomeUnknownError(
        message, _text(body, "uniqueId")),
    ValidationError: lambda body, message, uid: ValidationError(
        message, _text(body, "field") or _field(message), _number(body, "index")),
    LogCorruptError: _corrupt,
}


_MESSAGE_ONLY: frozenset[type[EngineError]] = frozenset({
    ForbiddenError, ConfigError, EngineClosedError, LogError, LogPoisonedError, DiskFullError})


def _field(message: str) -> str | None:
    """The field a server's validation message starts with (its wire spelling), if any."""
    first = message.split(" ", 1)[0]
    known = WIRE_OPTION_NAMES | {"function", "params", "state", "limit"}
    return first if first in known else None


class _Answer:
    """One HTTP answer, read in full."""

    def __init__(self, method: str, url: str, status: int, headers: Mapping[str, str],
                 text: str) -> None:
        self.method, self.url, self.status, self.headers = method, url, status, headers
        self.text = text
        try:
            self.json: Any = json.loads(text) if text else None
        except ValueError:
            self.json = None

    @property
    def body(self) -> Mapping[str, Any] | None:
        """The ``{code, error}`` body, if the answer is one."""
        if isinstance(self.json, Mapping) and "error" in self.json:
            return self.json
        return None

    @property
    def message(self) -> str:
        body = self.body
        if body is not None:
            return str(body["error"])
        snippet = " ".join(self.text.split())[:200]
        return f"{self.method} {self.url} answered {self.status}" + (
            f": {snippet}" if snippet else "")

    @property
    def server_code(self) -> int | None:
        code = self.body.get("code") if self.body is not None else None
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    def error(self, op: str, unique_id: str | None) -> EngineError:
        """The typed error for a non-2xx answer to ``op``."""
        status, body, message = self.status, self.body, self.message
        if status == 429:
            return QuotaExceededError(message, _retry_after_s(self.headers, body),
                                      self.server_code, _quota(body))
        if body is None:
            if status in (502, 503, 504):
                # a gateway answered after the request was sent: it may have passed it on
                hint = ("; the task may or may not have been created: retry with the same "
                        "unique_id" if op == "enqueue" else "")
                return QueueUnavailableError(message + hint, self.url, outcome_unknown=True)
            return UnexpectedResponseError(message, status)
        typed = _typed_error(body, message, unique_id) if status != 400 else None
        if typed is not None:
            return typed
        if status == 409 and op in ("enqueue", "cancel"):
            return _conflict(op, message, body, unique_id)
        if status == 404 and unique_id is not None and op != "enqueue":
            return _with_message(UnknownTaskError(unique_id), message)
        simple = _SIMPLE_ERRORS.get(status)
        if simple is not None:
            return simple(message)
        return UnexpectedResponseError(message, status, self.server_code)


def _quota(body: Mapping[str, Any] | None) -> str | None:
    quota = body.get("quota") if body is not None else None
    return quota if isinstance(quota, str) else None


def _unavailable_503(message: str) -> EngineError:
    if message.startswith("the engine is"):
        return EngineClosedError(message)
    return LogPoisonedError(message)


_SIMPLE_ERRORS: dict[int, Callable[[str], EngineError]] = {
    400: lambda m: ValidationError(m, _field(m)),
    # the body is over the server's size limit: the request cannot be accepted as given
    413: lambda m: ValidationError(f"the request is too large for the server ({m})", "params"),
    401: lambda m: _with_message(UnauthorizedError(), m),
    403: ForbiddenError,
    503: _unavailable_503,
    507: DiskFullError,
}


# ---------------------------------------------------------------------------- the client


class QueueClient:
    """A remote queue, through its REST API. Use as ``async with QueueClient(...) as queue``;
    the client owns one ``aiohttp.ClientSession`` for its lifetime.

    Args:
        base_url: the queue's root, e.g. ``http://127.0.0.1:3100`` (a path prefix is kept).
        app_id: the LeanCloud app id (``X-LC-Id``).
        app_key: the app key: reads only (``get_task_info``, ``wait``).
        master_key: the master key: everything. Used instead of ``app_key`` when both are given.
        timeout_s: bound on each request, connection included.

    Raises:
        ConfigError: no key, a base URL that is not http(s), or a timeout that is not positive.
    """

    def __init__(self, base_url: str, app_id: str, app_key: str | None = None,
                 master_key: str | None = None, *, timeout_s: float = 30) -> None:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"base_url must be an http(s) URL, got {redact_url(base_url)!r}")
        if not app_id:
            raise ConfigError("app_id must not be empty")
        if not master_key and not app_key:
            raise ConfigError("give app_key (to read tasks) or master_key (to enqueue, cancel "
                              "and list them)")
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s}")
        self._base = url.with_query(None).with_fragment(None)
        self._shown_base = str(self._base.with_user(None))
        self.app_id = app_id
        self._key = master_key or app_key or ""
        self._master = bool(master_key)
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        role = "master" if self._master else "app"
        return f"QueueClient({self._shown_base!r}, app_id={self.app_id!r}, role={role})"

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> QueueClient:
        if self._session is not None:
            raise RuntimeError("this QueueClient is already open")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"X-LC-Id": self.app_id, "Accept": "application/json"},
        )
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ tasks

    async def enqueue(self, function: str, params: Any = None, **options: Any) -> str:
        """Queue a task on the server; return its uniqueId once the server holds it durably.

        The options are the embedded ``Engine.enqueue``'s, checked by the same validator before
        anything is sent: ``attempts``, ``backoff``, ``delay``, ``delivery_mode``,
        ``keep_result``, ``priority``, ``timeout``, ``unique_id`` (durations in ms). Only the
        options given are sent; the server applies its defaults to the rest.

        Args:
            function: the cloud function's name.
            params: its JSON params (None sends ``{}``).
            **options: task options, in the Python spelling.

        Returns:
            The task's uniqueId (``unique_id`` if given, else the server's UUID).

        Raises:
            ValidationError: a bad option, function name or params (no request made), or one
                the server refused (e.g. a ``timeout`` over its maximum), in its words.
            DuplicateTaskError: the uniqueId is held by a task.
            ForbiddenError: the client has no master key.
            UnauthorizedError: the server rejected the credentials.
            QuotaExceededError: over one of the app's quotas; see ``retry_after_s``.
            EngineClosedError, LogPoisonedError, DiskFullError: the server cannot take work.
            QueueUnavailableError: the server cannot be reached (see ``outcome_unknown``).
            UnexpectedResponseError: an answer outside the protocol.
        """
        parsed = parse_options(options, wire=False)
        check_function_name(function)
        if params is None:
            params = {}
        check_params(params)
        body: dict[str, Any] = {"function": function, "params": params,
                                **_wire_options(options, parsed)}
        answer = await self._call("enqueue", "POST", "/tasks", json_body=body,
                                  unique_id=parsed.unique_id)
        unique_id = answer.get("uniqueId") if isinstance(answer, Mapping) else None
        if not isinstance(unique_id, str):
            raise UnexpectedResponseError("the enqueue answer has no string uniqueId", 200)
        return unique_id

    async def get_task_info(self, unique_id: str) -> TaskInfo:
        """The task's current info, as the server sees it.

        Args:
            unique_id: the task's uniqueId (percent-encoded into the path).

        Returns:
            Its TaskInfo (``result`` is ``ABSENT`` until it succeeds).

        Raises:
            UnknownTaskError: no such task, or its keepResult window has passed.
            UnauthorizedError: the server rejected the credentials.
            QueueUnavailableError: the server cannot be reached.
            UnexpectedResponseError: an answer outside the protocol.
        """
        answer = await self._call("get_task_info", "GET", f"/tasks/{_segment(unique_id)}",
                                  unique_id=unique_id)
        return task_info_from_wire(answer)

    async def cancel(self, unique_id: str) -> TaskInfo:
        """Cancel a queued or retry-waiting task (needs the master key).

        Args:
            unique_id: the task's uniqueId.

        Returns:
            Its final info (state ``cancelled``).

        Raises:
            UnknownTaskError: no such task.
            InvalidTransitionError: the task is running or already finished.
            ForbiddenError: the client has no master key.
            UnauthorizedError: the server rejected the credentials.
            EngineClosedError, LogPoisonedError, DiskFullError: the server cannot take work.
            QueueUnavailableError: the server cannot be reached.
            UnexpectedResponseError: an answer outside the protocol.
        """
        answer = await self._call("cancel", "POST", f"/tasks/{_segment(unique_id)}/cancel",
                                  unique_id=unique_id)
        return task_info_from_wire(answer)

    async def list_tasks(self, state: TaskState | str | None = None,
                         limit: int = 100) -> list[TaskInfo]:
        """Tasks the server holds, newest first (an extension; needs the master key).

        Args:
            state: only tasks in this state (``queued``, ``running``, ``retry_wait``,
                ``success``, ``failed``, ``cancelled``); None for all.
            limit: at most this many, 1 to 1000.

        Returns:
            Their infos, newest first.

        Raises:
            ValidationError: a bad state or limit (no request made), or one the server refused.
            ForbiddenError: the client has no master key.
            UnauthorizedError: the server rejected the credentials.
            QueueUnavailableError: the server cannot be reached.
            UnexpectedResponseError: an answer outside the protocol.
        """
        query = {"limit": str(_check_limit(limit))}
        if state is not None:
            query["state"] = _check_state(state).value
        answer = await self._call("list_tasks", "GET", "/tasks", query=query)
        results = answer.get("results") if isinstance(answer, Mapping) else None
        if not isinstance(results, list):
            raise UnexpectedResponseError("the list answer has no results array", 200)
        return [task_info_from_wire(item) for item in results]

    async def wait(self, unique_id: str, timeout_s: float, poll_s: float = 0.2) -> TaskInfo:
        """Poll until the task is final (success, failed or cancelled) and return its info.

        Args:
            unique_id: the task's uniqueId.
            timeout_s: give up after this many seconds (requests in flight included).
            poll_s: seconds between polls.

        Returns:
            Its final TaskInfo.

        Raises:
            TimeoutError: not final within ``timeout_s`` (the embedded ``wait``'s convention).
            ValueError: ``poll_s`` is not positive or ``timeout_s`` is negative.
            UnknownTaskError, UnauthorizedError, QueueUnavailableError,
            UnexpectedResponseError: as ``get_task_info``.
        """
        if not poll_s > 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        if not timeout_s >= 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        last: TaskInfo | None = None
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    last = await self.get_task_info(unique_id)
                    if last.state.is_final:
                        return last
                    await asyncio.sleep(poll_s)
        except TimeoutError:
            seen = f" (last seen {last.state.value})" if last is not None else ""
            raise TimeoutError(f"task '{unique_id}' was not final within {timeout_s} s{seen}"
                               ) from None

    async def events(self, unique_id: str) -> AsyncGenerator[tuple[str, TaskInfo], None]:
        """Live updates of a task, from the server's Server-Sent Events stream (an extension).

        Yields ``(type, info)``: first ``state`` (the current state), then any of ``queued``,
        ``running``, ``progress``, ``retry``, ``continued``, and a last ``finished`` (its info
        is final), after which the iteration ends; a task already final yields only its
        ``state``. A slow reader misses intermediate updates, never the latest. The stream has
        no overall time limit; it fails if the server is silent for 60 s (it sends a keep-alive
        every 15 s).

        Stopping early (``break``, ``aclose()``) closes the HTTP response; to close it at once
        rather than when the generator is collected, use ``contextlib.aclosing``::

            async with aclosing(queue.events(uid)) as updates:
                async for kind, info in updates: ...

        Args:
            unique_id: the task's uniqueId (percent-encoded into the path).

        Raises (from the first iteration, before anything is yielded, unless noted):
            UnknownTaskError: no such task, or its keepResult window has passed.
            UnauthorizedError: the server rejected the credentials.
            ForbiddenError: the credentials may not read the task.
            QueueUnavailableError: the server cannot be reached, or (while streaming) the
                connection broke, went silent, or ended before ``finished``.
            UnexpectedResponseError: an answer outside the protocol (also while streaming).
        """
        response, shown = await self._open_events(unique_id)
        finished = False
        try:
            parser = _SSEParser()
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            try:
                end = False
                while not end:
                    chunk = await response.content.readany()
                    end = not chunk  # b"" at the end of the body
                    for event, data in parser.feed(decoder.decode(chunk, end), final=end):
                        kind, info = _event_update(event, data)
                        yield kind, info
                        if kind == "finished" or info.state.is_final:  # final at the start
                            finished = True
                            return
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise QueueUnavailableError(f"the event stream {shown} broke ({_failure(exc)})",
                                            shown) from exc
            raise QueueUnavailableError(f"the event stream {shown} ended before the task "
                                        "finished", shown)
        finally:
            if finished:
                response.release()
            else:
                response.close()  # mid-stream: drop the connection, the server unsubscribes

    async def _open_events(self, unique_id: str) -> tuple[aiohttp.ClientResponse, str]:
        """The task's event stream, answered 2xx with ``text/event-stream`` (else the typed
        error), and its URL as shown in errors."""
        if self._session is None:
            raise RuntimeError("open the client first: async with QueueClient(...) as queue")
        url = self._url(f"/tasks/{_segment(unique_id)}/events", None)
        shown = str(url.with_user(None))
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout_s,
                                        sock_read=EVENTS_READ_TIMEOUT_S)
        headers = {**self._headers(), "Accept": "text/event-stream",
                   "Cache-Control": "no-cache"}
        try:
            response = await self._session.get(url, headers=headers, timeout=timeout)
        except aiohttp.ClientConnectorError as exc:
            raise QueueUnavailableError(f"cannot reach the queue at {shown}: {exc.os_error}",
                                        shown) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise QueueUnavailableError(f"GET {shown} failed ({_failure(exc)})", shown,
                                        outcome_unknown=True) from exc
        try:
            if not 200 <= response.status < 300:
                try:
                    text = await response.text(errors="replace")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise QueueUnavailableError(f"GET {shown} failed ({_failure(exc)})",
                                                shown, outcome_unknown=True) from exc
                answer = _Answer("GET", shown, response.status, response.headers, text)
                raise answer.error("events", unique_id)
            if response.content_type != "text/event-stream":
                raise UnexpectedResponseError(
                    f"GET {shown} answered {response.content_type or 'no content type'}, not "
                    "text/event-stream", response.status)
        except BaseException:
            response.close()
            raise
        return response, shown

    async def read_token(self, unique_id: str) -> str:
        """A fresh read token for the task's event stream (an extension), for a browser's
        ``EventSource``: ``.../tasks/<uniqueId>/events?app=<appId>&token=<token>``. It is good
        for that one task only, for 24 hours.

        Raises:
            UnknownTaskError, UnauthorizedError, ForbiddenError, QueueUnavailableError,
            UnexpectedResponseError: as ``get_task_info``.
        """
        answer = await self._call("read_token", "GET", f"/tasks/{_segment(unique_id)}/read-token",
                                  unique_id=unique_id)
        token = answer.get("readToken") if isinstance(answer, Mapping) else None
        if not isinstance(token, str) or not token:
            raise UnexpectedResponseError("the read-token answer has no string readToken", 200)
        return token

    # ------------------------------------------------------------------ schedules

    async def set_schedule(self, name: str, function: str, params: Any = None, *,
                           cron: str | None = None, interval: int | None = None,
                           timezone: str | None = None, paused: bool = False,
                           **options: Any) -> dict[str, Any]:
        """Create or replace the schedule ``name`` on the server (needs the master key).

        The embedded ``Engine.set_schedule``'s arguments, checked by the same validator before
        anything is sent: exactly one of ``cron`` (LeanCloud's six fields, seconds first) or
        ``interval`` (ms); ``timezone`` (an IANA name; None leaves the server's default zone);
        per-firing task options ``attempts``, ``backoff``, ``delivery_mode``, ``timeout``,
        ``keep_result``. Only the options given are sent.

        Returns:
            The server's schedule object (wire spelling: ``deliveryMode``, ``nextFireTimes``...).

        Raises:
            ValidationError: a bad name, function, params, expression, zone or option (no
                request made), or one the server refused, in its words.
            ForbiddenError, UnauthorizedError, QueueUnavailableError, UnexpectedResponseError,
            EngineClosedError, LogPoisonedError, DiskFullError: as ``enqueue``.
        """
        values = {"function": function, "params": params, "cron": cron, "interval": interval,
                  "timezone": timezone, "paused": paused, **options}
        spec = parse_schedule(name, {k: v for k, v in values.items() if v is not None},
                              wire=False, default_timezone="UTC")
        body: dict[str, Any] = {"function": spec.function, "params": spec.params}
        if spec.cron is not None:
            body["cron"] = spec.cron
        else:
            body["interval"] = spec.interval_ms
        if timezone is not None:
            body["timezone"] = spec.timezone
        body["paused"] = spec.paused
        body.update(_wire_options(options, spec.options))
        return await self._schedule_call("set_schedule", "PUT", name, "", json_body=body)

    async def get_schedule(self, name: str, upcoming: int = 5) -> dict[str, Any]:
        """One schedule, with its next ``upcoming`` (1 to 100) fire times in ``nextFireTimes``
        (none while paused).

        Raises:
            UnknownScheduleError: no schedule of that name.
            ValidationError: a bad name or ``upcoming`` (no request made).
            ForbiddenError, UnauthorizedError, QueueUnavailableError,
            UnexpectedResponseError: as ``list_tasks``.
        """
        if isinstance(upcoming, bool) or not isinstance(upcoming, int) or not (
                1 <= upcoming <= MAX_UPCOMING):
            raise ValidationError(f"upcoming must be a whole number from 1 to {MAX_UPCOMING}, "
                                  f"got {upcoming!r}", "count")
        return await self._schedule_call("get_schedule", "GET", name, "",
                                         query={"count": str(upcoming)})

    async def list_schedules(self) -> list[dict[str, Any]]:
        """Every schedule, by name, each with its next fire time (``nextFireTimes`` holds one).

        Raises:
            ForbiddenError, UnauthorizedError, QueueUnavailableError,
            UnexpectedResponseError: as ``list_tasks``.
        """
        answer = await self._call("list_schedules", "GET", "/schedules")
        results = answer.get("results") if isinstance(answer, Mapping) else None
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise UnexpectedResponseError("the schedule list has no results array of objects",
                                          200)
        return results

    async def pause_schedule(self, name: str) -> dict[str, Any]:
        """Stop firing ``name`` until resumed; returns its schedule object.

        Raises:
            UnknownScheduleError: no schedule of that name. Others as ``get_schedule``.
        """
        return await self._schedule_call("pause_schedule", "POST", name, "/pause")

    async def resume_schedule(self, name: str) -> dict[str, Any]:
        """Fire ``name`` again, from now (slots missed while paused are not caught up).

        Raises:
            UnknownScheduleError: no schedule of that name. Others as ``get_schedule``.
        """
        return await self._schedule_call("resume_schedule", "POST", name, "/resume")

    async def delete_schedule(self, name: str) -> None:
        """Delete ``name`` (tasks it already fired are kept).

        Raises:
            UnknownScheduleError: no schedule of that name. Others as ``get_schedule``.
        """
        await self._schedule_call("delete_schedule", "DELETE", name, "")

    async def preview_schedule(self, *, cron: str | None = None, interval: int | None = None,
                               timezone: str | None = "UTC", from_ms: int | None = None,
                               count: int = 5) -> list[int]:
        """The next ``count`` (1 to 1000) fire times strictly after ``from_ms`` (epoch ms;
        default the server's now), as the server computes them, in epoch ms.

        An ``interval`` counts from ``from_ms`` (``from_ms + k * interval``); a saved schedule's
        interval counts from its creation instead. ``timezone=None`` uses the server's default
        zone.

        Raises:
            ValidationError: not exactly one of cron and interval, a bad expression, zone,
                count or time (no request made), or one the server refused.
            ForbiddenError, UnauthorizedError, QueueUnavailableError,
            UnexpectedResponseError: as ``list_tasks``.
        """
        body = _preview_body(cron, interval, timezone, from_ms, count)
        answer = await self._call("preview_schedule", "POST", "/schedules/preview",
                                  json_body=body)
        times = answer.get("fireTimes") if isinstance(answer, Mapping) else None
        if not isinstance(times, list):
            raise UnexpectedResponseError("the preview answer has no fireTimes array", 200)
        return [_fire_time_ms(value) for value in times]

    async def _schedule_call(self, op: str, method: str, name: str, suffix: str, *,
                             json_body: Any = None,
                             query: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One request on ``/schedules/<name><suffix>``: its JSON object answer; a 404 from the
        schedule handlers is ``UnknownScheduleError``."""
        check_schedule_name(name)
        try:
            answer = await self._call(op, method, f"/schedules/{_segment(name)}{suffix}",
                                      json_body=json_body, query=query)
        except UnexpectedResponseError as exc:
            # a route-level 404 ("Not Found") is a server without the schedule endpoints
            if exc.status == 404 and exc.server_code == 404 and str(exc) != "Not Found":
                raise _with_message(UnknownScheduleError(name), str(exc)) from None
            raise
        if not isinstance(answer, dict):
            raise UnexpectedResponseError(f"the {op} answer is not a JSON object", 200)
        return answer

    # ------------------------------------------------------------------ transport

    def _headers(self) -> dict[str, str]:
        return {"X-LC-Sign": sign(self._key, int(time.time() * 1000), master=self._master)}

    def _url(self, raw_path: str, query: Mapping[str, str] | None) -> URL:
        url = self._base.with_path(self._base.raw_path.rstrip("/") + API_BASE + raw_path,
                                   encoded=True)
        return url.with_query(query) if query else url

    async def _call(self, op: str, method: str, raw_path: str, *,
                    json_body: Any = None, query: Mapping[str, str] | None = None,
                    unique_id: str | None = None) -> Any:
        """Send one request; return the decoded JSON of a 2xx answer, else raise the typed
        error."""
        if self._session is None:
            raise RuntimeError("open the client first: async with QueueClient(...) as queue")
        url = self._url(raw_path, query)
        shown = str(url.with_user(None))
        try:
            async with self._session.request(method, url, json=json_body,
                                             headers=self._headers()) as response:
                text = await response.text(errors="replace")
                answer = _Answer(method, shown, response.status, response.headers, text)
        except aiohttp.ClientConnectorError as exc:
            raise QueueUnavailableError(f"cannot reach the queue at {shown}: {exc.os_error}",
                                        shown) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = f"no answer within {self.timeout_s} s" if isinstance(
                exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            hint = ("; the task may or may not have been created: retry with the same unique_id"
                    if op == "enqueue" else "")
            raise QueueUnavailableError(f"{method} {shown} failed ({detail}){hint}", shown,
                                        outcome_unknown=True) from exc
        if 200 <= answer.status < 300:
            if answer.json is None:
                raise UnexpectedResponseError(f"{answer.message}: not a JSON answer",
                                              answer.status)
            return answer.json
        raise answer.error(op, unique_id)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no data in time"
    return f"{type(exc).__name__}: {exc}"


_LINE_END = re.compile(r"\r\n|\r|\n")


class _SSEParser:
    """Server-Sent Events, as the HTML spec parses them: ``field: value`` lines (one optional
    space after the colon), ``:`` comments ignored, ``data`` lines joined with newlines, a blank
    line dispatching the message (skipped when it has no data). ``id`` and ``retry`` are read
    and ignored; an unfinished last message is dropped."""

    def __init__(self) -> None:
        self._buffer = ""
        self._started = False
        self._event = ""
        self._data: list[str] = []

    def feed(self, text: str, final: bool = False) -> list[tuple[str, str]]:
        """More of the stream (``final``: its end); the messages it completes, as
        ``(event, data)``."""
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        self._buffer += text
        messages: list[tuple[str, str]] = []
        start = 0
        while (match := _LINE_END.search(self._buffer, start)) is not None:
            if match.group() == "\r" and match.end() == len(self._buffer) and not final:
                break  # maybe the first half of a \r\n
            message = self._line(self._buffer[start:match.start()])
            if message is not None:
                messages.append(message)
            start = match.end()
        self._buffer = self._buffer[start:]
        return messages

    def _line(self, line: str) -> tuple[str, str] | None:
        if not line:
            event, data = self._event or "message", self._data
            self._event, self._data = "", []
            return (event, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def _event_update(event: str, data: str) -> tuple[str, TaskInfo]:
    """One SSE message of the task stream as ``(type, info)``."""
    try:
        body = json.loads(data)
    except ValueError:
        raise UnexpectedResponseError(f"an event's data is not JSON: {data[:80]!r}") from None
    if not isinstance(body, Mapping) or "task" not in body:
        raise UnexpectedResponseError(f"an event's data has no task: {_kind(body)}")
    kind = body.get("type") if event == "message" else event  # no event field: the data's
    if not isinstance(kind, str):
        raise UnexpectedResponseError("an event has no type")
    return kind, task_info_from_wire(body["task"])


def _segment(unique_id: str) -> str:
    """One percent-encoded path segment (``/``, ``?``, ``#``, ``%`` and the rest escaped)."""
    if not isinstance(unique_id, str):
        raise ValidationError(f"uniqueId must be a string, got {_kind(unique_id)}", "unique_id")
    return quote(unique_id, safe="")


def _wire_options(given: Mapping[str, Any], parsed: TaskOptions) -> dict[str, Any]:
    """The options the caller gave, validated and normalised, in the wire's spelling."""
    wire: dict[str, Any] = {}
    for py_name, wire_name, field in _WIRE_OPTIONS:
        if given.get(py_name) is None:
            continue
        value = getattr(parsed, field)
        wire[wire_name] = value.value if field == "delivery_mode" else value
    return wire


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not (
            1 <= limit <= MAX_LIST_LIMIT):
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}, got "
                              f"{limit!r}", "limit")
    return limit


def _check_state(state: TaskState | str) -> TaskState:
    try:
        return TaskState(state)
    except ValueError:
        raise ValidationError(
            f"state must be one of {', '.join(s.value for s in TaskState)}, got {state!r}",
            "state") from None


def _preview_body(cron: str | None, interval: int | None, timezone: str | None,
                  from_ms: int | None, count: int) -> dict[str, Any]:
    """A preview request's body, checked as the server checks it."""
    if (cron is None) == (interval is None):
        raise ValidationError("give exactly one of cron (an expression) or interval (ms)",
                              "cron")
    body: dict[str, Any] = {}
    if cron is not None:
        parse_cron(cron)
        body["cron"] = cron
    else:
        body["interval"] = check_interval(interval)  # type: ignore[arg-type]  # it checks
    if timezone is not None:
        body["timezone"] = check_timezone(timezone)
    if from_ms is not None:
        if isinstance(from_ms, bool) or not isinstance(from_ms, int):
            raise ValidationError(f"from_ms must be epoch milliseconds (an int), got "
                                  f"{from_ms!r}", "from")
        try:
            body["from"] = iso_ms(from_ms)
        except (ValueError, OverflowError, OSError):
            raise ValidationError(f"from_ms {from_ms} is not a representable time",
                                  "from") from None
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PREVIEW:
        raise ValidationError(f"count must be a whole number from 1 to {MAX_PREVIEW}, got "
                              f"{count!r}", "count")
    body["count"] = count
    return body


def _fire_time_ms(value: Any) -> int:
    """One ``fireTimes`` entry (ISO-8601; UTC when it names no zone) as epoch ms."""
    when = None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            pass
    if when is None:
        raise UnexpectedResponseError(f"a fire time must be an ISO-8601 string, got "
                                      f"{_kind(value)}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
