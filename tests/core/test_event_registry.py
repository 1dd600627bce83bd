"""One declaration per event: the registry drives the record codec, the watchers' updates and
the samples, and a table of handlers by event type (the core's appliers) is checked against it."""

from __future__ import annotations

from typing import Any, get_args

import msgpack
import pytest

from cloudqueue.engine.core.batch_codec import KIND_NAMES, decode_log_payload, encode_batch
from cloudqueue.engine.core.codec import UnknownRecordKindError
from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.core.errors import EngineError
from cloudqueue.engine.core.events import (
    EVENT_TYPES,
    Event,
    RunStarted,
    TaskCancelled,
    TaskSubmitted,
    dispatch_table,
)
from cloudqueue.engine.core.framing import scan
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.core.registry import logged
from cloudqueue.engine.core.value import value
from cloudqueue.engine.runtime.watchers import _KINDS
from tests.core.sample_events import EVENTS, T


def record_of(event: Event) -> Any:
    """The record the log writes for ``event`` (alone in a batch)."""
    (payload,) = scan(encode_batch([event], 0, 0)).payloads
    return msgpack.unpackb(payload)[2][0]


def event_of(record: Any) -> Event:
    (event,) = decode_log_payload(msgpack.packb([3, 0, [record], 0]))
    return event


def test_every_registered_event_has_a_sample_and_every_sample_is_registered() -> None:
    assert {type(e) for e in EVENTS} == {t.cls for t in EVENT_TYPES}


def test_the_event_type_names_every_registered_event() -> None:
    assert set(get_args(Event)) == {t.cls for t in EVENT_TYPES}


def test_kinds_run_from_zero_with_a_name_each() -> None:
    assert [t.kind for t in EVENT_TYPES] == list(range(len(EVENT_TYPES)))
    assert len({t.name for t in EVENT_TYPES}) == len(EVENT_TYPES)
    assert KIND_NAMES[TaskSubmitted] == "sub" and KIND_NAMES[RunStarted] == "start"


def test_a_record_is_the_kind_then_the_fields_in_their_declared_order() -> None:
    event = RunStarted(4, T + 1, "a", 1)
    assert record_of(event) == [1, 4, T + 1, "a", 1]
    assert event_of([1, 4, T + 1, "a", 1]) == event


def test_optional_trailing_fields_are_left_out_while_they_hold_their_defaults() -> None:
    plain = TaskSubmitted(1, T, "a", "f", {}, TaskOptions(), T)
    fired = TaskSubmitted(2, T, "cron:s:5", "f", {}, TaskOptions(delay_ms=5), 5, "s", 5)
    assert record_of(plain) == [0, 1, T, "a", "f", {}, {}, T]
    assert record_of(fired) == [0, 2, T, "cron:s:5", "f", {}, {"delay_ms": 5}, 5, "s", 5]
    assert [event_of(record_of(e)) for e in (plain, fired)] == [plain, fired]
    # a record that ends among them (written before the last was added) reads with defaults
    assert event_of([0, 2, T, "x", "f", {}, {}, 5, "s"]) == TaskSubmitted(
        2, T, "x", "f", {}, TaskOptions(), 5, "s", None)
    with pytest.raises(UnknownRecordKindError):
        event_of([0, 2, T, "x", "f", {}, {}])  # a required field missing
    with pytest.raises(UnknownRecordKindError):
        event_of([0, 2, T, "x", "f", {}, {}, 5, "s", 5, "more"])  # one more than it knows


def test_watchers_send_the_update_each_declaration_names() -> None:
    assert _KINDS == {t.cls: t.live for t in EVENT_TYPES if t.live}
    assert _KINDS[TaskSubmitted] == "queued" and TaskCancelled not in _KINDS


def test_the_core_has_an_applier_for_every_registered_event() -> None:
    """Each sample reaches its applier. Applied to an empty core it may be refused (its task
    is not there): what matters is that the core did not lack a handler for its type."""
    for event in EVENTS:
        try:
            EngineCore(start_ms=T).apply(event)
        except (EngineError, LookupError) as exc:
            missing = isinstance(exc, KeyError) and exc.args == (type(event),)
            assert not missing, f"no applier for {type(event).__name__}"


def test_a_handler_table_must_cover_every_registered_event() -> None:
    handlers: dict[type[Any], str] = {t.cls: t.name for t in EVENT_TYPES}
    assert dispatch_table(handlers) == handlers
    del handlers[TaskCancelled]
    with pytest.raises(TypeError, match="no handler for TaskCancelled"):
        dispatch_table(handlers)


def test_a_handler_for_a_class_that_is_not_a_registered_event_is_refused() -> None:
    handlers: dict[type[Any], str] = {t.cls: t.name for t in EVENT_TYPES}
    with pytest.raises(TypeError, match="int is not a registered event"):
        dispatch_table({**handlers, int: "int"})


def test_a_kind_number_or_name_cannot_be_registered_twice() -> None:
    @value
    class Twice:
        seq: int
        t_ms: int

    with pytest.raises(TypeError, match="kind 1 or name 'x' is taken by RunStarted"):
        logged(1, "x")(Twice)
    with pytest.raises(TypeError, match="is taken by TaskSubmitted"):
        logged(99, "sub")(Twice)


def test_optional_fields_need_defaults_and_every_record_opens_with_seq_and_time() -> None:
    @value
    class NoDefault:
        seq: int
        t_ms: int
        name: str

    @value
    class NoTime:
        seq: int
        name: str

    with pytest.raises(TypeError, match="optional field 'name' has no default"):
        logged(98, "nodefault", optional=1)(NoDefault)
    with pytest.raises(TypeError, match="first fields must be seq, t_ms"):
        logged(97, "notime")(NoTime)
