"""Real log bytes kept under tests/data/logs (written by ``python -m tests.data.make_golden``):
every format this version reads still reads the same, the writer still writes format 3 byte
for byte, and a real data directory starts — as it is, torn, damaged, or with a piece gone —
exactly as the durability contract says. A change that breaks the writer and the reader
together (both would still agree with each other) fails here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloudqueue import Engine, FakeClock, TaskState
from cloudqueue.engine.core.framing import scan
from cloudqueue.engine.runtime.log_file import LogCorruptError, LogGapError, list_segments, read_log
from tests.core.sample_events import EVENTS
from tests.data.make_golden import T0, format3

GOLDEN = Path(__file__).parents[1] / "data" / "logs"


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(GOLDEN / name, target)
    return target


@pytest.mark.parametrize("name", ["format1", "format2", "format3"])
def test_every_format_still_reads_every_kind_of_event(name: str, tmp_path: Path) -> None:
    events, report = read_log(copy(name, tmp_path))
    assert events == EVENTS
    assert report.torn_segment is None


def test_the_writer_still_writes_format_3_byte_for_byte() -> None:
    assert format3(EVENTS) == (GOLDEN / "format3" / "wal-0000000001.log").read_bytes()


EXPECTED = {**{f"ok-{i}": TaskState.SUCCESS for i in range(8)},
            "fail-0": TaskState.FAILED, "later-0": TaskState.CANCELLED,
            **{f"later-{i}": TaskState.QUEUED for i in range(1, 6)}}


async def states(directory: Path) -> dict[str, TaskState]:
    async with Engine(data_dir=directory, clock=FakeClock(T0 + 1_000)) as queue:
        assert [s.spec.name for s in await queue.list_schedules()] == ["nightly"]
        return {t.unique_id: t.state for t in queue.core.tasks()
                if not t.unique_id.startswith("cron:")}


async def test_a_real_data_directory_starts_with_every_task_as_it_was(tmp_path: Path) -> None:
    assert await states(copy("queue", tmp_path)) == EXPECTED


async def test_a_torn_tail_is_cut_and_nothing_acknowledged_is_lost(tmp_path: Path) -> None:
    directory = copy("queue", tmp_path)
    last = list_segments(directory)[-1][1]
    data = last.read_bytes()
    last.write_bytes(data + data[scan(data).offsets[-1]:][:20])  # half a frame more
    assert await states(directory) == EXPECTED
    assert list((directory / "torn").iterdir())


async def test_a_byte_flipped_before_later_records_refuses_to_start(tmp_path: Path) -> None:
    directory = copy("queue", tmp_path)
    first = list_segments(directory)[0][1]
    data = bytearray(first.read_bytes())
    data[scan(bytes(data)).offsets[2] + 9] ^= 0x20
    first.write_bytes(bytes(data))
    with pytest.raises(LogCorruptError, match=f"{first.name} is damaged"):
        await states(directory)


async def test_a_segment_gone_from_the_middle_refuses_to_start(tmp_path: Path) -> None:
    directory = copy("queue", tmp_path)
    segments = list_segments(directory)
    assert len(segments) >= 3
    segments[1][1].unlink()
    with pytest.raises(LogGapError, match=f"segment {segments[1][1].name} is missing"):
        await states(directory)
