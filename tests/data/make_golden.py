"""Writes the golden log files under tests/data/logs (run only when a format changes on
purpose, and say so in the commit): ``python -m tests.data.make_golden``.

Written by this version's writer:

* ``format3``: every kind of event (``tests.core.sample_events``) as the log writes it: the
  segment header, then one batch. ``test_golden_logs`` reads it back, so a change that breaks
  writer and reader together (a renumbered kind, a moved field) still fails, and checks that
  the writer produces it byte for byte.
* ``queue``: a real queue's data directory (tasks that succeeded, failed, were cancelled, a
  schedule, over several segments), written by the engine on a fake clock.

Kept as the last version that wrote them made them (nothing writes these formats any more, so
they are never rewritten):

* ``format2``: the first ``FORMAT_2_SAMPLES`` sample events as one format-2 batch.
* ``queue-format2``: a real queue's data directory in log format 2 (segments without headers)
  with a format-2 snapshot (task rows of row version 1).
* ``retired-format1``: a segment in log format 1, which this version refuses, saying why.

And, derived here from ``queue`` and ``queue-format2``, the same directories damaged:
``-torn`` (half a frame more at the end of the last segment: cut at the next start) and
``-corrupt`` (a byte flipped in the first segment's third frame, with later writes after it:
refused).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from cloudqueue import Engine, FakeClock, RunContext
from cloudqueue.engine.core.batch_codec import encode_batch, encode_segment_header
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.framing import scan
from cloudqueue.engine.runtime.log_file import list_segments, segment_name
from cloudqueue.testing import settle
from tests.core.sample_events import EVENTS

HERE = Path(__file__).parent / "logs"
T0 = 1_700_000_000_000
WRITTEN = ("format3", "queue")
DAMAGED = ("queue", "queue-format2")


def format3(events: list[Event]) -> bytes:
    """Format 3, as the log writes it now: the segment header, then one batch."""
    header = encode_segment_header(1, 0)
    return header + encode_batch(events, len(header), len(header))


async def _ok(params: Any, ctx: RunContext) -> str:
    return "done"


async def _fail(params: Any, ctx: RunContext) -> None:
    raise RuntimeError("fails on purpose")


async def queue_directory(directory: Path) -> None:
    clock = FakeClock(T0)
    async with Engine(data_dir=directory, clock=clock, segment_bytes=600,
                      compact_bytes=1 << 30) as queue:
        queue.define("ok")(_ok)
        queue.define("fail")(_fail)
        for i in range(8):
            await queue.enqueue("ok", {"i": i}, unique_id=f"ok-{i}", keep_result=86_400_000)
        await queue.enqueue("fail", unique_id="fail-0", attempts=0, keep_result=86_400_000)
        for i in range(6):
            await queue.enqueue("ok", {"i": i, "pad": "x" * 60}, unique_id=f"later-{i}",
                                delay=3_600_000)
        await queue.cancel("later-0")
        await queue.set_schedule("nightly", "ok", cron="0 0 3 * * ?", timezone="UTC")
        await settle(queue)
    (directory / "LOCK").unlink(missing_ok=True)


def torn(source: Path, target: Path) -> None:
    """``source`` with half a frame more at the end of its last segment (a write cut short)."""
    shutil.copytree(source, target)
    last = list_segments(target)[-1][1]
    data = last.read_bytes()
    last.write_bytes(data + data[scan(data).offsets[-1]:][:20])


def corrupt(source: Path, target: Path) -> None:
    """``source`` with a byte flipped inside the third frame of its first segment."""
    shutil.copytree(source, target)
    first = list_segments(target)[0][1]
    data = bytearray(first.read_bytes())
    data[scan(bytes(data)).offsets[2] + 9] ^= 0x20
    first.write_bytes(bytes(data))


def main() -> None:
    for name in WRITTEN:
        shutil.rmtree(HERE / name, ignore_errors=True)
    (HERE / "format3").mkdir(parents=True)
    (HERE / "format3" / segment_name(1)).write_bytes(format3(EVENTS))
    asyncio.run(queue_directory(HERE / "queue"))
    for name in DAMAGED:
        for suffix, damage in (("torn", torn), ("corrupt", corrupt)):
            shutil.rmtree(HERE / f"{name}-{suffix}", ignore_errors=True)
            damage(HERE / name, HERE / f"{name}-{suffix}")
    print(f"wrote {HERE}")


if __name__ == "__main__":
    main()
