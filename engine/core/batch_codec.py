"""The log's record format (3): one frame per written batch, records as msgpack arrays; segment
markers.

Format 2 wrote each batch as one frame ``[2, synced_bytes, [record, ...]]``; format 3 (written
now) adds where the batch starts::

    [3, synced_bytes, [record, record, ...], batch_start]

* ``3`` is the format version; a reader that meets a number it does not know refuses to load
  (``UnknownRecordKindError``). Format 2 is still read. Format 1 (a map per record, written by
  cloudqueue 0.1) is not: a log holding it refuses to load with ``LogFormatRetiredError``.
* ``synced_bytes``: how many bytes of the segment were fsynced before this batch was written
  (recovery tells damage to synced data from a torn tail with it).
* ``batch_start``: the segment offset of the batch's first frame. Every frame of a batch carries
  the same value, so recovery can tell "the rest of the one batch a power cut tore" (a torn
  tail) from "later batches after damaged bytes" (corruption) whatever the fsync policy.
* each record is an array ``[kind, seq, t_ms, ...]``: the event's kind number and its fields in
  their declared order, as its ``@logged`` declaration in ``engine.core.events`` says
  (``engine.core.registry``). Options are the dict of non-default fields.

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

from cloudqueue.engine.core.codec import UnknownRecordKindError, decode_record
from cloudqueue.engine.core.errors import LogFormatRetiredError
from cloudqueue.engine.core.events import EVENT_TYPES, Event
from cloudqueue.engine.core.framing import encode_frame
from cloudqueue.engine.core.registry import EventType

LOG_FORMAT = 3
READ_FORMATS = (2, 3)
MAX_FRAME_RECORDS = 4_096
MAX_FRAME_BYTES = 1 << 20  # records' bytes per frame, roughly (params are counted as packed)
MORE = 1  # a 4th payload element: more frames of this batch follow

# ---------------------------------------------------------------------- records


def _compile(declared: EventType) -> tuple[Callable[[Any], list[Any]],
                                            Callable[[list[Any]], Event]]:
    """The event type's encoder and decoder, written out as plain functions from its
    declaration (they run once per record written or replayed: a loop over the fields would
    cost half as much again)::

        def encode(e):                          # RunStarted
            return [1, e.seq, e.t_ms, e.unique_id, e.attempt]
        def decode(r):
            [_, a0, a1, a2, a3] = r
            return cls(a0, a1, a2, a3)

    The last ``optional`` fields are written only when one of them differs from its default,
    and a record may end anywhere among them (the fields it leaves out take their defaults:
    so records written before an optional field was added still read)."""
    names, count = declared.fields, len(declared.fields)
    scope: dict[str, Any] = {"cls": declared.cls, "defaults": declared.defaults}
    stored, loaded = [], []
    for i, name in enumerate(names):
        codec = declared.codecs.get(name)
        scope[f"store{i}"], scope[f"load{i}"] = (codec.encode, codec.decode) if codec else (
            None, None)
        stored.append(f"store{i}(e.{name})" if codec else f"e.{name}")
        loaded.append(f"load{i}(a{i})" if codec else f"a{i}")

    def record(width: int) -> str:
        return f"[{declared.kind}, {', '.join(stored[:width])}]"

    def build(width: int) -> list[str]:
        return [f"[_, {', '.join(f'a{i}' for i in range(width))}] = r",
                f"return cls({', '.join(loaded[:width])})"]

    required = count - declared.optional
    encode, decode = ["def encode(e):"], ["def decode(r):"]
    if declared.optional:
        tail = ", ".join(f"e.{name}" for name in names[required:])
        encode.append(f"    if ({tail},) == defaults: return {record(required)}")
    for width in range(required, count):  # a record that ends among its optional fields
        decode += [f"    if len(r) == {width + 1}:", *(f"        {line}" for line in build(width))]
    encode.append(f"    return {record(count)}")
    decode += [f"    {line}" for line in build(count)]
    exec(compile("\n".join(encode + decode), f"<record {declared.name}>", "exec"), scope)
    return scope["encode"], scope["decode"]


_CODECS = [_compile(t) for t in EVENT_TYPES]
_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {
    t.cls: encode for t, (encode, _) in zip(EVENT_TYPES, _CODECS, strict=True)}
_DECODERS: tuple[Callable[[list[Any]], Event], ...] = tuple(decode for _, decode in _CODECS)
if [t.kind for t in EVENT_TYPES] != list(range(len(EVENT_TYPES))):
    raise TypeError("record kinds must run 0, 1, 2 ... without a gap")
KIND_NAMES: dict[type, str] = {t.cls: t.name for t in EVENT_TYPES}


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


# Segment markers (maps, so no batch reader mistakes them for records).
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
    """The events in one log frame's payload (a segment marker holds none). Raises
    ``UnknownRecordKindError`` for anything it cannot read, ``LogFormatRetiredError`` for a
    format-1 record."""
    return decode_log_frame(payload)[0]


def decode_log_frame(payload: bytes) -> tuple[list[Event], bool]:
    """The events in one log frame's payload, and whether more frames of the same batch follow
    (a split batch: hold its events until its last frame)."""
    decoded = decode_record(payload)
    if decoded.__class__ is list:
        records, more = _batch_records(decoded)
        return _events_of(records), more
    if isinstance(decoded, dict) and decoded.get("k") in (SEGMENT_HEADER, SEGMENT_SEAL):
        return [], False
    if isinstance(decoded, dict) and decoded.get("v") == 1 and isinstance(decoded.get("k"), str):
        raise LogFormatRetiredError()  # format 1: a map per record, and a map per batch marker
    raise UnknownRecordKindError(type(decoded).__name__, None)


def _events_of(records: list[Any]) -> list[Event]:
    """The events of a batch's records, checked, in one loop (replay's inner loop)."""
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
    2), and whether ``more`` frames of it follow."""

    synced: int
    batch_start: int | None
    more: bool


def frame_info(payload: bytes) -> FrameInfo | None:
    """The ``FrameInfo`` of a batch frame (format 2 or 3); None for anything else (a segment
    marker, bytes that do not decode)."""
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
    return None
