"""The error hierarchy shared by the core, the runtime and the adapters.

Every error knows the HTTP status and the LeanCloud error ``code`` it maps to, so one piece of
middleware can turn any of them into a ``{"code": ..., "error": ...}`` body (h11's
``error_status_hint``). Expected outcomes of a run (a function failed, timed out) are *events*,
not exceptions; an exception escaping the core is a bug.
"""

from __future__ import annotations

from typing import Any, ClassVar


class EngineError(Exception):
    """Base of every error the queue raises on purpose. Never raised itself."""

    http_status: ClassVar[int] = 500
    code: ClassVar[int] = 1

    def body(self) -> dict[str, Any]:
        """The LeanCloud error body for this error."""
        return {"code": self.code, "error": str(self)}


class ValidationError(EngineError, ValueError):
    """An enqueue request or option that cannot be accepted as given.

    ``field`` names the offending option in the caller's spelling where known.
    """

    http_status = 400
    code = 1

    def __init__(self, message: str, field: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.index = index  # which item of an ``enqueue_many`` batch, if it was one

    def at_item(self, index: int) -> ValidationError:
        """The same refusal, naming item ``index`` of a batch."""
        return ValidationError(f"item {index}: {self}", self.field, index)


class DuplicateTaskError(EngineError):
    """The uniqueId is still held by a task (queued, running, waiting, or finished within
    its keepResult window)."""

    http_status = 409
    code = 409

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

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "error": str(self), "uniqueId": self.unique_id,
                "status": self.status}


class UnknownTaskError(EngineError):
    """No task with this uniqueId: it never existed or its keepResult window has passed."""

    http_status = 404
    code = 404

    def __init__(self, unique_id: str) -> None:
        super().__init__(f"Task '{unique_id}' not found")
        self.unique_id = unique_id


class UnknownScheduleError(EngineError):
    http_status = 404
    code = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"Schedule '{name}' not found")
        self.name = name


class StaleRunError(EngineError):
    """A report from a run that is no longer the task's current one (it timed out, or the task
    moved on): refused, so an old run cannot overwrite the new one's progress."""

    http_status = 409
    code = 409

    def __init__(self, unique_id: str, run_seq: int) -> None:
        super().__init__(f"run {run_seq} of task '{unique_id}' is not running any more")
        self.unique_id = unique_id
        self.run_seq = run_seq


class InvalidTransitionError(EngineError):
    """A trigger that the task's current state does not allow (e.g. cancelling a running task)."""

    http_status = 409
    code = 409

    def __init__(self, task_id: str, state: str, trigger: str) -> None:
        super().__init__(f"Task '{task_id}' is {state}: cannot {trigger.replace('_', ' ')} it")
        self.task_id = task_id
        self.state = state
        self.trigger = trigger


class UnauthorizedError(EngineError):
    """Missing or wrong credentials: LeanCloud's ``{"code":401,"error":"Unauthorized."}``."""

    http_status = 401
    code = 401

    def __init__(self) -> None:
        super().__init__("Unauthorized.")


class ForbiddenError(EngineError):
    """Valid credentials whose role may not do this (app key where the master key is needed)."""

    http_status = 403
    code = 119


class ConfigError(EngineError, ValueError):
    """A configuration value that cannot be used."""

    http_status = 500
    code = 1


class EngineClosedError(EngineError):
    """The engine is shutting down or stopped and takes no more work."""

    http_status = 503
    code = 503


class LogError(EngineError):
    """Base of the durable log's errors."""

    http_status = 503
    code = 503


class LogPoisonedError(LogError):
    """A write or fsync failed: nothing more is acknowledged until a restart replays the log.

    The original ``OSError`` is the ``__cause__``.
    """


class DiskFullError(LogError):
    """The disk is full (ENOSPC): nothing was acknowledged; writing resumes once space is freed."""

    http_status = 507
    code = 507


class OutcomeUnknownError(LogError):
    """The records were written but their fsync failed: whether they are on disk is unknown
    (after a failed fsync the kernel may have dropped the pages, or may still write them). The
    caller must not take it as "not stored": retrying with the same uniqueId is safe (a task
    that did survive answers 409)."""

    def __init__(self, message: str, unique_id: str | None = None) -> None:
        super().__init__(message)
        self.unique_id = unique_id

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.unique_id is not None:
            body["uniqueId"] = self.unique_id
        return body
