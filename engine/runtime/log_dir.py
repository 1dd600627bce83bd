"""A data directory's files, apart from writing the log: its lock, loading what it holds (the
newest snapshot and the segments after it), creating a segment whole, the format mark, and the
compaction fold in a child process. ``LogStore`` (``log_store``) writes; the log tool and the
tests use these directly too."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

from cloudqueue.engine.core.batch_codec import encode_segment_header
from cloudqueue.engine.core.errors import LogError
from cloudqueue.engine.runtime.log_file import (
    FORMAT_MARK,
    FileOps,
    LogLockedError,
    LogNeedsRepairError,
    format_mark_text,
    read_log,
    segment_name,
)
from cloudqueue.engine.runtime.snapshot import latest_snapshot
from cloudqueue.engine.runtime.store import StoredState

LoadedLog = StoredState  # what the log holds at open (the name the log's tools know it by)


def load_log(directory: Path, ops: FileOps | None = None) -> LoadedLog:
    """The latest snapshot plus every logged event after its seq."""
    started = time.perf_counter()
    try:
        snapshot = latest_snapshot(directory, ops)
    except LogNeedsRepairError as exc:
        raise exc.in_directory(directory) from exc.__cause__
    snapshot_seq, tasks, counters, schedules = snapshot or (0, [], {}, [])
    events, report = read_log(directory, snapshot_seq=snapshot_seq)
    events = [e for e in events if e.seq > snapshot_seq]
    report.snapshot_seq = snapshot_seq
    report.snapshot_tasks = len(tasks)
    report.records = len(events)
    report.seconds = time.perf_counter() - started
    return LoadedLog(tasks, snapshot_seq, events, report, counters, schedules)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the directory's lock (for offline tools): refuses while a queue is running on it."""
    fd = lock_directory(directory)
    try:
        yield
    finally:
        os.close(fd)


def lock_directory(directory: Path) -> int:
    """Take the directory's lock (held while a queue runs on it); its fd, to close to let go."""
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogLockedError(directory) from None
    return fd


async def fold_elsewhere(directory: Path, seq: int, last_segment: int) -> bytes:
    """The snapshot at ``seq``, folded from the files by ``python -m engine.runtime.compactor``
    in a child process (see there why). Raises ``LogError`` if it cannot be made."""
    return await run_compactor([str(directory), str(seq), str(last_segment),
                                str(int(time.time() * 1000))])


async def run_compactor(args: Sequence[str],
                        feed: Callable[[asyncio.StreamWriter], Awaitable[None]] | None = None
                        ) -> bytes:
    """``python -m engine.runtime.compactor ARGS`` in a child process: its output (the
    snapshot's bytes). ``feed`` writes what the child reads on stdin (a store that keeps no
    files streams the state to fold), before the output is read. A child still running when
    this is cancelled (the queue is closing) is killed: no orphan is left behind.

    Raises:
        LogError: the child failed (its last line of stderr says why).
    """
    root = str(Path(__file__).resolve().parents[2])  # where the ``engine`` package lives
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cloudqueue.engine.runtime.compactor", *args,
        stdin=asyncio.subprocess.PIPE if feed is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        if feed is not None:
            assert child.stdin is not None
            await feed(child.stdin)
            child.stdin.close()
        out, err = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise LogError(lines[-1] if lines else f"the compactor exited with {child.returncode}")
    return out


def create_segment(directory: Path, number: int, prev_seq: int, ops: FileOps) -> bytes:
    """Segment ``number`` with its header (``prev_seq``: the last record written before it),
    written under a temporary name, synced and renamed into place: a segment file never exists
    without its header. Returns the header's bytes."""
    path = directory / segment_name(number)
    tmp = path.with_name(path.name + ".tmp")
    header = encode_segment_header(number, prev_seq)
    ops.write_file(tmp, header)
    ops.replace(tmp, path)
    ops.fsync_dir(directory)
    return header


def mark_format(directory: Path, first_headed: int, ops: FileOps) -> None:
    """Say, once, that every segment here from ``first_headed`` on opens with a header (so that
    one without it was emptied, and no segment at all means they were deleted)."""
    path = directory / FORMAT_MARK
    tmp = path.with_name(FORMAT_MARK + ".tmp")
    ops.write_file(tmp, format_mark_text(first_headed))
    ops.replace(tmp, path)
    ops.fsync_dir(directory)
