"""Snapshots: the live state at one seq, so restart time stays bounded.

A snapshot file ``snapshot-<seq>.snap`` is a run of frames: a header record (``k: "snap"``, the
``seq`` it covers, the record count), the live tasks (queued, running, waiting, or finished within
keepResult: the dedup window) and schedules, and a footer (``k: "end"``, the count again). Frames
make damage detectable; the footer makes a truncated file detectable.

Format 4 (header ``"v": 4``, written now) holds the unfinished tasks as rows in chunks of up to
``CHUNK_TASKS`` (fewer where they are large: a chunk packs to at most ``CHUNK_BYTES``), one frame
per chunk: ``[4, "tasks", [row, ...], row_version]`` (``engine.core.task_rows``: rows of an
earlier row version read with the defaults of the columns added since); the finished ones
(kept for keepResult) in ``[4, "kept", [uniqueId, state, seq, run_seq, expires_ms, row_version,
packed_row, ...]]`` frames (the packed row without its uniqueId), each row packed on its own so
that a restore leaves it packed until it is read (``task_rows.KeptTask``) and a compaction
writes it again unread; and the schedules in ``[4, "schedules", [record, ...]]`` frames.
Format 3 (every task a row in ``"tasks"`` chunks) and format 2 (chunks without a row version:
row version 1) are still read. Format 1 (``"v": 1``, written by cloudqueue 0.1) is not: it
refuses to load with ``LogFormatRetiredError``.

Compaction, crash-safe at every step (``LogStore.compact`` drives it):

1. the log rotates at the snapshot's seq, so segments up to N hold exactly the events <= seq;
2. the snapshot is written to ``.tmp``, fsynced, renamed into place, and the directory fsynced;
3. segments up to N and older snapshots are deleted, and the directory fsynced.

A crash before (2) completes leaves the old state plus a stray ``.tmp`` (deleted on open); after
it, replay loads the snapshot and skips every event at or below its seq, whether or not step (3)
got to delete the segments that hold them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from cloudqueue.engine.core.codec import (
    UnknownRecordKindError,
    decode_record,
    encode_record,
    schedule_from_record,
    schedule_to_record,
)
from cloudqueue.engine.core.errors import LogFormatRetiredError
from cloudqueue.engine.core.framing import CorruptRecordError, TailState, encode_frame, scan
from cloudqueue.engine.core.schedules import Schedule
from cloudqueue.engine.core.task import Task
from cloudqueue.engine.core.task_rows import (
    ROW_VERSION,
    kept_from_items,
    kept_items,
    task_to_row,
    tasks_from_rows,
)
from cloudqueue.engine.runtime.log_file import FileOps, LogCorruptError, list_segments

SNAPSHOT_PREFIX = "snapshot-"
SNAPSHOT_SUFFIX = ".snap"


def snapshot_name(seq: int) -> str:
    return f"{SNAPSHOT_PREFIX}{seq:020d}{SNAPSHOT_SUFFIX}"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.glob(f"{SNAPSHOT_PREFIX}*{SNAPSHOT_SUFFIX}"):
        number = path.name[len(SNAPSHOT_PREFIX):-len(SNAPSHOT_SUFFIX)]
        if number.isdigit():
            found.append((int(number), path))
    return sorted(found)


class SnapshotContents(NamedTuple):
    seq: int
    tasks: list[Task]
    counters: dict[str, Any]
    schedules: list[Schedule]


SNAPSHOT_FORMAT = 4
READ_FORMATS = (2, 3, 4)
CHUNK_TASKS = 4_096
# A chunk's frame is split in halves until it packs to at most this (a frame holds 16 MiB; one
# task row, params and result at most 4 MiB each, always fits).
CHUNK_BYTES = 4 * 1024 * 1024


def encode_snapshot(seq: int, tasks: Iterable[Task], counters: dict[str, Any] | None = None,
                    schedules: Iterable[Schedule] = ()) -> bytes:
    """The bytes of a snapshot at ``seq``. ``counters`` is state beyond the tasks (the day's
    enqueue count for quotas, since when dispatch is paused, the audit list)."""
    task_rows, kept = [], []
    for task in tasks:
        if task.state.is_final:
            kept.append(kept_items(task))
        else:
            task_rows.append(task_to_row(task))
    schedule_records = [schedule_to_record(found) for found in schedules]
    count = len(task_rows) + len(kept) + len(schedule_records)
    header = {"v": SNAPSHOT_FORMAT, "k": "snap", "seq": seq, "n": count,
              "counters": counters or {}}
    footer = {"v": SNAPSHOT_FORMAT, "k": "end", "n": count}
    body = [frame for i in range(0, len(task_rows), CHUNK_TASKS)
            for frame in _chunk_frames("tasks", task_rows[i:i + CHUNK_TASKS])]
    body += [frame for i in range(0, len(kept), CHUNK_TASKS)
             for frame in _chunk_frames("kept", kept[i:i + CHUNK_TASKS])]
    if schedule_records:
        body += _chunk_frames("schedules", schedule_records)
    return b"".join([encode_frame(encode_record(header)), *body,
                     encode_frame(encode_record(footer))])


def _chunk_frames(kind: str, items: list[Any]) -> list[bytes]:
    """``[4, kind, items(, row_version)]`` as one frame, or halved until each part packs to
    ``CHUNK_BYTES`` (a few large tasks would otherwise make a frame over the 16 MiB a frame may
    hold). A kept chunk's items are tuples, written flat."""
    chunk = [SNAPSHOT_FORMAT, kind,
             [item for kept in items for item in kept] if kind == "kept" else items]
    payload = encode_record(chunk + [ROW_VERSION] if kind == "tasks" else chunk)
    if len(payload) <= CHUNK_BYTES or len(items) == 1:
        return [encode_frame(payload)]
    half = len(items) // 2
    return _chunk_frames(kind, items[:half]) + _chunk_frames(kind, items[half:])


def read_snapshot(path: Path) -> SnapshotContents:
    """What a snapshot file holds (format 2 or 3). Raises ``LogCorruptError`` on any damage or
    a format this version cannot read, ``LogFormatRetiredError`` for format 1."""
    return decode_snapshot(path.read_bytes(), path.name, path.parent)


def decode_snapshot(data: bytes, name: str, directory: Path | None = None) -> SnapshotContents:
    """What a snapshot's bytes hold (``name`` says where they came from, in errors): as
    ``read_snapshot``, for snapshots kept elsewhere than in a file (a database)."""
    try:
        result = scan(data)
    except CorruptRecordError as exc:
        raise LogCorruptError(name, exc.offset, exc.reason) from None
    if result.tail is not TailState.CLEAN or len(result.payloads) < 2:
        raise LogCorruptError(name, result.good_end, result.reason or "snapshot incomplete")
    try:
        header = decode_record(result.payloads[0])
        footer = decode_record(result.payloads[-1])
        version = header.get("v") if isinstance(header, dict) else None
        if version == 1:
            raise LogFormatRetiredError(name, directory)
        if version not in READ_FORMATS:  # a newer version wrote it: refuse, naming the version
            raise UnknownRecordKindError("snapshot", version)
        tasks, schedules, count = _body(version, result.payloads[1:-1])
    except UnknownRecordKindError as exc:
        raise LogCorruptError(name, 0, f"unreadable snapshot record: {exc}") from None
    complete = (isinstance(header, dict) and header.get("k") == "snap"
                and isinstance(footer, dict) and footer.get("k") == "end"
                and header.get("n") == footer.get("n") == count)
    if not complete:
        raise LogCorruptError(name, 0, "snapshot header, footer and task count disagree")
    return SnapshotContents(int(header["seq"]), tasks, dict(header.get("counters") or {}),
                            schedules)


def _body(version: int, payloads: list[bytes]) -> tuple[list[Task], list[Schedule], int]:
    tasks: list[Task] = []
    schedules: list[Schedule] = []
    for payload in payloads:
        chunk = decode_record(payload)
        if not (isinstance(chunk, list) and chunk[:1] == [version] and len(chunk) >= 3
                and isinstance(chunk[2], list)):
            raise UnknownRecordKindError("snapshot chunk", version)
        if chunk[1] == "tasks" and len(chunk) == (3 if version == 2 else 4):
            row_version = 1 if version == 2 else chunk[3]
            tasks += tasks_from_rows(chunk[2], row_version)
        elif chunk[1] == "kept" and version >= 4 and len(chunk) == 3:
            tasks += kept_from_items(chunk[2])
        elif chunk[1] == "schedules" and len(chunk) == 3:
            schedules += map(schedule_from_record, chunk[2])
        else:
            raise UnknownRecordKindError(chunk[1], version)
    return tasks, schedules, len(tasks) + len(schedules)


def latest_snapshot(directory: Path, ops: FileOps | None = None) -> SnapshotContents | None:
    """The newest snapshot, after deleting leftovers of a compaction that crashed mid-write."""
    ops = ops or FileOps()
    for leftover in directory.glob(f"{SNAPSHOT_PREFIX}*{SNAPSHOT_SUFFIX}.tmp"):
        ops.unlink(leftover)
    snapshots = list_snapshots(directory)
    return read_snapshot(snapshots[-1][1]) if snapshots else None


def write_snapshot(directory: Path, seq: int, data: bytes, ops: FileOps) -> Path:
    """Step 2: write to .tmp, fsync, rename into place, fsync the directory."""
    final = directory / snapshot_name(seq)
    tmp = final.with_name(final.name + ".tmp")
    ops.write_file(tmp, data)
    ops.replace(tmp, final)
    ops.fsync_dir(directory)
    return final


def remove_covered(directory: Path, last_segment: int, seq: int, ops: FileOps) -> int:
    """Step 3: delete segments up to ``last_segment`` and snapshots older than ``seq``."""
    removed = 0
    for number, path in list_segments(directory):
        if number <= last_segment:
            ops.unlink(path)
            removed += 1
    for snap_seq, path in list_snapshots(directory):
        if snap_seq < seq:
            ops.unlink(path)
    ops.fsync_dir(directory)
    return removed
