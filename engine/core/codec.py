"""Events <-> log records: explicit, versioned, msgpack-ready dicts.

Every record is a dict with ``"v"`` (schema version), ``"k"`` (kind), ``"seq"`` and ``"t"``
(t_ms), plus short keys for the kind's fields. Options are stored as only the fields that differ
from the defaults, so a default task costs a few bytes. The mapping is written out by hand for
each kind: a renamed Python field must never silently change what is on disk, and a record of an
unknown kind or a newer version refuses to load (``UnknownRecordKindError``) rather than being
misread.

Example: ``TaskSubmitted(seq=7, t_ms=1700000000000, unique_id="a", function="f", params={},
options=TaskOptions(attempts=3), priority=1700000000000)`` is stored as::

    {"v": 1, "k": "sub", "seq": 7, "t": 1700000000000, "id": "a", "fn": "f", "p": {},
     "o": {"attempts": 3}, "pri": 1700000000000}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from cloudqueue.engine.core.errors import RECORD_SCHEMA_VERSION
from cloudqueue.engine.core.errors import (
    UnknownRecordKindError as UnknownRecordKindError,  # re-export
)
from cloudqueue.engine.core.events import (
    Event,
    FailureKind,
    ProgressReported,
    RunContinued,
    RunFailed,
    RunRequeued,
    RunStarted,
    RunSucceeded,
    ScheduleDeleted,
    SchedulePaused,
    ScheduleSet,
    ScheduleSkipped,
    TaskCancelled,
    TaskPurged,
    TaskSubmitted,
    TaskWoken,
)
from cloudqueue.engine.core.options import DeliveryMode, TaskOptions
from cloudqueue.engine.core.schedules import Schedule, ScheduleSpec
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import ABSENT, Task

SCHEMA_VERSION = RECORD_SCHEMA_VERSION
_DEFAULT_OPTIONS = TaskOptions()
_OPTION_FIELDS = ("attempts", "backoff_ms", "delay_ms", "delivery_mode", "keep_result_ms",
                  "priority", "timeout_ms", "deadline_ms")


def _options_to_dict(options: TaskOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _OPTION_FIELDS:
        value = getattr(options, name)
        if value != getattr(_DEFAULT_OPTIONS, name):
            out[name] = value.value if isinstance(value, DeliveryMode) else value
    return out


_OPTIONS_CACHE: dict[tuple[tuple[str, Any], ...], TaskOptions] = {}
_OPTIONS_CACHE_MAX = 4_096


def options_from_dict(data: dict[str, Any]) -> TaskOptions:
    """Options from their stored dict (both log formats and snapshots). Options are immutable
    and most tasks share a handful of option sets: each set is decoded once (faster replay, and
    one object in memory for all the tasks that share it)."""
    if not data:
        return _DEFAULT_OPTIONS
    key = tuple(data.items())  # written in one fixed order, so no need to sort
    cached = _OPTIONS_CACHE.get(key)
    if cached is not None:
        return cached
    fields = dict(data)
    if "delivery_mode" in fields:
        fields["delivery_mode"] = DeliveryMode(fields["delivery_mode"])
    options = TaskOptions(**fields)
    if len(_OPTIONS_CACHE) >= _OPTIONS_CACHE_MAX:
        _OPTIONS_CACHE.clear()
    _OPTIONS_CACHE[key] = options
    return options


def _head(kind: str, event: Event) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "k": kind, "seq": event.seq, "t": event.t_ms,
            "id": event.unique_id}


def _submitted(event: TaskSubmitted) -> dict[str, Any]:
    record = {**_head("sub", event), "fn": event.function, "p": event.params,
              "o": _options_to_dict(event.options), "pri": event.priority}
    if event.schedule is not None:
        record["sch"] = [event.schedule, event.slot_ms]
    return record


_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    TaskSubmitted: _submitted,
    RunStarted: lambda e: {**_head("start", e), "a": e.attempt},
    RunSucceeded: lambda e: {**_head("ok", e), "run": e.run_seq, "r": e.result,
                             "sc": e.status_code},
    RunFailed: lambda e: {**_head("fail", e), "run": e.run_seq, "e": e.error,
                          "kind": e.kind.value, "sc": e.status_code},
    RunRequeued: lambda e: {**_head("requeue", e), "run": e.run_seq, "why": e.reason},
    TaskCancelled: lambda e: _head("cancel", e),
    RunContinued: lambda e: {**_head("cont", e), "run": e.run_seq, "cp": e.checkpoint},
    ProgressReported: lambda e: {**_head("prog", e), "run": e.run_seq, "p": e.progress,
                                 "m": [list(m) for m in e.messages]},
    TaskPurged: lambda e: _head("purge", e),
    ScheduleSet: lambda e: {**_head("sset", e), "spec": schedule_to_dict(e.spec)},
    SchedulePaused: lambda e: {**_head("spause", e), "paused": e.paused},
    ScheduleDeleted: lambda e: _head("sdel", e),
    ScheduleSkipped: lambda e: {**_head("sskip", e), "n": e.skipped, "last": e.last_slot_ms},
    TaskWoken: lambda e: _head("wake", e),
}


def to_record(event: Event) -> dict[str, Any]:
    """The dict that represents ``event`` in the log."""
    return _ENCODERS[type(event)](event)


_DECODERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    "sub": lambda r: TaskSubmitted(r["seq"], r["t"], r["id"], r["fn"], r["p"],
                                   options_from_dict(r["o"]), r["pri"],
                                   *(r["sch"] if "sch" in r else (None, None))),
    "sset": lambda r: ScheduleSet(r["seq"], r["t"], schedule_from_dict(r["spec"])),
    "spause": lambda r: SchedulePaused(r["seq"], r["t"], r["id"], r["paused"]),
    "sdel": lambda r: ScheduleDeleted(r["seq"], r["t"], r["id"]),
    "sskip": lambda r: ScheduleSkipped(r["seq"], r["t"], r["id"], r["n"], r["last"]),
    "start": lambda r: RunStarted(r["seq"], r["t"], r["id"], r["a"]),
    "ok": lambda r: RunSucceeded(r["seq"], r["t"], r["id"], r["run"], r["r"], r["sc"]),
    "fail": lambda r: RunFailed(r["seq"], r["t"], r["id"], r["run"], r["e"],
                                FailureKind(r["kind"]), r["sc"]),
    "requeue": lambda r: RunRequeued(r["seq"], r["t"], r["id"], r["run"], r["why"]),
    "cancel": lambda r: TaskCancelled(r["seq"], r["t"], r["id"]),
    "cont": lambda r: RunContinued(r["seq"], r["t"], r["id"], r["run"], r["cp"]),
    "prog": lambda r: ProgressReported(r["seq"], r["t"], r["id"], r["run"], r["p"],
                                       tuple((int(t), str(m)) for t, m in r["m"])),
    "purge": lambda r: TaskPurged(r["seq"], r["t"], r["id"]),
    "wake": lambda r: TaskWoken(r["seq"], r["t"], r["id"]),
}


def from_record(record: Any) -> Event:
    """The event a log record stands for.

    Raises:
        UnknownRecordKindError: an unknown kind or schema version, or a record missing a field.
    """
    if not isinstance(record, dict):
        raise UnknownRecordKindError(type(record).__name__, None)
    version, kind = record.get("v"), record.get("k")
    decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
    if version != SCHEMA_VERSION or decoder is None:
        raise UnknownRecordKindError(kind, version)
    try:
        return decoder(record)
    except (KeyError, ValueError, TypeError) as exc:
        raise UnknownRecordKindError(kind, version) from exc


def schedule_to_dict(spec: ScheduleSpec) -> dict[str, Any]:
    return {"name": spec.name, "fn": spec.function, "p": spec.params, "cron": spec.cron,
            "every": spec.interval_ms, "tz": spec.timezone, "o": _options_to_dict(spec.options),
            "paused": spec.paused}


def schedule_from_dict(data: dict[str, Any]) -> ScheduleSpec:
    return ScheduleSpec(data["name"], data["fn"], data["p"], data["cron"], data["every"],
                        data["tz"], options_from_dict(data["o"]), data["paused"])


def schedule_to_record(schedule: Schedule) -> dict[str, Any]:
    """A schedule's whole state, for a snapshot."""
    return {"v": SCHEMA_VERSION, "k": "schedule", "spec": schedule_to_dict(schedule.spec),
            "c": schedule.created_ms, "last": schedule.last_slot_ms, "from": schedule.after_ms}


def schedule_from_record(record: dict[str, Any]) -> Schedule:
    try:
        return Schedule(schedule_from_dict(record["spec"]), record["c"], record["last"],
                        after_ms=record.get("from"))
    except (KeyError, ValueError, TypeError) as exc:
        raise UnknownRecordKindError("schedule", SCHEMA_VERSION) from exc


def task_to_record(task: Task) -> dict[str, Any]:
    """A live task's whole state, for a snapshot (derived state is rebuilt on restore)."""
    record = {"v": SCHEMA_VERSION, "k": "task", "id": task.unique_id, "fn": task.function,
              "p": task.params, "o": _options_to_dict(task.options), "pri": task.priority,
              "seq": task.seq, "c": task.created_ms, "st": task.state.value, "a": task.attempt,
              "run": task.run_seq, "s": task.started_ms, "f": task.finished_ms,
              "sc": task.status_code, "e": task.error, "ra": task.retry_at_ms}
    if task.result is not ABSENT:
        record["r"] = task.result
    if task.schedule is not None:
        record["sch"] = task.schedule
    if task.progress is not None:
        record["prog"] = [task.progress, task.progress_ms, [list(m) for m in task.messages]]
    if task.slices:
        record["cont"] = [task.checkpoint, task.slices]
    return record


def _progress_fields(stored: Any) -> dict[str, Any]:
    if not stored:
        return {}
    progress, at_ms, messages = stored
    return {"progress": progress, "progress_ms": at_ms,
            "messages": tuple((int(t), str(m)) for t, m in messages)}


def _continuation_fields(stored: Any) -> dict[str, Any]:
    if not stored:
        return {}
    checkpoint, slices = stored
    return {"checkpoint": checkpoint, "slices": slices}


def task_from_record(record: Any) -> Task:
    """Raises ``UnknownRecordKindError`` for anything but a task record of this version."""
    if not isinstance(record, dict):
        raise UnknownRecordKindError(type(record).__name__, None)
    if record.get("k") != "task" or record.get("v") != SCHEMA_VERSION:
        raise UnknownRecordKindError(record.get("k"), record.get("v"))
    try:
        return Task(record["id"], record["fn"], record["p"], options_from_dict(record["o"]),
                    record["pri"], record["seq"], record["c"], TaskState(record["st"]),
                    record["a"], record["run"], record["s"], record["f"], record["sc"],
                    record.get("r", ABSENT), record["e"], record["ra"],
                    schedule=record.get("sch"), **_progress_fields(record.get("prog")),
                    **_continuation_fields(record.get("cont")))
    except (KeyError, ValueError, TypeError) as exc:
        raise UnknownRecordKindError("task", SCHEMA_VERSION) from exc


_packer = msgpack.Packer(use_bin_type=True)


def encode_event(event: Event) -> bytes:
    """``event`` as msgpack bytes (the payload of one log frame)."""
    return bytes(_packer.pack(to_record(event)))


def encode_record(record: Any) -> bytes:
    return bytes(_packer.pack(record))


def decode_record(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise UnknownRecordKindError("undecodable msgpack", None) from exc


def batch_marker(synced_bytes: int) -> bytes:
    """The record that opens every written batch: how many bytes of its segment were fsynced
    before the batch was written. Recovery uses it to tell damage in bytes that were never
    synced (a torn tail, whatever survived after it) from damage to synced data (corruption)."""
    return encode_record({"v": SCHEMA_VERSION, "k": "batch", "synced": synced_bytes})


def batch_synced(payload: bytes) -> int | None:
    """The ``synced`` of a batch marker payload; None for anything else."""
    try:
        record = decode_record(payload)
    except UnknownRecordKindError:
        return None
    if isinstance(record, dict) and record.get("k") == "batch":
        synced = record.get("synced")
        return synced if isinstance(synced, int) else None
    return None


def decode_log_record(payload: bytes) -> Event | None:
    """The event in a log frame's payload, or None for a batch marker."""
    record = decode_record(payload)
    if isinstance(record, dict) and record.get("k") == "batch":
        return None
    return from_record(record)


def decode_event(payload: bytes) -> Event:
    """The event in one frame's payload. Raises ``UnknownRecordKindError`` on anything else."""
    return from_record(decode_record(payload))
