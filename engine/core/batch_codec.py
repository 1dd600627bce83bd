"""Log format 3: one frame per written batch, records as msgpack arrays; segment markers.

Format 1 (``codec``) framed every record on its own, as a msgpack map with string keys, and
opened every written batch with a marker frame. Writing and replaying were dominated by that
per-record work. Format 2 wrote each batch as one frame ``[2, synced_bytes, [record, ...]]``;
format 3 (written now) adds where the batch starts::

    [3, synced_bytes, [record, record, ...], batch_start]

* ``3`` is the format version; a reader that meets a number it does not know refuses to load
  (``UnknownRecordKindError``). Formats 2 and 1 are still read.
* ``synced_bytes``: how many bytes of the segment were fsynced before this batch was written
  (recovery tells damage to synced data from a torn tail with it).
* ``batch_start``: the segment offset of the batch's first frame. Every frame of a batch carries
  the same value, so recovery can tell "the rest of the one batch a power cut tore" (a torn
  tail) from "later batches after damaged bytes" (corruption) whatever the fsync policy.
* each record is an array ``[kind, seq, t_ms, id, ...]`` with the kind's fields in a fixed order
  (the tables below: written out by hand per kind, so a renamed Python field can never change
  what is on disk). Options are the dict of non-default fields, exactly as in format 1.

A batch larger than ``MAX_FRAME_RECORDS`` records or ``MAX_FRAME_BYTES`` bytes of records is
split over several frames; every frame but the last ends with ``1`` ("more follow"), and replay
holds such records until the batch's last frame, so a batch comes back whole or not at all. A
batch is acknowledged only after all its frames are written (and, under ``fsync=always``,
synced), so losing a torn batch whole loses nothing acknowledged.

Segment markers are maps (``{"k": "segment", "no": n, "prev_seq": s}`` opening every segment,
``{"k": "sealed", "next": n + 1, "last_seq": s}`` closing one that was followed), so a batch
reader never takes them for records; ``engine.runtime.log_file`` checks the chain they make.

Example: two enqueues sharing one fsync at segment offset 4096, the first with ``delay=10``::

    [3, 4096, [[0, 7, 1700000000000, "a", "f", {}, {"delay_ms": 10}, 1700000000000],
               [0, 8, 1700000000001, "b", "f", {"i": 1}, {}, 1700000000001]], 4096]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import msgpack

from cloudqueue.engine.core.codec import (
    UnknownRecordKindError,
    _options_to_dict,
    decode_record,
    from_record,
    options_from_dict,
    schedule_from_dict,
    schedule_to_dict,
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
from cloudqueue.engine.core.framing import encode_frame
from cloudqueue.engine.core.options import TaskOptions

LOG_FORMAT = 3
READ_FORMATS = (2, 3)
MAX_FRAME_RECORDS = 4_096
MAX_FRAME_BYTES = 1 << 20  # records' bytes per frame, roughly (params are counted as packed)
MORE = 1  # a 4th payload element: more frames of this batch follow

# Record kinds of format 2 (never renumber: they are on disk).
(SUB, START, OK, FAIL, REQUEUE, CANCEL, CONT, PROG, PURGE, SSET, SPAUSE, SDEL, SSKIP,
 WOKEN) = range(14)

# ---------------------------------------------------------------------- options

_ENCODED_OPTIONS: dict[int, tuple[TaskOptions, dict[str, Any]]] = {}
_OPTIONS_CACHE_MAX = 4_096


def options_to_dict(options: TaskOptions) -> dict[str, Any]:
    """The non-default fields of ``options`` (format 1's ``"o"``), computed once per options
    object: enqueues share their validated options objects. The dict is shared: never mutate."""
    found = _ENCODED_OPTIONS.get(id(options))
    if found is not None and found[0] is options:
        return found[1]
    encoded = _options_to_dict(options)
    if len(_ENCODED_OPTIONS) >= _OPTIONS_CACHE_MAX:
        _ENCODED_OPTIONS.clear()
    _ENCODED_OPTIONS[id(options)] = (options, encoded)  # holding options keeps its id unique
    return encoded


# ---------------------------------------------------------------------- records


def _submitted(e: TaskSubmitted) -> list[Any]:
    record = [SUB, e.seq, e.t_ms, e.unique_id, e.function, e.params, options_to_dict(e.options),
              e.priority]
    if e.schedule is not None:
        record += [e.schedule, e.slot_ms]
    return record


_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {
    TaskSubmitted: _submitted,
    RunStarted: lambda e: [START, e.seq, e.t_ms, e.unique_id, e.attempt],
    RunSucceeded: lambda e: [OK, e.seq, e.t_ms, e.unique_id, e.run_seq, e.result, e.status_code],
    RunFailed: lambda e: [FAIL, e.seq, e.t_ms, e.unique_id, e.run_seq, e.error, e.kind.value,
                          e.status_code],
    RunRequeued: lambda e: [REQUEUE, e.seq, e.t_ms, e.unique_id, e.run_seq, e.reason],
    TaskCancelled: lambda e: [CANCEL, e.seq, e.t_ms, e.unique_id],
    RunContinued: lambda e: [CONT, e.seq, e.t_ms, e.unique_id, e.run_seq, e.checkpoint],
    ProgressReported: lambda e: [PROG, e.seq, e.t_ms, e.unique_id, e.run_seq, e.progress,
                                 [list(m) for m in e.messages]],
    TaskPurged: lambda e: [PURGE, e.seq, e.t_ms, e.unique_id],
    ScheduleSet: lambda e: [SSET, e.seq, e.t_ms, schedule_to_dict(e.spec)],
    SchedulePaused: lambda e: [SPAUSE, e.seq, e.t_ms, e.name, e.paused],
    ScheduleDeleted: lambda e: [SDEL, e.seq, e.t_ms, e.name],
    ScheduleSkipped: lambda e: [SSKIP, e.seq, e.t_ms, e.name, e.skipped, e.last_slot_ms],
    TaskWoken: lambda e: [WOKEN, e.seq, e.t_ms, e.unique_id],
}


def to_array(event: Event) -> list[Any]:
    """The array that represents ``event`` in a format-2 batch."""
    return _ENCODERS[type(event)](event)


def _decode_submitted(r: list[Any]) -> TaskSubmitted:
    if len(r) > 8:
        return TaskSubmitted(r[1], r[2], r[3], r[4], r[5], options_from_dict(r[6]), r[7], r[8],
                             r[9])
    return TaskSubmitted(r[1], r[2], r[3], r[4], r[5], options_from_dict(r[6]), r[7])


_DECODERS: tuple[Callable[[list[Any]], Event], ...] = (
    _decode_submitted,
    lambda r: RunStarted(r[1], r[2], r[3], r[4]),
    lambda r: RunSucceeded(r[1], r[2], r[3], r[4], r[5], r[6]),
    lambda r: RunFailed(r[1], r[2], r[3], r[4], r[5], FailureKind(r[6]), r[7]),
    lambda r: RunRequeued(r[1], r[2], r[3], r[4], r[5]),
    lambda r: TaskCancelled(r[1], r[2], r[3]),
    lambda r: RunContinued(r[1], r[2], r[3], r[4], r[5]),
    lambda r: ProgressReported(r[1], r[2], r[3], r[4], r[5],
                               tuple((int(t), str(m)) for t, m in r[6])),
    lambda r: TaskPurged(r[1], r[2], r[3]),
    lambda r: ScheduleSet(r[1], r[2], schedule_from_dict(r[3])),
    lambda r: SchedulePaused(r[1], r[2], r[3], r[4]),
    lambda r: ScheduleDeleted(r[1], r[2], r[3]),
    lambda r: ScheduleSkipped(r[1], r[2], r[3], r[4], r[5]),
    lambda r: TaskWoken(r[1], r[2], r[3]),
)


def from_array(record: Any) -> Event:
    """The event a format-2 record stands for. Raises ``UnknownRecordKindError``."""
    try:
        kind = record[0]
        if kind.__class__ is not int or not 0 <= kind < len(_DECODERS):
            raise UnknownRecordKindError(kind, LOG_FORMAT)
        return _DECODERS[kind](record)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise UnknownRecordKindError(type(record).__name__, LOG_FORMAT) from exc


# ---------------------------------------------------------------------- batches


_packer = msgpack.Packer(use_bin_type=True)


def encode_batch(events: Sequence[Event], synced_bytes: int, batch_start: int) -> bytes:
    """The frames of one written batch (one frame, unless the batch is very large), to be
    written at segment offset ``batch_start`` after ``synced_bytes`` of it were fsynced."""
    records = [_ENCODERS[type(event)](event) for event in events]
    if len(records) <= MAX_FRAME_RECORDS:
        payload = bytes(_packer.pack([LOG_FORMAT, synced_bytes, records, batch_start]))
        if len(payload) <= MAX_FRAME_BYTES or len(records) == 1:
            return encode_frame(payload)  # the common case: one frame
    chunks = _chunks(records)
    last = len(chunks) - 1
    # every frame but the last says "more follow": replay takes a split batch whole or not at
    # all (a crash between its frames must not bring back part of an unacknowledged batch)
    return b"".join(encode_frame(bytes(_packer.pack(
        [LOG_FORMAT, synced_bytes, chunk, batch_start] if i == last else
        [LOG_FORMAT, synced_bytes, chunk, batch_start, MORE])))
        for i, chunk in enumerate(chunks))


# Segment markers (maps, like format 1's records, so no batch reader mistakes them for records).
# Every segment opens with a header naming its number and the seq of the last record written
# before it; a segment that was followed by a new one ends with a seal naming that one. Together
# they make a missing or emptied segment, and a missing snapshot, detectable.
SEGMENT_HEADER = "segment"
SEGMENT_SEAL = "sealed"


def encode_segment_header(number: int, prev_seq: int) -> bytes:
    return encode_frame(bytes(_packer.pack({"k": SEGMENT_HEADER, "no": number,
                                            "prev_seq": prev_seq})))


def encode_segment_seal(next_number: int, last_seq: int) -> bytes:
    return encode_frame(bytes(_packer.pack({"k": SEGMENT_SEAL, "next": next_number,
                                            "last_seq": last_seq})))


def segment_marker(payload: bytes) -> tuple[str, int, int] | None:
    """``("segment", number, prev_seq)`` or ``("sealed", next_number, last_seq)`` for a segment
    marker's payload; None for anything else."""
    try:
        decoded = decode_record(payload)
    except UnknownRecordKindError:
        return None
    if not isinstance(decoded, dict):
        return None
    kind = decoded.get("k")
    if kind == SEGMENT_HEADER:
        values = decoded.get("no"), decoded.get("prev_seq")
    elif kind == SEGMENT_SEAL:
        values = decoded.get("next"), decoded.get("last_seq")
    else:
        return None
    if not all(v.__class__ is int and v >= 0 for v in values):
        return None
    return kind, values[0], values[1]  # type: ignore[return-value]


def _chunks(records: list[list[Any]]) -> list[list[list[Any]]]:
    """Split records into frame-sized runs, measuring each record's packed size."""
    chunks: list[list[list[Any]]] = [[]]
    size = 0
    for record in records:
        length = len(_packer.pack(record))
        chunk = chunks[-1]
        if chunk and (size + length > MAX_FRAME_BYTES or len(chunk) >= MAX_FRAME_RECORDS):
            chunks.append([])
            chunk, size = chunks[-1], 0
        chunk.append(record)
        size += length
    return chunks


def decode_log_payload(payload: bytes) -> list[Event]:
    """The events in one log frame's payload, of either format (a format-1 batch marker holds
    none). Raises ``UnknownRecordKindError`` for anything it cannot read."""
    return decode_log_frame(payload)[0]


def decode_log_frame(payload: bytes) -> tuple[list[Event], bool]:
    """The events in one log frame's payload, and whether more frames of the same batch follow
    (a split format-2 batch: hold its events until its last frame)."""
    decoded = decode_record(payload)
    if decoded.__class__ is list:
        records, more = _batch_records(decoded)
        return _events_of(records), more
    if isinstance(decoded, dict) and decoded.get("k") in _MARKERS:
        return [], False
    return [from_record(decoded)], False


_MARKERS = frozenset({"batch", SEGMENT_HEADER, SEGMENT_SEAL})


def _events_of(records: list[Any]) -> list[Event]:
    """``from_array`` over a batch, with its checks, in one loop (replay's inner loop)."""
    events: list[Event] = []
    append = events.append
    decoders = _DECODERS
    last = len(decoders)
    try:
        for record in records:
            kind = record[0]
            if kind.__class__ is not int or not 0 <= kind < last:
                raise UnknownRecordKindError(kind, LOG_FORMAT)
            append(decoders[kind](record))
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise UnknownRecordKindError("record", LOG_FORMAT) from exc
    return events


def _batch_records(batch: list[Any]) -> tuple[list[Any], bool]:
    """A batch payload's records and its "more frames follow" flag. Format 3 is ``[3, synced,
    records, batch_start(, MORE)]``; format 2 (still read) ``[2, synced, records(, MORE)]``."""
    version = batch[0] if batch else None
    fixed = 4 if version == 3 else 3
    if (version not in READ_FORMATS or len(batch) not in (fixed, fixed + 1)
            or batch[2].__class__ is not list or (len(batch) > fixed and batch[fixed] != MORE)
            or (version == 3 and batch[3].__class__ is not int)):
        raise UnknownRecordKindError("batch", version)
    records: list[Any] = batch[2]
    return records, len(batch) > fixed


class FrameInfo(NamedTuple):
    """What a batch frame says about where it stands: ``synced`` bytes of the segment were
    fsynced before its batch was written, the batch began at ``batch_start`` (None in format
    2 and format 1), and whether ``more`` frames of it follow."""

    synced: int
    batch_start: int | None
    more: bool


def frame_info(payload: bytes) -> FrameInfo | None:
    """The ``FrameInfo`` of a batch frame (format 2 or 3) or a format-1 batch marker; None for
    anything else (a format-1 record, a segment marker, bytes that do not decode)."""
    try:
        decoded = decode_record(payload)
    except UnknownRecordKindError:
        return None
    if decoded.__class__ is list:
        try:
            _, more = _batch_records(decoded)
        except UnknownRecordKindError:
            return None
        start = decoded[3] if decoded[0] == 3 else None
        return FrameInfo(decoded[1], start, more) if decoded[1].__class__ is int else None
    if isinstance(decoded, dict) and decoded.get("k") == "batch":
        synced = decoded.get("synced")
        return FrameInfo(synced, None, False) if synced.__class__ is int else None
    return None


def payload_synced(payload: bytes) -> int | None:
    """How many bytes were synced before the batch holding this payload was written (a format-1
    marker or a format-2/3 batch), None for anything else."""
    info = frame_info(payload)
    return None if info is None else info.synced
