"""One batch of events as bytes, and back: the log's batch encoding (``batch_codec``), CRC
framed, for stores that keep each group commit as a unit of its own (the PostgreSQL store keeps
one per row). The log's files hold the same frames."""

from __future__ import annotations

from collections.abc import Sequence

from cloudqueue.engine.core.batch_codec import decode_log_frame, encode_batch
from cloudqueue.engine.core.errors import LogError
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.framing import CorruptRecordError, TailState, scan


def encode_events(events: Sequence[Event]) -> bytes:
    return encode_batch(events, 0, 0)


def decode_batch(data: bytes, where: str = "a batch") -> list[Event]:
    """The events of ``encode_events``'s bytes.

    Raises:
        LogError: bytes that are damaged, cut short, or not a whole batch.
    """
    try:
        result = scan(data)
    except CorruptRecordError as exc:
        raise LogError(f"{where} is damaged at offset {exc.offset}: {exc.reason}") from None
    if result.tail is not TailState.CLEAN:
        raise LogError(f"{where} is damaged: {result.reason or 'cut short'}")
    events: list[Event] = []
    more = False
    for payload in result.payloads:
        found, more = decode_log_frame(payload)
        events += found
    if more:
        raise LogError(f"{where} ends inside a batch")
    return events
