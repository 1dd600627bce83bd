"""The queue's answers as typed errors: by the body's ``type`` and fields when the server sends
them (this queue), else by status and ``code`` (LeanCloud)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

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
    QueueUnavailableError,
    RemoteQuotaExceededError,
    StaleRunError,
    UnauthorizedError,
    UnexpectedResponseError,
    UnknownScheduleError,
    UnknownTaskError,
    ValidationError,
)
from cloudqueue.engine.core.options import WIRE_OPTION_NAMES


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


def with_message(error: EngineError, message: str) -> EngineError:
    """Keep the typed error's attributes but the server's own words."""
    error.args = (message,)
    return error


def _conflict(op: str, message: str, body: Mapping[str, Any] | None,
              unique_id: str | None) -> EngineError:
    """A 409 without a ``type`` (a server before structured bodies): by the operation."""
    uid = _text(body, "uniqueId") or unique_id or ""
    if op == "enqueue":
        status = _text(body, "status") or "queued"
        return with_message(DuplicateTaskError(uid, status, _text(body, "state") or status),
                             message)
    return with_message(InvalidTransitionError(uid, _text(body, "state") or "unknown", op),
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
    return with_message(error, message)


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


def item_error(body: Mapping[str, Any]) -> EngineError:
    """The error one item of a bulk enqueue's answer holds (its ``{code, error, ...}``)."""
    message = str(body.get("error"))
    typed = _typed_error(body, message, None)
    if typed is not None:
        return typed
    code = _number(body, "code")
    if code == 409:
        return _conflict("enqueue", message, body, None)
    if code == 1:
        return ValidationError(message, _field(message), _number(body, "index"))
    return UnexpectedResponseError(message, 200, code)


class Answer:
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
            return RemoteQuotaExceededError(message, _retry_after_s(self.headers, body),
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
            return with_message(UnknownTaskError(unique_id), message)
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
    401: lambda m: with_message(UnauthorizedError(), m),
    403: ForbiddenError,
    503: _unavailable_503,
    507: DiskFullError,
}
