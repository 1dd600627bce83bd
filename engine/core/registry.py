"""The registry of logged events: one declaration per event type says how it is stored.

An event class in ``engine.core.events`` is declared with ``@logged(kind, name, ...)`` above
its ``@value``, and that one declaration drives everything that depends on the event's type:

* the log's record format (``engine.core.batch_codec``): the record is an array
  ``[kind, field, field, ...]``, the class's fields in their declared order, each stored as it
  is unless the declaration names a ``FieldCodec`` for it (``engine.core.codec``); the last
  ``optional`` fields are left out of the record while they all hold their defaults, and a
  record that ends among them reads with the defaults of those it leaves out;
* ``name``: the kind's name, as ``cloudqueue log inspect`` counts records;
* ``live``: the update a watcher of the task is sent for it (``engine.runtime.watchers``), if any;
* ``events.dispatch_table``: whoever handles events by type (the core's appliers) checks its table
  against the registry, so an event nobody handles is found when the table is built.

``kind`` numbers are on disk: never renumber one, never reuse a retired one. Adding a field to
an event changes its record: add it at the end with a default and count it in ``optional``
(records written before it then still read), or declare a new event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any, NamedTuple, TypeVar

from cloudqueue.engine.core.codec import FieldCodec

_T = TypeVar("_T")
_H = TypeVar("_H")


class EventType(NamedTuple):
    """One registered event type (see the module's docstring)."""

    cls: type[Any]
    kind: int
    name: str
    fields: tuple[str, ...]  # the record's fields after the kind, in order
    codecs: Mapping[str, FieldCodec]  # fields not stored as they are
    optional: int  # how many trailing fields may be left out (they hold their defaults)
    defaults: tuple[Any, ...]  # the defaults of those trailing fields
    live: str | None  # the watcher update it causes


_REGISTERED: dict[int, EventType] = {}


def logged(kind: int, name: str, /, *, live: str | None = None, optional: int = 0,
           **codecs: FieldCodec) -> Callable[[type[_T]], type[_T]]:
    """Register the event class below (a ``@value`` class) as record kind ``kind``."""

    def register(cls: type[_T]) -> type[_T]:
        declared = fields(cls)  # type: ignore[arg-type]
        names = tuple(f.name for f in declared)
        tail = declared[len(declared) - optional:] if optional else ()
        problems = [f"kind {kind} or name {name!r} is taken by {t.cls.__name__}"
                    for t in _REGISTERED.values() if kind == t.kind or name == t.name]
        problems += [f"no field {f!r}" for f in codecs if f not in names]
        problems += [f"optional field {f.name!r} has no default" for f in tail
                     if f.default is MISSING]
        if problems or names[:2] != ("seq", "t_ms"):
            raise TypeError(f"cannot register {cls.__name__}: "
                            + "; ".join(problems or ["its first fields must be seq, t_ms"]))
        _REGISTERED[kind] = EventType(cls, kind, name, names, dict(codecs), optional,
                                      tuple(f.default for f in tail), live)
        return cls

    return register


def registered() -> tuple[EventType, ...]:
    """Every registered event type, by kind."""
    return tuple(_REGISTERED[kind] for kind in sorted(_REGISTERED))


def checked_table(registry: tuple[EventType, ...],
                  handlers: Mapping[type[Any], _H]) -> dict[type[Any], _H]:
    """``handlers`` as a dict, once checked to hold exactly one handler per registered event
    class. Raises ``TypeError`` naming the classes missing or not registered."""
    classes = {t.cls for t in registry}
    missing = sorted(t.cls.__name__ for t in registry if t.cls not in handlers)
    unknown = sorted(cls.__name__ for cls in handlers if cls not in classes)
    if missing or unknown:
        raise TypeError("event handlers do not match the registered events: "
                        + "; ".join([*(f"no handler for {n}" for n in missing),
                                     *(f"{n} is not a registered event" for n in unknown)]))
    return dict(handlers)
