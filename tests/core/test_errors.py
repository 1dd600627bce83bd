"""Errors carry structure, not prose: every engine error keeps its facts as attributes and puts
them in its ``{code, error, ...}`` body next to the message; all live in engine.core.errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from cloudqueue.engine.core import codec, errors, framing, quotas
from cloudqueue.engine.core.errors import (
    ERROR_TYPES,
    ConfigError,
    CorruptionKind,
    CorruptRecordError,
    DiskFullError,
    DuplicateTaskError,
    EngineClosedError,
    EngineError,
    ForbiddenError,
    InvalidTransitionError,
    LogCorruptError,
    LogError,
    LogFormatRetiredError,
    LogGapError,
    LogInconsistentError,
    LogLockedError,
    LogNeedsRepairError,
    LogPoisonedError,
    OutcomeUnknownError,
    QuotaExceededError,
    StaleRunError,
    UnauthorizedError,
    UnknownRecordKindError,
    UnknownScheduleError,
    UnknownTaskError,
    ValidationError,
)

CASES: list[tuple[EngineError, int, dict[str, Any]]] = [
    (DuplicateTaskError("a", "queued", "retry_wait"), 409,
     {"type": "duplicate_task", "uniqueId": "a", "status": "queued", "state": "retry_wait"}),
    (DuplicateTaskError.within_batch("a", 2, 0), 409,
     {"type": "duplicate_task", "uniqueId": "a", "status": "queued", "state": "queued",
      "index": 2}),
    (UnknownScheduleError("nightly"), 404, {"type": "unknown_schedule", "schedule": "nightly"}),
    (StaleRunError("a", 4), 409, {"type": "stale_run", "uniqueId": "a", "runSeq": 4}),
    (InvalidTransitionError("a", "running", "cancel"), 409,
     {"type": "invalid_transition", "uniqueId": "a", "state": "running", "trigger": "cancel"}),
    (ForbiddenError("needs the master key"), 119, {"type": "forbidden"}),
    (ConfigError("bad port"), 1, {"type": "config"}),
    (EngineClosedError("the engine is closing"), 503, {"type": "engine_closed"}),
    (QuotaExceededError("held", "too many", 1000), 429,
     {"type": "quota_exceeded", "quota": "held", "retryAfterMs": 1000}),
    (LogError("the log is not running"), 503, {"type": "log"}),
    (LogPoisonedError("EIO"), 503, {"type": "log_poisoned"}),
    (DiskFullError("full"), 507, {"type": "disk_full"}),
    (OutcomeUnknownError("fsync failed", "u1"), 503,
     {"type": "outcome_unknown", "uniqueId": "u1"}),
    (UnknownRecordKindError("zzz", 9), 503,
     {"type": "unknown_record_kind", "recordKind": "zzz", "schemaVersion": 9}),
    (UnknownRecordKindError(b"\x00", None), 503,
     {"type": "unknown_record_kind", "recordKind": "b'\\x00'"}),
    (CorruptRecordError(41, "crc mismatch at offset 41", CorruptionKind.CRC_MISMATCH), 503,
     {"type": "corrupt_record", "offset": 41, "reasonKind": "crc_mismatch"}),
    (LogCorruptError("wal-1.log", 7, "zero length", CorruptionKind.ZERO_LENGTH), 503,
     {"type": "log_corrupt", "segment": "wal-1.log", "offset": 7, "reasonKind": "zero_length"}),
    (LogCorruptError("wal-1.log", 7, "seq 3 does not follow 5"), 503,
     {"type": "log_corrupt", "segment": "wal-1.log", "offset": 7}),
    (LogInconsistentError(12, "RunStarted", "no task 'a'"), 503,
     {"type": "log_inconsistent", "seq": 12, "recordKind": "RunStarted"}),
    (LogGapError("segment 3 is missing").in_directory(Path("/data/app")), 503,
     {"type": "log_gap", "directory": "/data/app"}),
    (LogNeedsRepairError("broken"), 503, {"type": "log_needs_repair"}),
    (LogFormatRetiredError("wal-1.log", Path("/data/app")), 503,
     {"type": "log_format_retired", "file": "wal-1.log", "directory": "/data/app"}),
    (LogLockedError(Path("/data/app")), 503, {"type": "log_locked", "directory": "/data/app"}),
]


@pytest.mark.parametrize(("error", "code", "fields"), CASES,
                         ids=[f"{type(c[0]).__name__}-{i}" for i, c in enumerate(CASES)])
def test_the_body_carries_the_errors_fields_next_to_code_and_message(
        error: EngineError, code: int, fields: dict[str, Any]) -> None:
    body = error.body()
    assert body == {"code": code, "error": str(error), **fields}
    assert json.loads(json.dumps(body)) == body  # JSON as it is
    assert ERROR_TYPES[body["type"]] is type(error)


def test_leanclouds_exact_bodies_are_kept() -> None:
    assert UnknownTaskError("nope").body() == {"code": 404, "error": "Task 'nope' not found"}
    assert UnauthorizedError().body() == {"code": 401, "error": "Unauthorized."}
    refused = ValidationError("bad", "delay").at_item(3)
    # LeanCloud's code and message, and the extension fields a client can act on
    assert refused.body() == {"code": 1, "error": "item 3: bad", "type": "validation",
                              "field": "delay", "index": 3}
    assert (refused.field, refused.index) == ("delay", 3)


def test_codes_and_messages_are_unchanged() -> None:
    assert str(InvalidTransitionError("a", "running", "cancel")) == (
        "Task 'a' is running: cannot cancel it")
    assert str(LogCorruptError("wal-1.log", 7, "zero length")).startswith(
        "log segment wal-1.log is damaged at offset 7: zero length; run `cloudqueue log repair")
    assert (LogError.code, DiskFullError.code, ForbiddenError.code, QuotaExceededError.code) == (
        503, 507, 119, 429)


def test_every_error_type_is_named_once_and_every_class_lives_in_errors() -> None:
    classes = [v for v in vars(errors).values()
               if isinstance(v, type) and issubclass(v, EngineError)]
    named = [c for c in classes if c.error_type is not None]
    assert len({c.error_type for c in named}) == len(named)
    assert set(ERROR_TYPES.values()) == set(named)
    assert {c for c in classes if c.error_type is None} == {EngineError, UnknownTaskError,
                                                            UnauthorizedError}


def test_the_old_import_locations_still_work() -> None:
    from cloudqueue.engine.runtime import log_file
    assert log_file.LogCorruptError is LogCorruptError
    assert log_file.LogGapError is LogGapError
    assert log_file.LogInconsistentError is LogInconsistentError
    assert log_file.LogLockedError is LogLockedError
    assert log_file.LogNeedsRepairError is LogNeedsRepairError
    assert codec.UnknownRecordKindError is UnknownRecordKindError
    assert quotas.QuotaExceededError is QuotaExceededError
    assert framing.CorruptRecordError is CorruptRecordError
    assert codec.SCHEMA_VERSION == errors.RECORD_SCHEMA_VERSION


def test_structured_errors_survive_pickling() -> None:
    for error in (CorruptRecordError(3, "zero length at offset 3", CorruptionKind.ZERO_LENGTH),
                  ValidationError("bad", "delay", 2)):
        copy = pickle.loads(pickle.dumps(error))
        assert str(copy) == str(error)
    copy = pickle.loads(pickle.dumps(CorruptRecordError(3, "x", CorruptionKind.OVER_CAP)))
    assert copy.reason_kind is CorruptionKind.OVER_CAP


def test_only_an_intact_frame_of_an_unknown_type_can_never_be_torn() -> None:
    assert [k for k in CorruptionKind if not k.may_be_torn] == [
        CorruptionKind.UNKNOWN_FRAME_TYPE]
