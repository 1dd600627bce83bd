"""In-process functions: the ``define`` registry, the run context, and the in-process invoker."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import field
from typing import Any, Protocol, TypeAlias

from cloudqueue.engine.core.commands import Invoke
from cloudqueue.engine.core.errors import ConfigError, ValidationError
from cloudqueue.engine.core.events import FailureKind
from cloudqueue.engine.core.options import check_function_name
from cloudqueue.engine.core.progress import parse_progress
from cloudqueue.engine.core.value import value

ProgressSink = Callable[[str, int, dict[str, Any]], None]


class Run(Protocol):
    """What a running function gets besides its params, in-process (``RunContext``) or behind
    a function host (``Call``): which run this is, how it reports progress, and how it asks to
    be called again.

    ``unique_id``/``attempt`` are None only for a call that did not come from the queue;
    ``checkpoint`` is what the previous slice continued with (None on the first), ``slice``
    how many slices ran before this one.
    """

    @property
    def unique_id(self) -> str | None: ...

    @property
    def attempt(self) -> int | None: ...

    @property
    def checkpoint(self) -> Any: ...

    @property
    def slice(self) -> int: ...

    async def progress(self, percent: float | None = None, *, done: int | None = None,
                       total: int | None = None, message: str | None = None,
                       detail: Any = None) -> None:
        """Report how far along the run is (shown in the task's info as ``progress``)."""
        ...

    def continue_with(self, checkpoint: Any) -> Any:
        """The value to return to be called again, as the same attempt, with ``checkpoint``
        (a JSON value up to 256 KiB); returning ``Continue(checkpoint)`` does the same."""
        ...


@value
class RunContext:
    """What a running function knows about its run, and how it reports progress (a ``Run``)."""

    unique_id: str
    function: str
    attempt: int
    deadline_ms: int
    run_seq: int = field(default=0, compare=False)
    sink: ProgressSink | None = field(default=None, compare=False, repr=False)
    checkpoint: Any = field(default=None, compare=False)  # from the previous slice, if any
    slice: int = field(default=0, compare=False)  # slices that ran before this one

    async def progress(self, percent: float | None = None, *, done: int | None = None,
                       total: int | None = None, message: str | None = None,
                       detail: Any = None) -> None:
        """Report how far along the run is: a percentage or done/total, a short message, a
        small JSON detail. Shown in task info at once, logged at most every 500 ms.

        Raises:
            ValidationError: a value out of range (the run goes on).
            StaleRunError: this run is no longer the task's current one (it timed out).
        """
        report = parse_progress(percent=percent, done=done, total=total, message=message,
                                detail=detail)
        if self.sink is not None:
            self.sink(self.unique_id, self.run_seq, report)

    @staticmethod
    def continue_with(checkpoint: Any) -> Continue:
        """``return run.continue_with(checkpoint)``: call me again with ``run.checkpoint ==
        checkpoint``, as the same attempt (``Continue(checkpoint)``)."""
        return Continue(checkpoint)


Handler: TypeAlias = Callable[[Any, RunContext], Awaitable[Any]]


@value
class Succeeded:
    result: Any
    status_code: int | None = None


@value
class Failed:
    error: str
    kind: FailureKind = FailureKind.ERROR
    status_code: int | None = None


@value
class Continued:
    """The run is not finished: run again, as the same attempt, from ``checkpoint``."""

    checkpoint: Any


@value
class Continue:
    """Return ``Continue(checkpoint)`` from a function to be called again with
    ``run.checkpoint == checkpoint`` (a JSON value up to 256 KiB), as the same attempt."""

    checkpoint: Any


@value
class Unavailable:
    """Nothing was delivered (host unreachable): no attempt is charged."""

    reason: str


Outcome: TypeAlias = Succeeded | Failed | Unavailable | Continued


class Invoker:
    """Runs one run and classifies how it went. Must not raise for a function's failure.

    ``available`` is False while the invoker knows its target is down (the driver then starts
    no runs); it calls the ``wake`` callback when the target is back.
    """

    _wake: Callable[[], None] | None = None

    @property
    def available(self) -> bool:
        return True

    def set_wake(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def invoke(self, command: Invoke) -> Outcome:  # pragma: no cover - interface
        raise NotImplementedError

    def scrub(self, text: str) -> str:
        """``text`` without any secret this invoker holds (a host URL's password, keys): the
        driver passes every error and log line about a run through it."""
        return text


class FunctionRegistry(Invoker):
    """Coroutine functions by name, called as ``await fn(params, ctx)``.

    The result of a successful run is stored as ``{"result": value}``, the shape a LeanEngine
    host answers with, so task info reads the same however the function ran.
    """

    def __init__(self) -> None:
        self._functions: dict[str, Handler] = {}
        self.progress_sink: ProgressSink | None = None

    def define(self, name: str | Handler | None = None) -> Any:
        """Register a coroutine function: ``@define``, ``@define()`` or ``@define("name")``."""
        if callable(name):
            return self._register(name.__name__, name)

        def decorator(fn: Handler) -> Handler:
            return self._register(name if isinstance(name, str) else fn.__name__, fn)

        return decorator

    def _register(self, name: str, fn: Handler) -> Handler:
        try:
            check_function_name(name)
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(
                f"function {name!r} must be 'async def' (wrap blocking work in asyncio.to_thread)")
        self._functions[name] = fn
        return fn

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    async def invoke(self, command: Invoke) -> Outcome:
        fn = self._functions.get(command.function)
        if fn is None:
            return Failed(f"No such cloud function '{command.function}'")
        ctx = RunContext(command.unique_id, command.function, command.attempt, command.deadline_ms,
                         command.run_seq, self.progress_sink, command.checkpoint, command.slice)
        try:
            value = await fn(command.params, ctx)
        except Exception as exc:  # the function's failure is an outcome, not our error
            return Failed(str(exc) or type(exc).__name__)
        if isinstance(value, Continue):
            return Continued(value.checkpoint)
        # whether the log can store it is decided where every outcome becomes an event
        # (EngineCore.run_succeeded), the same for every invoker
        return Succeeded({"result": value})
