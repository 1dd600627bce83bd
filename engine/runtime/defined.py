"""``cloudqueue.define``: declare a Python function as a cloud function, with its own option
defaults, in a module the server (``cloudqueue serve --functions MODULE``) or an embedded
``Engine`` (``engine.register(module)``) picks up.

    import cloudqueue

    @cloudqueue.define
    async def resize(params, run):
        return {"width": params["width"]}

    @cloudqueue.define("send-mail", attempts=3, backoff=5_000, timeout=30_000)
    async def send_mail(params, run):
        ...

The function stays a plain coroutine function (callable, testable); the decorator only marks
it. Its defaults (``attempts``, ``backoff``, ``timeout``, ``delivery_mode``, ``keep_result``,
``deadline``: LeanCloud's options, durations in ms) apply to each enqueue of it that does not
set them, however it is enqueued (REST, the client, ``Engine.enqueue``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, overload

from cloudqueue.engine.core.errors import ConfigError, ValidationError
from cloudqueue.engine.core.options import OPTION_NAMES, check_function_name, parse_options
from cloudqueue.engine.core.value import value

Handler = Callable[[Any, Any], Awaitable[Any]]
MARK = "__cloudqueue_function__"
# the options a function may set defaults for (per task: unique_id, delay, priority)
DEFAULTABLE = frozenset({"attempts", "backoff", "backoff_type", "backoff_max", "timeout",
                         "delivery_mode", "keep_result", "deadline"})
_WIRE = {python: wire for python, wire, _ in OPTION_NAMES}


@value
class Defined:
    """A function declared with ``define``: its name, the coroutine function, and its option
    defaults (Python names, as ``Engine.enqueue`` takes them)."""

    name: str
    fn: Handler
    defaults: Mapping[str, Any]
    concurrency: int | None = None  # runs of this function in flight at most (None: no limit)

    def wire_defaults(self) -> dict[str, Any]:
        """The defaults by their REST names (``deliveryMode``, ``keepResult``)."""
        return {_WIRE[name]: option for name, option in self.defaults.items()}


@overload
def define(name: Handler, /) -> Handler: ...
@overload
def define(name: str | None = None, /, *, concurrency: int | None = None,
           **defaults: Any) -> Callable[[Handler], Handler]: ...


def define(name: str | Handler | None = None, /, *, concurrency: int | None = None,
           **defaults: Any) -> Any:
    """Mark ``async def fn(params, run)`` as a cloud function: ``@define``, ``@define()``,
    ``@define("name")``, ``@define(attempts=3, timeout=30_000)``. ``concurrency``: at most this
    many runs of the function in flight at once, within the app's own ``concurrency`` (e.g.
    for an API that allows two calls at a time); its other tasks wait while the rest run.

    Raises:
        ConfigError: not an ``async def``, a bad name, an option that is not one of
            ``DEFAULTABLE`` or a bad value for it, a ``concurrency`` that is not a whole
            number >= 1.
    """
    if callable(name):
        return _mark(name.__name__, name, {}, None)

    def decorator(fn: Handler) -> Handler:
        return _mark(name if isinstance(name, str) else fn.__name__, fn, defaults, concurrency)

    return decorator


def check_handler(name: str, fn: Any) -> None:
    """Raises ``ConfigError`` for a name that cannot be a cloud function's or a function that is
    not ``async def``: the one check of every function registered, declared or not."""
    try:
        check_function_name(name)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
    if not inspect.iscoroutinefunction(fn):
        raise ConfigError(f"function {name!r} must be 'async def' (wrap blocking work in "
                          "asyncio.to_thread)")


def _mark(name: str, fn: Handler, defaults: Mapping[str, Any],
          concurrency: int | None) -> Handler:
    where = f"function {name!r}"
    check_handler(name, fn)
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(
            concurrency, int) or concurrency < 1):
        raise ConfigError(f"{where}: concurrency must be a whole number >= 1 (runs in flight "
                          f"at once), got {concurrency!r}")
    other = sorted(set(defaults) - DEFAULTABLE)
    if other:
        raise ConfigError(f"{where}: {other[0]!r} cannot be a function's default; the defaults "
                          f"are {', '.join(sorted(DEFAULTABLE))}")
    try:
        parse_options(defaults, wire=False)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    setattr(fn, MARK, Defined(name, fn, dict(defaults), concurrency))
    return fn


def defined(fn: Any) -> Defined | None:
    """The declaration of a function marked by ``define``, or None."""
    found = getattr(fn, MARK, None)
    return found if isinstance(found, Defined) else None


def defined_in(items: Iterable[ModuleType | Handler]) -> list[Defined]:
    """Every function declared with ``define`` among ``items`` (modules, searched for them, or
    functions). Raises ``ConfigError`` for two functions of one name, or a module with none."""
    found: dict[str, Defined] = {}
    for item in items:
        if isinstance(item, ModuleType):
            declared = [d for d in map(defined, vars(item).values()) if d is not None]
            if not declared:
                raise ConfigError(f"module {item.__name__!r} declares no function with "
                                  "@cloudqueue.define")
        else:
            one = defined(item)
            if one is None:
                raise ConfigError(f"{item!r} is not declared with @cloudqueue.define")
            declared = [one]
        for declaration in declared:
            same = found.get(declaration.name)
            if same is not None and same.fn is not declaration.fn:
                raise ConfigError(f"two functions are named {declaration.name!r}")
            found[declaration.name] = declaration
    return list(found.values())


def import_functions(module_names: Iterable[str], directory: Path | None = None
                     ) -> list[ModuleType]:
    """Import the modules ``cloudqueue serve --functions`` names, from ``directory`` (default:
    the current one) or wherever Python finds them. Raises ``ConfigError`` saying which module
    failed and why, never a traceback."""
    where = str(directory or Path.cwd())
    if where not in sys.path:
        sys.path.insert(0, where)
    modules = []
    for module_name in module_names:
        try:
            modules.append(importlib.import_module(module_name))
        except ModuleNotFoundError as exc:
            if exc.name != module_name.split(".")[0] and exc.name != module_name:
                raise ConfigError(f"--functions {module_name}: it imports {exc.name!r}, which "
                                  f"is not installed") from None
            raise ConfigError(f"--functions {module_name}: no module {module_name!r} in "
                              f"{where} or on the Python path (for ./tasks.py, say "
                              "--functions tasks)") from None
        except Exception as exc:  # the user's module failed while loading: say how
            raise ConfigError(f"--functions {module_name}: importing it failed: "
                              f"{type(exc).__name__}: {exc}") from None
    return modules
