"""Writes the golden log files under tests/data/logs (run only when a format changes on
purpose, and say so in the commit): ``python -m tests.data.make_golden``.

* ``format1``, ``format2``, ``format3``: every kind of event (``tests.core.sample_events``) as
  each format wrote or writes it. ``test_golden_logs`` reads them back, so a change that breaks
  writer and reader together (a renumbered kind, a moved field) still fails, and checks that the
  current writer produces ``format3`` byte for byte.
* ``queue``: a real queue's data directory (tasks that succeeded, failed, were cancelled, a
  schedule, over several segments), written by the engine on a fake clock. ``test_golden_logs``
  starts on it as it is, with a torn tail, with a byte flipped mid-log, and with a segment gone.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from cloudqueue import Engine, FakeClock, RunContext
from cloudqueue.engine.core.batch_codec import encode_batch, encode_segment_header
from cloudqueue.engine.core.codec import batch_marker, encode_event
from cloudqueue.engine.core.events import Event
from cloudqueue.engine.core.framing import encode_frame
from cloudqueue.engine.runtime.log_file import segment_name
from cloudqueue.testing import settle
from tests.core.sample_events import EVENTS

HERE = Path(__file__).parent / "logs"
T0 = 1_700_000_000_000


def format1(events: list[Event]) -> bytes:
    """What the log wrote before format 2: a marker frame per batch, then a frame per record."""
    return encode_frame(batch_marker(0)) + b"".join(encode_frame(encode_event(e))
                                                    for e in events)


def format2(events: list[Event]) -> bytes:
    """Format 2: one frame per batch, ``[2, synced_bytes, [records]]``."""
    import msgpack

    from cloudqueue.engine.core.batch_codec import to_array

    payload = msgpack.packb([2, 0, [to_array(e) for e in events]], use_bin_type=True)
    return encode_frame(payload)


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


def main() -> None:
    shutil.rmtree(HERE, ignore_errors=True)
    for name, encode in (("format1", format1), ("format2", format2), ("format3", format3)):
        (HERE / name).mkdir(parents=True)
        (HERE / name / segment_name(1)).write_bytes(encode(EVENTS))
    asyncio.run(queue_directory(HERE / "queue"))
    (HERE / "queue" / "LOCK").unlink(missing_ok=True)
    print(f"wrote {HERE}")


if __name__ == "__main__":
    main()
