"""Real log bytes kept under tests/data/logs (written by ``python -m tests.data.make_golden``):
every format this version reads still reads the same, the writer still writes format 3 and a
real data directory byte for byte, and a real data directory of each format starts — as it is,
torn, damaged, or with a piece gone — exactly as the durability contract says. A change that
breaks the writer and the reader together (both would still agree with each other) fails here.
A data directory in the retired format 1 refuses to start, saying what to do."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from cloudqueue import Engine, FakeClock, TaskState
from cloudqueue.engine.core.errors import LogFormatRetiredError
from cloudqueue.engine.runtime.log_file import LogCorruptError, LogGapError, list_segments, read_log
from cloudqueue.log_tool import DAMAGED, TORN, describe, run
from tests.core.sample_events import EVENTS, FORMAT_2_SAMPLES
from tests.data.make_golden import T0, format3, queue_directory

GOLDEN = Path(__file__).parents[1] / "data" / "logs"
QUEUES = ["queue", "queue-format2"]


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(GOLDEN / name, target)
    return target


@pytest.mark.parametrize(("name", "expected"), [("format2", EVENTS[:FORMAT_2_SAMPLES]),
                                                ("format3", EVENTS)])
def test_every_format_still_reads_every_kind_of_event(name: str, expected: list[object],
                                                      tmp_path: Path) -> None:
    events, report = read_log(copy(name, tmp_path))
    assert events == expected
    assert report.torn_segment is None


def test_the_writer_still_writes_format_3_byte_for_byte() -> None:
    assert format3(EVENTS) == (GOLDEN / "format3" / "wal-0000000001.log").read_bytes()


async def test_a_queue_still_writes_the_golden_data_directory_byte_for_byte(
        tmp_path: Path) -> None:
    await queue_directory(tmp_path / "queue")
    written = {p.name: p.read_bytes() for p in (tmp_path / "queue").iterdir()}
    assert written == {p.name: p.read_bytes() for p in (GOLDEN / "queue").iterdir()}


EXPECTED = {**{f"ok-{i}": TaskState.SUCCESS for i in range(8)},
            "fail-0": TaskState.FAILED, "later-0": TaskState.CANCELLED,
            **{f"later-{i}": TaskState.QUEUED for i in range(1, 6)}}


async def states(directory: Path) -> dict[str, TaskState]:
    async with Engine(data_dir=directory, clock=FakeClock(T0 + 1_000)) as queue:
        assert [s.spec.name for s in await queue.list_schedules()] == ["nightly"]
        return {t.unique_id: t.state for t in queue.core.tasks()
                if not t.unique_id.startswith("cron:")}


@pytest.mark.parametrize("name", QUEUES)
async def test_a_real_data_directory_starts_with_every_task_as_it_was(
        name: str, tmp_path: Path) -> None:
    directory = copy(name, tmp_path)
    assert await states(directory) == EXPECTED
    assert await states(directory) == EXPECTED  # and again, after writing on in format 3


@pytest.mark.parametrize("name", QUEUES)
async def test_a_torn_tail_is_cut_and_nothing_acknowledged_is_lost(
        name: str, tmp_path: Path) -> None:
    directory = copy(f"{name}-torn", tmp_path)
    assert describe(directory, io.StringIO(), verbose=False) == TORN
    assert await states(directory) == EXPECTED
    assert list((directory / "torn").iterdir())


@pytest.mark.parametrize("name", QUEUES)
async def test_a_byte_flipped_before_later_records_refuses_to_start(
        name: str, tmp_path: Path) -> None:
    directory = copy(f"{name}-corrupt", tmp_path)
    first = list_segments(directory)[0][1]
    assert describe(directory, io.StringIO(), verbose=False) == DAMAGED
    with pytest.raises(LogCorruptError, match=f"{first.name} is damaged"):
        await states(directory)


@pytest.mark.parametrize("name", QUEUES)
async def test_a_segment_gone_from_the_middle_refuses_to_start(name: str, tmp_path: Path) -> None:
    directory = copy(name, tmp_path)
    segments = list_segments(directory)
    assert len(segments) >= 3
    segments[1][1].unlink()
    with pytest.raises(LogGapError, match=f"segment {segments[1][1].name} is missing"):
        await states(directory)


async def test_a_format_1_data_directory_refuses_to_start_saying_what_to_do(
        tmp_path: Path) -> None:
    directory = copy("retired-format1", tmp_path)
    before = (directory / "wal-0000000001.log").read_bytes()
    with pytest.raises(LogFormatRetiredError) as refused:
        await states(directory)
    message = str(refused.value)
    assert "wal-0000000001.log" in message and str(directory) in message
    assert "log format 1 (written by cloudqueue 0.1)" in message
    assert "drain the queue with cloudqueue 0.1" in message
    assert refused.value.body()["type"] == "log_format_retired"
    assert (directory / "wal-0000000001.log").read_bytes() == before  # left as it was
    assert not (directory / "torn").exists()


def test_the_log_tool_says_the_same_of_a_format_1_data_directory_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = copy("retired-format1", tmp_path)
    before = (directory / "wal-0000000001.log").read_bytes()
    for action in ("verify", "repair"):  # repair salvages nothing from it, so it refuses too
        assert run(action, directory, io.StringIO()) == DAMAGED
        error = capsys.readouterr().err
        assert "wal-0000000001.log" in error and "log format 1" in error
        assert str(directory) in error and "repair" not in error
    assert (directory / "wal-0000000001.log").read_bytes() == before
