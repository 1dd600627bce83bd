"""The queue's errors: refused requests, missing tasks, credentials, configuration, quotas, a
closed engine, and what a client meets reaching a queue over HTTP (import them from
``cloudqueue.engine.core.errors``)."""

from __future__ import annotations

from typing import Any, ClassVar


class EngineError(Exception):
    """Base of every error the queue raises on purpose. Never raised itself.

    ``error_type`` (the body's ``type``) names the class on the wire; None keeps LeanCloud's
    exact body. ``details()`` is the machine-readable rest of the body (wire spelling).
    """

    http_status: ClassVar[int] = 500
    code: ClassVar[int] = 1
    error_type: ClassVar[str | None] = None

    def details(self) -> dict[str, Any]:
        """This error's fields, as the body's extension keys (absent values left out)."""
        return {}

    def body(self) -> dict[str, Any]:
        """The LeanCloud error body for this error: ``code``, ``error``, then ``type`` and the
        ``details()``."""
        body: dict[str, Any] = {"code": self.code, "error": str(self)}
        if self.error_type is not None:
            body["type"] = self.error_type
        body.update({k: v for k, v in self.details().items() if v is not None})
        return body


class ValidationError(EngineError, ValueError):
    """An enqueue request or option that cannot be accepted as given.

    ``field`` names the offending option in the caller's spelling where known.
    """

    http_status = 400
    code = 1
    error_type = "validation"

    def __init__(self, message: str, field: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.index = index  # which item of an ``enqueue_many`` batch, if it was one

    def at_item(self, index: int) -> ValidationError:
        """The same refusal, naming item ``index`` of a batch."""
        return ValidationError(f"item {index}: {self}", self.field, index)

    def details(self) -> dict[str, Any]:
        return {"field": self.field, "index": self.index}

class DuplicateTaskError(EngineError):
    """The uniqueId is still held by a task (queued, running, waiting, or finished within
    its keepResult window)."""

    http_status = 409
    code = 409
    error_type = "duplicate_task"

    def __init__(self, unique_id: str, status: str, state: str, *, index: int | None = None,
                 message: str | None = None) -> None:
        text = message or (
            f"A task with uniqueId '{unique_id}' already exists (status {status}, state {state}); "
            "a uniqueId is held until keepResult ms after its task finishes")
        super().__init__(text if index is None else f"item {index}: {text}")
        self.unique_id = unique_id
        self.status = status
        self.state = state
        self.index = index  # which item of an ``enqueue_many`` batch, if it was one

    @classmethod
    def within_batch(cls, unique_id: str, index: int, first: int) -> DuplicateTaskError:
        """Two items of one ``enqueue_many`` batch name the same uniqueId."""
        return cls(unique_id, "queued", "queued", index=index,
                   message=f"uniqueId '{unique_id}' is also given to item {first} of this batch")

    def details(self) -> dict[str, Any]:
        return {"uniqueId": self.unique_id, "status": self.status, "state": self.state,
                "index": self.index}


class UnknownTaskError(EngineError):
    """No task with this uniqueId: it never existed or its keepResult window has passed.

    Its body is exactly LeanCloud's ``{"code": 404, "error": "Task '<id>' not found"}`` (the id
    is the one in the request's path)."""

    http_status = 404
    code = 404
    error_type = None

    def __init__(self, unique_id: str) -> None:
        super().__init__(f"Task '{unique_id}' not found")
        self.unique_id = unique_id


class UnknownScheduleError(EngineError):
    http_status = 404
    code = 404
    error_type = "unknown_schedule"

    def __init__(self, name: str) -> None:
        super().__init__(f"Schedule '{name}' not found")
        self.name = name

    def details(self) -> dict[str, Any]:
        return {"schedule": self.name}


class StaleRunError(EngineError):
    """A report from a run that is no longer the task's current one (it timed out, or the task
    moved on): refused, so an old run cannot overwrite the new one's progress."""

    http_status = 409
    code = 409
    error_type = "stale_run"

    def __init__(self, unique_id: str, run_seq: int) -> None:
        super().__init__(f"run {run_seq} of task '{unique_id}' is not running any more")
        self.unique_id = unique_id
        self.run_seq = run_seq

    def details(self) -> dict[str, Any]:
        return {"uniqueId": self.unique_id, "runSeq": self.run_seq}


class InvalidTransitionError(EngineError):
    """A trigger that the task's current state does not allow (e.g. cancelling a running task)."""

    http_status = 409
    code = 409
    error_type = "invalid_transition"

    def __init__(self, task_id: str, state: str, trigger: str, *,
                 reason: str | None = None) -> None:
        what = "run it now" if trigger == "run_now" else f"{trigger.replace('_', ' ')} it"
        super().__init__(f"Task '{task_id}' is {state}: cannot {what}"
                         + (f" ({reason})" if reason else ""))
        self.task_id = task_id
        self.state = state
        self.trigger = trigger

    def details(self) -> dict[str, Any]:
        return {"uniqueId": self.task_id, "state": self.state, "trigger": self.trigger}


class UnauthorizedError(EngineError):
    """Missing or wrong credentials: LeanCloud's ``{"code":401,"error":"Unauthorized."}``
    exactly (nothing more is said to a caller without credentials)."""

    http_status = 401
    code = 401
    error_type = None

    def __init__(self) -> None:
        super().__init__("Unauthorized.")


class ForbiddenError(EngineError):
    """Valid credentials whose role may not do this (app key where the master key is needed)."""

    http_status = 403
    code = 119
    error_type = "forbidden"


class ConfigError(EngineError, ValueError):
    """A configuration value that cannot be used."""

    http_status = 500
    code = 1
    error_type = "config"


class EngineClosedError(EngineError):
    """The engine is shutting down or stopped and takes no more work."""

    http_status = 503
    code = 503
    error_type = "engine_closed"


class QuotaExceededError(EngineError):
    """An enqueue over one of the app's quotas: nothing was created. HTTP 429 + Retry-After.

    ``quota`` is ``rate``, ``daily`` or ``held``; ``retry_after_ms`` when to try again."""

    http_status = 429
    code = 429
    error_type = "quota_exceeded"

    def __init__(self, quota: str, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.quota = quota
        self.retry_after_ms = retry_after_ms

    def details(self) -> dict[str, Any]:
        return {"quota": self.quota, "retryAfterMs": self.retry_after_ms}


# ---------------------------------------------------------------------------- a remote queue


class RemoteQuotaExceededError(QuotaExceededError):
    """``QueueClient``: a server refused an enqueue over a quota (429); nothing was created.
    ``retry_after_s`` from ``Retry-After`` or ``retryAfterMs`` (None: neither given;
    ``retry_after_ms`` the same, or 0), ``server_code`` the body's ``code``, ``quota`` if said."""

    error_type = "remote_quota_exceeded"

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
    """``QueueClient``: the queue could not be reached (refused, DNS, reset, no answer in time,
    a gateway's 502/503/504). ``url``: the URL (no credentials). ``outcome_unknown``: it may
    have arrived (an enqueue may exist: retry with the same ``unique_id``)."""

    http_status = 503
    code = 503
    error_type = "queue_unavailable"

    def __init__(self, message: str, url: str, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.url = url
        self.outcome_unknown = outcome_unknown


class UnexpectedResponseError(EngineError):
    """``QueueClient``: an answer outside the protocol (an unmapped status, not JSON, a
    malformed TaskInfo). ``status`` (0: in a 200 answer), ``server_code`` the body's ``code``."""

    http_status = 502
    code = 502
    error_type = "unexpected_response"

    def __init__(self, message: str, status: int = 0, server_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.server_code = server_code


# ---------------------------------------------------------------------------- the durable log


class AppMovingError(EngineError):
    """No node dispatches the app right now (its node stopped, or is handing it over): another
    takes it within seconds. Retry (``Retry-After``)."""

    http_status = 503
    code = 503
    error_type = "app_moving"

    def __init__(self, app_id: str) -> None:
        super().__init__(f"app {app_id} has no node dispatching it right now (its node stopped "
                         "or is handing it over; another takes it within seconds): retry")
