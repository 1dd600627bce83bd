"""In-process functions: the ``define`` registry, the run context, and the in-process invoker."""

from __future__ import annotations

import os
import sys
import traceback as tb
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import field
from typing import Any, Protocol, TypeAlias

from cloudqueue.engine.core.commands import Invoke
from cloudqueue.engine.core.events import FailureKind
from cloudqueue.engine.core.progress import parse_progress
from cloudqueue.engine.core.value import value
from cloudqueue.engine.runtime.defined import Defined, check_handler, defined

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
    """A run that did not succeed. ``host_error``: the host, not the function, failed the call
    (a 429, a 5xx that is not the function's own error answer, no answer in time, a broken
    connection): the host-adaptive limit backs off on it (``host_limit.py``)."""

    error: str
    kind: FailureKind = FailureKind.ERROR
    status_code: int | None = None
    host_error: bool = False
    traceback: str | None = None  # an in-process function's, when it raised


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

    def at_host(self, function: str) -> bool:
        """Whether runs of ``function`` tell how loaded the host is that the host-adaptive limit
        protects (``host_limit.py``): every run here; ``Routed``, only the other invoker's."""
        return True


class FunctionRegistry(Invoker):
    """Coroutine functions by name, called as ``await fn(params, ctx)``.

    The result of a successful run is stored as ``{"result": value}``, the shape a LeanEngine
    host answers with, so task info reads the same however the function ran.
    """

    def __init__(self) -> None:
        self._functions: dict[str, Handler] = {}
        self._defaults: dict[str, Defined] = {}
        self.progress_sink: ProgressSink | None = None
        # told each function's own run limit as it is registered (the engine's core)
        self.limit_sink: Callable[[str, int | None], None] | None = None

    def define(self, name: str | Handler | None = None) -> Any:
        """Register a coroutine function: ``@define``, ``@define()`` or ``@define("name")``; a
        function declared with ``cloudqueue.define`` keeps its name and option defaults."""
        if callable(name):
            declared = defined(name)
            if declared is not None:
                self.add(declared)
                return name
            return self._register(name.__name__, name)

        def decorator(fn: Handler) -> Handler:
            return self._register(name if isinstance(name, str) else fn.__name__, fn)

        return decorator

    def _register(self, name: str, fn: Handler, concurrency: int | None = None) -> Handler:
        check_handler(name, fn)
        self._functions[name] = fn
        if self.limit_sink is not None:
            self.limit_sink(name, concurrency)
        return fn

    def add(self, declared: Defined) -> None:
        """Register a function declared with ``cloudqueue.define``, with its defaults and its
        run limit."""
        self._register(declared.name, declared.fn, declared.concurrency)
        if declared.defaults:
            self._defaults[declared.name] = declared
        else:
            self._defaults.pop(declared.name, None)

    @property
    def has_defaults(self) -> bool:
        return bool(self._defaults)

    def with_defaults(self, function: str, options: Mapping[str, Any], *,
                      wire: bool = False) -> Mapping[str, Any]:
        """``options`` (Python names, or REST names with ``wire``) over ``function``'s defaults:
        an option given as None counts as not given."""
        declared = self._defaults.get(function) if self._defaults else None
        if declared is None:
            return options
        defaults = declared.wire_defaults() if wire else declared.defaults
        return {**defaults, **{k: v for k, v in options.items() if v is not None}}

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def names(self) -> list[str]:
        return sorted(self._functions)

    async def invoke(self, command: Invoke) -> Outcome:
        fn = self._functions.get(command.function)
        if fn is None:
            return Failed(f"No such cloud function '{command.function}'")
        ctx = RunContext(command.unique_id, command.function, command.attempt, command.deadline_ms,
                         command.run_seq, self.progress_sink, command.checkpoint, command.slice)
        try:
            value = await fn(command.params, ctx)
        except Exception as exc:  # the function's failure is an outcome, not our error
            return Failed(error_text(exc), traceback=traceback_text(exc))
        if isinstance(value, Continue):
            return Continued(value.checkpoint)
        # whether the log can store it is decided where every outcome becomes an event
        # (EngineCore.run_succeeded), the same for every invoker
        return Succeeded({"result": value})


def error_text(exc: BaseException) -> str:
    """A function's exception as a run's error: its type and message, as Python's traceback
    ends (``KeyError: 'missing thing'``), or its type alone when it has no message."""
    message = str(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def traceback_text(exc: BaseException) -> str:
    """``exc``'s traceback from the function's own frame inwards (the invoker's frame left
    out), with each file shown relative to the ``sys.path`` entry it was imported from
    (``tasks.py``, ``requests/api.py``): shorter, and the same on every machine."""
    trace = tb.TracebackException(type(exc), exc, exc.__traceback__.tb_next
                                  if exc.__traceback__ is not None else None)
    roots = _path_roots()
    seen: set[int] = set()
    pending = [trace]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for frame in current.stack:
            frame.filename = _relative(frame.filename, roots)
        pending.extend(t for t in (current.__cause__, current.__context__) if t is not None)
        pending.extend(current.exceptions or ())
    return "".join(_short_lines("".join(trace.format())))


_MAX_LINE = 500  # a traceback's line (a source line, an exception's message) is cut to this


def _short_lines(text: str) -> list[str]:
    """``text``'s lines, each cut to ``_MAX_LINE`` characters: a huge message (the run's error
    has it whole) leaves room for the frames in the traceback's cap."""
    return [line if len(line) <= _MAX_LINE else f"{line[:_MAX_LINE]}... "
            f"({len(line) - _MAX_LINE} more characters)\n"
            for line in text.splitlines(keepends=True)]


def _path_roots() -> list[str]:
    """The import path's directories, longest first, each ending with the separator."""
    roots = {os.path.join(os.path.abspath(entry or os.curdir), "")
             for entry in sys.path if isinstance(entry, str)}
    return sorted(roots, key=len, reverse=True)


def _relative(filename: str, roots: list[str]) -> str:
    for root in roots:
        if filename.startswith(root):
            return filename[len(root):]
    return filename


class Routed(Invoker):
    """In-process functions beside another invoker (a function host): a function registered
    in-process runs here, every other one there. While the other invoker's target is down the
    driver starts no runs at all, in-process ones included (they wait; nothing is charged)."""

    def __init__(self, local: FunctionRegistry, other: Invoker) -> None:
        self.local = local
        self.other = other

    @property
    def available(self) -> bool:
        return self.other.available

    def set_wake(self, wake: Callable[[], None]) -> None:
        self.other.set_wake(wake)

    async def start(self) -> None:
        await self.other.start()

    async def close(self) -> None:
        await self.other.close()

    async def invoke(self, command: Invoke) -> Outcome:
        if command.function in self.local:
            return await self.local.invoke(command)
        return await self.other.invoke(command)

    def scrub(self, text: str) -> str:
        return self.other.scrub(text)

    def at_host(self, function: str) -> bool:
        """In-process functions run beside the queue, not at the host: their runs teach the
        host-adaptive limit nothing (they still count against it)."""
        return function not in self.local
