"""Missing pieces of the log are noticed, and damage with later records after it is corruption
whatever the fsync policy. Deleting or emptying a segment, or deleting the snapshot, once lost
hundreds of acknowledged tasks without a word while `log verify` said clean; damage in the
middle of a log written under fsync=interval/never was cut as a torn tail."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cloudqueue import Engine, FakeClock
from cloudqueue.engine.core.framing import scan
from cloudqueue.engine.runtime.log_file import (
    FORMAT_MARK,
    LogCorruptError,
    LogGapError,
    list_segments,
    segment_name,
)
from cloudqueue.engine.runtime.snapshot import list_snapshots
from cloudqueue.log_tool import CLEAN, DAMAGED, describe, repair

T0 = 1_700_000_000_000
DAY = 86_400_000


async def fill(directory: Path, count: int, *, fsync: str = "always",
               segment_bytes: int = 2_000, compact: bool = False) -> list[str]:
    """``count`` delayed tasks, one enqueue (one batch) each, over several small segments."""
    async with Engine(data_dir=directory, clock=FakeClock(T0), fsync=fsync,
                      segment_bytes=segment_bytes, compact_bytes=1 << 30) as queue:
        ids = [await queue.enqueue("f", {"i": i, "pad": "x" * 40}, delay=DAY)
               for i in range(count)]
        if compact:
            await queue.compact()
            ids += [await queue.enqueue("f", {"i": i, "pad": "x" * 40}, delay=DAY)
                    for i in range(count, count + 20)]
    return ids


def verify(directory: Path) -> tuple[int, str]:
    out = io.StringIO()
    status = describe(directory, out, verbose=False)
    return status, out.getvalue()


async def refused(directory: Path, error: type[Exception], match: str) -> None:
    """The start refuses with ``error`` and a message naming the repair for this directory;
    `log verify` reports the same damage."""
    with pytest.raises(error, match=match) as info:
        await Engine(data_dir=directory).start()
    assert f"`cloudqueue log repair {directory}`" in str(info.value)
    status, text = verify(directory)
    assert status == DAMAGED, text
    assert f"`cloudqueue log repair {directory}`" in text


async def repaired(directory: Path) -> tuple[str, int]:
    out = io.StringIO()
    assert repair(directory, out) == CLEAN
    async with Engine(data_dir=directory, clock=FakeClock(T0)) as queue:
        held = len(queue.core)
    assert verify(directory)[0] == CLEAN
    return out.getvalue(), held


async def test_a_log_that_rotated_and_compacted_many_times_starts_clean(tmp_path: Path) -> None:
    ids = await fill(tmp_path, 60, compact=True)
    assert list_segments(tmp_path)[0][0] > 3 and list_snapshots(tmp_path)  # rotated, compacted
    assert verify(tmp_path)[0] == CLEAN
    async with Engine(data_dir=tmp_path) as queue:
        assert {t.unique_id for t in queue.core.tasks()} == set(ids)


async def test_an_emptied_segment_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    await fill(tmp_path, 60)
    segments = list_segments(tmp_path)
    assert len(segments) >= 4
    segments[1][1].write_bytes(b"")
    await refused(tmp_path, LogGapError, f"{segments[1][1].name} has no segment header")
    text, held = await repaired(tmp_path)
    assert "no segment header" in text and "gave up: records after seq" in text
    assert 0 < held < 60


async def test_a_deleted_segment_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    await fill(tmp_path, 60)
    segments = list_segments(tmp_path)
    segments[2][1].unlink()
    await refused(tmp_path, LogGapError, f"segment {segments[2][1].name} is missing")


@pytest.mark.parametrize("how", ["deleted", "emptied"])
async def test_the_last_segment_deleted_or_emptied_refuses_to_start(tmp_path: Path,
                                                                    how: str) -> None:
    await fill(tmp_path, 60)
    last = list_segments(tmp_path)[-1][1]
    if how == "deleted":
        last.unlink()
        match = f"segment {last.name} is missing"
    else:
        last.write_bytes(b"")
        match = f"{last.name} has no segment header"
    await refused(tmp_path, LogGapError, match)
    text, _ = await repaired(tmp_path)
    assert "gave up" in text or "no segment header" in text


async def test_the_only_segment_emptied_refuses_to_start(tmp_path: Path) -> None:
    await fill(tmp_path, 5, segment_bytes=1 << 20)
    [(_, only)] = list_segments(tmp_path)
    only.write_bytes(b"")
    await refused(tmp_path, LogGapError, "has no segment header")


async def test_a_deleted_snapshot_refuses_to_start(tmp_path: Path) -> None:
    ids = await fill(tmp_path, 40, compact=True)
    [(seq, snapshot)] = list_snapshots(tmp_path)
    snapshot.unlink()
    await refused(tmp_path, LogGapError, "there is no snapshot")
    text, held = await repaired(tmp_path)
    assert f"up to seq {seq}" in text  # exactly what it gave up
    assert held == len(ids) - 40  # what was enqueued after the snapshot


async def test_every_segment_deleted_refuses_to_start(tmp_path: Path) -> None:
    await fill(tmp_path, 40, compact=True)
    for _, path in list_segments(tmp_path):
        path.unlink()
    await refused(tmp_path, LogGapError, "every log segment was deleted")


async def test_a_renamed_segment_is_noticed(tmp_path: Path) -> None:
    await fill(tmp_path, 60)
    segments = list_segments(tmp_path)
    last_number, last = segments[-1]
    last.rename(tmp_path / segment_name(last_number + 1))
    await refused(tmp_path, LogGapError, "missing")


async def test_a_torn_seal_before_a_complete_successor_loses_nothing(tmp_path: Path) -> None:
    """A crash between writing a segment's seal and syncing it may tear the seal, after the
    next segment was created: its header says nothing before it is missing, so it starts."""
    ids = await fill(tmp_path, 60)
    first = list_segments(tmp_path)[0][1]
    data = first.read_bytes()
    seal_at = scan(data).offsets[-1]
    first.write_bytes(data[:seal_at + 5])  # the seal half written
    assert verify(tmp_path)[0] != DAMAGED
    async with Engine(data_dir=tmp_path) as queue:
        assert {t.unique_id for t in queue.core.tasks()} == set(ids)


async def test_a_log_from_before_segment_headers_still_loads_and_is_upgraded(
        tmp_path: Path) -> None:
    import shutil

    old = Path(__file__).parents[1] / "data" / "logs" / "queue-format2"  # segments 3 to 5
    shutil.rmtree(tmp_path)
    shutil.copytree(old, tmp_path)
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0)) as queue:
        before = {t.unique_id for t in queue.core.tasks()}
        await queue.enqueue("f", unique_id="t3", delay=DAY)
    assert "from number 6 on" in (tmp_path / FORMAT_MARK).read_text()
    async with Engine(data_dir=tmp_path, clock=FakeClock(T0)) as queue:
        assert {t.unique_id for t in queue.core.tasks()} == before | {"t3"}
    (tmp_path / segment_name(6)).write_bytes(b"")  # the first headed one, emptied: noticed
    await refused(tmp_path, LogGapError, "has no segment header")


@pytest.mark.parametrize("fsync", ["always", "interval:50", "never"])
async def test_damage_with_later_records_after_it_is_corruption_under_every_policy(
        tmp_path: Path, fsync: str) -> None:
    """100 acknowledged tasks, one byte flipped in a record a fifth of the way in: that is
    damage to data that was already there (later batches follow it), not a torn tail — even
    when the policy never synced it. The queue refuses to start (it used to cut 80 acknowledged
    tasks as a "torn tail" and start); repair gives up only the damaged record."""
    ids = await fill(tmp_path, 100, fsync=fsync, segment_bytes=1 << 20)
    [(_, segment)] = list_segments(tmp_path)
    data = bytearray(segment.read_bytes())
    frames = scan(bytes(data))
    target = frames.offsets[len(frames.offsets) // 5]
    data[target + 12] ^= 0x40
    segment.write_bytes(bytes(data))
    await refused(tmp_path, LogCorruptError, f"damaged at offset {target}.*later write")
    text, held = await repaired(tmp_path)
    assert "skipped" in text and held == len(ids) - 1
