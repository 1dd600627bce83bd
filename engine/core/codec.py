"""Stored values: msgpack with the log's settings, task options, schedules, and the field codecs
the event registry (``engine.core.registry``) names for fields that are not stored as they are.

Options are stored as the dict of only the fields that differ from the defaults, so a default
task costs a few bytes. A schedule is stored as a map with short keys (in a ``ScheduleSet``
record, and in a snapshot with its state). Everything is written out by hand: a renamed Python
field must never silently change what is on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum, StrEnum
from typing import Any, NamedTuple

import msgpack

from cloudqueue.engine.core.errors import RECORD_SCHEMA_VERSION
from cloudqueue.engine.core.errors import (
    UnknownRecordKindError as UnknownRecordKindError,  # re-export
)
from cloudqueue.engine.core.options import BackoffType, DeliveryMode, TaskOptions
from cloudqueue.engine.core.schedules import Schedule, ScheduleSpec

SCHEMA_VERSION = RECORD_SCHEMA_VERSION  # the version of the map records (schedules in snapshots)

# ---------------------------------------------------------------------- msgpack

_packer = msgpack.Packer(use_bin_type=True)


def encode_record(record: Any) -> bytes:
    return bytes(_packer.pack(record))


def decode_record(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise UnknownRecordKindError("undecodable msgpack", None) from exc


# ---------------------------------------------------------------------- options

_DEFAULT_OPTIONS = TaskOptions()
_OPTION_FIELDS = ("attempts", "backoff_ms", "delay_ms", "delivery_mode", "keep_result_ms",
                  "priority", "timeout_ms", "deadline_ms", "backoff_type", "backoff_max_ms")
_CACHE_MAX = 4_096
_ENCODED_OPTIONS: dict[int, tuple[TaskOptions, dict[str, Any]]] = {}
_OPTIONS_CACHE: dict[tuple[tuple[str, Any], ...], TaskOptions] = {}


def options_to_dict(options: TaskOptions) -> dict[str, Any]:
    """The non-default fields of ``options``, computed once per options object: enqueues share
    their validated options objects. The dict is shared: never mutate it."""
    found = _ENCODED_OPTIONS.get(id(options))
    if found is not None and found[0] is options:
        return found[1]
    encoded: dict[str, Any] = {}
    for name in _OPTION_FIELDS:
        value = getattr(options, name)
        if value != getattr(_DEFAULT_OPTIONS, name):
            encoded[name] = value.value if isinstance(value, StrEnum) else value
    if len(_ENCODED_OPTIONS) >= _CACHE_MAX:
        _ENCODED_OPTIONS.clear()
    _ENCODED_OPTIONS[id(options)] = (options, encoded)  # holding options keeps its id unique
    return encoded


def options_from_dict(data: dict[str, Any]) -> TaskOptions:
    """Options from their stored dict (log records and snapshots). Options are immutable and
    most tasks share a handful of option sets: each set is decoded once (faster replay, and one
    object in memory for all the tasks that share it)."""
    if not data:
        return _DEFAULT_OPTIONS
    key = tuple(data.items())  # written in one fixed order, so no need to sort
    cached = _OPTIONS_CACHE.get(key)
    if cached is not None:
        return cached
    fields = dict(data)
    if "delivery_mode" in fields:
        fields["delivery_mode"] = DeliveryMode(fields["delivery_mode"])
    if "backoff_type" in fields:
        fields["backoff_type"] = BackoffType(fields["backoff_type"])
    options = TaskOptions(**fields)
    if len(_OPTIONS_CACHE) >= _CACHE_MAX:
        _OPTIONS_CACHE.clear()
    _OPTIONS_CACHE[key] = options
    return options


# ---------------------------------------------------------------------- schedules


def schedule_to_dict(spec: ScheduleSpec) -> dict[str, Any]:
    return {"name": spec.name, "fn": spec.function, "p": spec.params, "cron": spec.cron,
            "every": spec.interval_ms, "tz": spec.timezone, "o": options_to_dict(spec.options),
            "paused": spec.paused}


def schedule_from_dict(data: dict[str, Any]) -> ScheduleSpec:
    return ScheduleSpec(data["name"], data["fn"], data["p"], data["cron"], data["every"],
                        data["tz"], options_from_dict(data["o"]), data["paused"])


def schedule_to_record(schedule: Schedule) -> dict[str, Any]:
    """A schedule's whole state, for a snapshot."""
    return {"v": SCHEMA_VERSION, "k": "schedule", "spec": schedule_to_dict(schedule.spec),
            "c": schedule.created_ms, "last": schedule.last_slot_ms, "from": schedule.after_ms}


def schedule_from_record(record: Any) -> Schedule:
    try:
        return Schedule(schedule_from_dict(record["spec"]), record["c"], record["last"],
                        after_ms=record.get("from"))
    except (KeyError, ValueError, TypeError) as exc:
        raise UnknownRecordKindError("schedule", SCHEMA_VERSION) from exc


# ---------------------------------------------------------------------- field codecs


class FieldCodec(NamedTuple):
    """How one field of a logged event is stored: ``encode`` turns the field's value into what
    the record holds, ``decode`` turns that back (both total on good data; ``decode`` raises
    ``ValueError``, ``TypeError``, ``KeyError`` ... on a record it cannot read)."""

    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _messages_from(stored: Any) -> tuple[tuple[int, str], ...]:
    return tuple((int(t), str(m)) for t, m in stored)


OPTIONS = FieldCodec("options: the dict of non-default fields", options_to_dict,
                     options_from_dict)
SCHEDULE = FieldCodec("schedule: a map (schedule_to_dict)", schedule_to_dict, schedule_from_dict)
MESSAGES = FieldCodec("messages: [[t_ms, text], ...]", lambda messages: [list(m) for m in messages],
                      _messages_from)


def enum_value(kind: type[Enum]) -> FieldCodec:
    """An enum stored as its value."""
    return FieldCodec(f"{kind.__name__}: its value", lambda member: member.value, kind)
