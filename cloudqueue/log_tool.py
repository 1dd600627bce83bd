"""``cloudqueue log inspect|verify|repair|compact DATA_DIR``: the operator's view of the log.

``inspect`` and ``verify`` only read (no lock, no truncation). Their exit status: 0 clean, 1 a
torn tail (the queue cuts it by itself at the next start), 2 damage that keeps the queue from
starting (run ``repair``); 3 means the command could not act (e.g. a queue holds the directory).
``repair`` copies the directory to a backup, salvages every valid
record, replays what still makes sense, and rewrites the directory as one snapshot. ``compact``
does offline what the running queue does on its own.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cloudqueue.engine.core.batch_codec import (
    KIND_NAMES,
    SEGMENT_HEADER,
    SEGMENT_SEAL,
    decode_log_payload,
    segment_marker,
)
from cloudqueue.engine.core.codec import UnknownRecordKindError
from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.core.errors import LogError, LogFormatRetiredError
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.framing import TailState, salvage
from cloudqueue.engine.core.schedules import Schedule
from cloudqueue.engine.core.task import Task
from cloudqueue.engine.runtime.log_dir import create_segment, locked, mark_format
from cloudqueue.engine.runtime.log_file import (
    BatchReader,
    FileOps,
    LogCorruptError,
    LogGapError,
    LogInconsistentError,
    LogLockedError,
    SegmentRead,
    SegmentWalk,
    apply_logged,
    headed_from,
    list_segments,
    segment_name,
)
from cloudqueue.engine.runtime.log_store import LogStore
from cloudqueue.engine.runtime.rebuild import rebuild
from cloudqueue.engine.runtime.snapshot import (
    encode_snapshot,
    list_snapshots,
    read_snapshot,
    remove_covered,
    write_snapshot,
)

CLEAN, TORN, DAMAGED, REFUSED = 0, 1, 2, 3


class Progress:
    """A one-line progress bar on stderr, drawn only on a terminal and at most 10 times a second."""

    def __init__(self, total: int, label: str, out: TextIO = sys.stderr) -> None:
        self.total, self.label, self.out = max(total, 1), label, out
        self.done = 0
        self._drawn = 0.0
        self._on = out.isatty()

    def add(self, amount: int) -> None:
        self.done += amount
        now = time.monotonic()
        if self._on and (now - self._drawn >= 0.1 or self.done >= self.total):
            self._drawn = now
            filled = int(30 * min(self.done, self.total) / self.total)
            self.out.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
                           f"{100 * min(self.done, self.total) // self.total:3d}%")
            if self.done >= self.total:
                self.out.write("\n")
            self.out.flush()


@dataclass
class Inspection:
    status: int = CLEAN
    snapshot_seq: int = 0
    snapshot_tasks: list[Task] = field(default_factory=list)
    snapshot_schedules: list[Schedule] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    problem: str | None = None


def inspect(directory: Path) -> Inspection:
    """Read everything, change nothing."""
    result = Inspection()
    snapshots = list_snapshots(directory)
    if snapshots:
        try:
            _take_snapshot(result, *snapshots[-1])
        except LogCorruptError as exc:
            return _damaged(result, str(exc))
    return _take_segments(result, directory)


def _take_snapshot(result: Inspection, seq: int, path: Path) -> None:
    contents = read_snapshot(path)
    result.snapshot_seq, result.snapshot_tasks = contents.seq, contents.tasks
    result.counters, result.snapshot_schedules = contents.counters, contents.schedules
    result.lines.append(f"snapshot: {path.name}, seq {seq}, "
                        f"{len(result.snapshot_tasks)} tasks, {_size(path)}")


def _take_segments(result: Inspection, directory: Path) -> Inspection:
    segments = list_segments(directory)
    progress = Progress(sum(p.stat().st_size for _, p in segments), "reading")
    reader = BatchReader()  # as the engine reads: a split batch counts once its last frame is in
    walk = SegmentWalk(segments, result.snapshot_seq, headed_from(directory), reader)
    try:
        for read in walk:
            progress.add(len(read.data))
            _take_segment(result, read, reader.events[read.first_event:])
    except LogCorruptError as exc:
        return _damaged(result, f"{exc.segment} is damaged at offset {exc.offset}: "
                                f"{exc.reason}")
    except LogGapError as exc:
        return _damaged(result, f"acknowledged records are missing: {exc.what}")
    except UnknownRecordKindError as exc:
        return _damaged(result, f"{walk.current.name if walk.current else '?'}: {exc}")
    if reader.pending and result.status != TORN:
        where, offset = segments[reader.pending_at[0]][1].name, reader.pending_at[1]
        result.status = TORN
        result.problem = (f"{where} ends inside a batch split over frames, at offset {offset}: "
                          f"its {len(reader.pending)} records were never acknowledged and will "
                          "be cut at the next start")
    return result


def _take_segment(result: Inspection, read: SegmentRead, events: list[Event]) -> None:
    name, scanned = read.path.name, read.scanned
    result.lines.append(f"segment: {name}, {len(events)} records, {_size(read.path)}")
    if scanned.tail is TailState.TORN:
        result.status = TORN
        result.problem = (f"torn tail in {name} at offset {scanned.good_end}: "
                          f"{scanned.dropped_bytes} bytes will be cut at the next start "
                          f"({scanned.reason})")
    for event in events:
        result.kinds[KIND_NAMES[type(event)]] += 1
    result.events.extend(e for e in events if e.seq > result.snapshot_seq)


def _damaged(result: Inspection, problem: str) -> Inspection:
    result.status = DAMAGED
    result.problem = problem
    return result


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1024:.1f} KiB"


def replay(snapshot_tasks: Iterable[Task], snapshot_seq: int, events: Iterable[Event],
           lenient: bool = False, counters: dict[str, Any] | None = None,
           schedules: Iterable[Schedule] = ()) -> tuple[EngineCore, int]:
    """A core rebuilt from a snapshot and events as a start rebuilds it (``rebuild``; no
    recovery, no runs). With ``lenient`` (repair), events that no longer make sense (their cause
    was lost to damage) are dropped and counted."""
    core = EngineCore(start_ms=int(time.time() * 1000))
    if not lenient:
        return rebuild(core, events, snapshot_seq=snapshot_seq, snapshot_tasks=snapshot_tasks,
                       snapshot_schedules=schedules, counters=counters), 0
    rebuild(core, (), snapshot_seq=snapshot_seq, snapshot_tasks=snapshot_tasks,
            snapshot_schedules=schedules, counters=counters)
    dropped = 0
    for event in events:
        if event.seq <= core.last_seq:
            dropped += 1
            continue
        try:
            apply_logged(core.apply, (event,))
        except LogInconsistentError:
            dropped += 1
    return core, dropped


def describe(directory: Path, out: TextIO, verbose: bool = True) -> int:
    """Print what the log holds (``verbose``) and how its tail stands. The records are folded
    into a core exactly as a start does, so whatever would keep the queue from starting makes
    this report damage too."""
    found = inspect(directory)
    core = None
    if found.status != DAMAGED:
        try:
            core, _ = replay(found.snapshot_tasks, found.snapshot_seq, found.events,
                             counters=found.counters, schedules=found.snapshot_schedules)
        except LogInconsistentError as exc:
            found.lines.append(f"replay: {exc}")
            _damaged(found, f"record seq {exc.seq} ({exc.kind}) does not follow from the "
                            f"records before it: {exc.reason}")
    for line in found.lines if verbose else ():
        print(line, file=out)
    if core is not None and verbose:
        states = Counter(task.state.value for task in core.tasks())
        print(f"records: {sum(found.kinds.values())} ("
              + ", ".join(f"{k} {n}" for k, n in sorted(found.kinds.items())) + ")", file=out)
        print(f"live tasks: {len(core)} ("
              + ", ".join(f"{k} {n}" for k, n in sorted(states.items())) + ")", file=out)
        print(f"last seq: {core.last_seq}", file=out)
    problem = found.problem or "clean"
    if found.status == DAMAGED:
        problem += f"; run `cloudqueue log repair {shlex.quote(str(directory))}`"
    print(f"tail: {problem}", file=out)
    return found.status


def repair(directory: Path, out: TextIO) -> int:
    """Back up, salvage, replay leniently, rewrite as one snapshot."""
    backup = directory.with_name(f"{directory.name}.backup-{time.strftime('%Y%m%d-%H%M%S')}")
    with locked(directory):
        shutil.copytree(directory, backup, ignore=shutil.ignore_patterns("LOCK"))
        print(f"backup: {backup}", file=out)
        tasks, seq, schedules, counters = _salvage_snapshot(directory, out)
        events = _salvage_segments(directory, seq, out)
        core, dropped = replay(tasks, seq, events, lenient=True, counters=counters,
                               schedules=schedules)
        if dropped:
            print(f"dropped {dropped} record(s) that no longer follow from what survived",
                  file=out)
        ops = FileOps()
        write_snapshot(directory, core.last_seq,
                       encode_snapshot(core.last_seq, core.tasks(), core.counters(),
                                       core.schedules()), ops)
        last_segment = list_segments(directory)[-1][0] if list_segments(directory) else 0
        create_segment(directory, last_segment + 1, core.last_seq, ops)
        if headed_from(directory) is None:
            mark_format(directory, last_segment + 1, ops)
        remove_covered(directory, last_segment, core.last_seq, ops)
    print(f"repaired: {len(core)} live tasks at seq {core.last_seq}", file=out)
    return CLEAN


def _salvage_snapshot(directory: Path, out: TextIO
                      ) -> tuple[list[Task], int, list[Schedule], dict[str, Any]]:
    for seq, path in reversed(list_snapshots(directory)):
        try:
            contents = read_snapshot(path)
            return contents.tasks, seq, contents.schedules, contents.counters
        except LogCorruptError as exc:
            print(f"unreadable snapshot skipped: {exc}", file=out)
    return [], 0, [], {}


def _salvage_segments(directory: Path, after_seq: int, out: TextIO) -> list[Event]:
    """Every readable record after ``after_seq``, saying what is given up: damaged bytes, and
    the records of a missing segment or snapshot (as the segments' headers and seals tell)."""
    events: list[Event] = []
    last = after_seq
    expected: int | None = None  # the segment number the previous one's seal names
    segments = list_segments(directory)
    for _, path in segments:
        found = salvage(path.read_bytes())
        for offset, length in found.skipped:
            print(f"{path.name}: skipped {length} damaged bytes at offset {offset}", file=out)
        marker = segment_marker(found.payloads[0]) if found.payloads else None
        if marker is not None and marker[0] == SEGMENT_HEADER and marker[2] > last:
            print(f"gave up: records after seq {last} up to seq {marker[2]} (the snapshot or "
                  f"segment that held them is missing; {path.name} continues from there)",
                  file=out)
        elif marker is None and expected is not None:
            print(f"{path.name}: no segment header (it was emptied or replaced)", file=out)
        seal = segment_marker(found.payloads[-1]) if found.payloads else None
        expected = seal[1] if seal is not None and seal[0] == SEGMENT_SEAL else None
        for event in _readable_events(path.name, found.payloads, out):
            if event.seq > last:
                events.append(event)
                last = event.seq
    if expected is not None:
        print(f"gave up: whatever segment {segment_name(expected)} held after seq {last} (it "
              "is missing)", file=out)
    return events


def _readable_events(name: str, payloads: list[bytes], out: TextIO) -> list[Event]:
    """The events of the payloads that decode, saying which do not. A format-1 record is
    refused (nothing of such a log is salvaged: it is read by cloudqueue 0.1 only)."""
    events: list[Event] = []
    for payload in payloads:
        try:
            events += decode_log_payload(payload)
        except LogFormatRetiredError as exc:
            raise exc.located(file=name) from None
        except UnknownRecordKindError as exc:
            print(f"{name}: skipped an unreadable record: {exc}", file=out)
    return events


async def _compact(directory: Path) -> int:
    """What the running queue does: rotate, fold the covered log into a snapshot (in a child
    process), drop what it covers."""
    store, loaded = LogStore.open(directory, compact_bytes=None)
    store.start()
    try:
        return await store.compact(loaded.last_seq)
    finally:
        await store.close()


def compact(directory: Path, out: TextIO) -> int:
    removed = asyncio.run(_compact(directory))
    print(f"compacted: {removed} segment(s) replaced by a snapshot", file=out)
    return CLEAN


def _is_log(directory: Path) -> bool:
    return (directory / "FORMAT").exists() or any(directory.glob("wal-*.log")) \
        or any(directory.glob("snapshot-*.snap"))


def app_directories(directory: Path) -> list[Path]:
    """The apps' logs under a server's data directory (``DATA_DIR/<appId>``), when
    ``directory`` holds no log itself but such subdirectories."""
    if _is_log(directory):
        return []
    return sorted(d for d in directory.iterdir() if d.is_dir() and _is_log(d))


def run(action: str, directory: Path, out: TextIO = sys.stdout) -> int:
    if not directory.is_dir():
        print(f"{directory} is not a data directory", file=sys.stderr)
        return DAMAGED
    apps = app_directories(directory)
    if apps:  # a server's --data-dir: one log per app
        print(f"{directory} is a server's data directory: {len(apps)} app(s), each its own "
              f"log ({', '.join(a.name for a in apps)})", file=out)
        worst = CLEAN
        for app in apps:
            print(f"\n== app {app.name} ({app})", file=out)
            worst = max(worst, run(action, app, out))
        return worst
    try:
        if action in ("inspect", "verify"):
            return describe(directory, out, verbose=action == "inspect")
        if action == "repair":
            return repair(directory, out)
        return compact(directory, out)
    except LogLockedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return REFUSED
    except LogFormatRetiredError as exc:  # no repair reads it: say what to do instead
        print(f"error: {exc.located(directory=directory)}", file=sys.stderr)
        return DAMAGED
    except LogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return DAMAGED
