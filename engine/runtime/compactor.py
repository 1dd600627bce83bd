"""Compaction's fold, in a process of its own: the snapshot at a seq, made from the files.

A compaction snapshots the state at ``seq`` once the log has rotated there (segments up to
``last_segment`` hold exactly the events at or below it). Taking that state from the live core
meant building a row for every task on the event loop, and encoding them in a thread that
fought the loop for the GIL: with a few hundred thousand tasks held, the queue stopped
answering for seconds. Instead this module folds the previous snapshot and those sealed
segments (``rebuild``, exactly as a start would) and encodes the result, in a child process on
the other core; the queue only reads its output and writes it as the new snapshot. A snapshot
made so is what a restart would have made of the same files.

    python -m engine.runtime.compactor DATA_DIR SEQ LAST_SEGMENT NOW_MS > snapshot-bytes

The child holds the folded state in memory while it runs (about what the queue holds).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import BinaryIO

import msgpack

from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.core.errors import LogError
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.framing import TailState
from cloudqueue.engine.runtime.batches import decode_batch
from cloudqueue.engine.runtime.log_file import BatchReader, list_segments, scan_segment
from cloudqueue.engine.runtime.rebuild import rebuild
from cloudqueue.engine.runtime.snapshot import (
    SnapshotContents,
    decode_snapshot,
    encode_snapshot,
    list_snapshots,
    read_snapshot,
)


def fold(directory: Path, seq: int, last_segment: int, now_ms: int) -> bytes:
    """The snapshot at ``seq``: the newest snapshot at or below it plus every event of the
    segments up to ``last_segment``, folded and encoded.

    Raises:
        LogError: a segment or snapshot that does not read cleanly (a sealed segment never
            ends torn), or events that do not follow.
    """
    base = [(s, path) for s, path in list_snapshots(directory) if s <= seq]
    snapshot = read_snapshot(base[-1][1]) if base else None
    snapshot_seq = snapshot.seq if snapshot is not None else 0
    reader = BatchReader()
    for index, (_, path) in enumerate(s for s in list_segments(directory)
                                      if s[0] <= last_segment):
        scanned = scan_segment(path.name, path.read_bytes())
        if scanned.tail is not TailState.CLEAN:
            raise LogError(f"{path.name} ends torn ({scanned.reason}); it was sealed")
        reader.take(index, path.name, scanned)
    if reader.pending:
        raise LogError("a sealed segment ends inside a batch")
    events = [e for e in reader.events if snapshot_seq < e.seq <= seq]
    return fold_snapshot(seq, snapshot, events, now_ms)


def fold_snapshot(seq: int, snapshot: SnapshotContents | None, events: list[Event],
                  now_ms: int) -> bytes:
    """The snapshot at ``seq``: ``snapshot`` (or nothing) with ``events`` (those after it, up to
    ``seq``) folded in, encoded. Every store compacts through it."""
    snapshot_seq = snapshot.seq if snapshot is not None else 0
    core = rebuild(EngineCore(start_ms=now_ms), events, snapshot_seq=snapshot_seq,
                   snapshot_tasks=snapshot.tasks if snapshot else (),
                   snapshot_schedules=snapshot.schedules if snapshot else (),
                   counters=snapshot.counters if snapshot else None)
    return encode_snapshot(seq, core.tasks(), core.counters(), core.schedules())


def fold_given(stream: BinaryIO) -> bytes:
    """``fold_snapshot`` of what a store that keeps no files streams on ``stream`` (the
    PostgreSQL store): msgpack objects, ``[seq, now_ms]``, then ``[True, part]`` for each part
    of the snapshot to start from (if any) and ``[False, batch]`` for each batch after it."""
    unpacker = msgpack.Unpacker(stream, raw=False, max_buffer_size=0)
    seq, now_ms = next(unpacker)
    parts: list[bytes] = []
    batches: list[bytes] = []
    for is_part, body in unpacker:
        (parts if is_part else batches).append(body)
    snapshot = decode_snapshot(b"".join(parts), "snapshot") if parts else None
    del parts
    floor = snapshot.seq if snapshot is not None else 0
    events = [e for body in batches for e in decode_batch(body) if floor < e.seq <= seq]
    del batches
    return fold_snapshot(seq, snapshot, events, now_ms)


def main(argv: list[str]) -> int:
    # the fold takes a core for seconds: let the queue's own process (and, beside it, the
    # database) have the CPU first, so acknowledgements do not wait behind a compaction
    with contextlib.suppress(OSError):
        os.nice(10)
    if argv == ["-"]:  # the state to fold comes on stdin (``fold_given``)
        try:
            data = fold_given(sys.stdin.buffer)
        except (LogError, ValueError, TypeError) as exc:
            print(f"compaction could not fold the state: {exc}", file=sys.stderr)
            return 1
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    try:
        directory, seq, last_segment, now_ms = Path(argv[0]), *map(int, argv[1:4])
    except (IndexError, ValueError):
        print("usage: python -m engine.runtime.compactor DATA_DIR SEQ LAST_SEGMENT NOW_MS",
              file=sys.stderr)
        return 2
    try:
        data = fold(directory, seq, last_segment, now_ms)
    except (LogError, OSError) as exc:
        print(f"compaction of {directory} could not fold the log: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
