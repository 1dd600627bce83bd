"""`cloudqueue log inspect|verify|repair|compact`: what an operator sees and can fix."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import pytest

from cloudqueue import Engine, TaskState
from cloudqueue.engine.core.batch_codec import decode_log_payload
from cloudqueue.engine.core.framing import scan
from cloudqueue.engine.runtime.log_file import LogCorruptError, list_segments
from cloudqueue.engine.runtime.snapshot import list_snapshots
from cloudqueue.log_tool import CLEAN, DAMAGED, REFUSED, TORN, run

ROOT = Path(__file__).resolve().parents[2]


async def make_log(directory: Path, count: int = 6) -> list[str]:
    async with Engine(data_dir=directory) as queue:
        ids = [await queue.enqueue("f", {"i": i}, delay=3_600_000) for i in range(count)]
        await queue.cancel(ids[0])
    return ids


def damage_frame(directory: Path, index: int) -> None:
    """Flip a bit in the payload of the index-th frame holding events (format 2: a batch; these
    logs hold one event per batch)."""
    segment = list_segments(directory)[0][1]
    data = bytearray(segment.read_bytes())
    scanned = scan(bytes(data))
    offsets = [o for o, p in zip(scanned.offsets, scanned.payloads, strict=True)
               if decode_log_payload(p)]
    data[offsets[index] + 12] ^= 0x20
    segment.write_bytes(bytes(data))


def call(action: str, directory: Path) -> tuple[int, str]:
    out = io.StringIO()
    return run(action, directory, out), out.getvalue()


async def test_inspect_summarises_records_and_live_tasks(tmp_path: Path) -> None:
    await make_log(tmp_path)
    status, text = call("inspect", tmp_path)
    assert status == CLEAN
    assert "records: 8 (action 1, cancel 1, sub 6)" in text  # the cancel is an operator action
    assert "live tasks: 6 (cancelled 1, queued 5)" in text
    assert "tail: clean" in text


async def test_verify_reports_a_torn_tail_without_touching_it(tmp_path: Path) -> None:
    await make_log(tmp_path)
    segment = list_segments(tmp_path)[0][1]
    segment.write_bytes(segment.read_bytes() + b"\x01\x02\x03")
    size = segment.stat().st_size
    status, text = call("verify", tmp_path)
    assert status == TORN and "3 bytes will be cut at the next start" in text
    assert segment.stat().st_size == size


async def test_verify_reports_an_unfinished_split_batch_as_a_torn_tail(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cloudqueue.engine.core.batch_codec as batch_codec

    monkeypatch.setattr(batch_codec, "MAX_FRAME_RECORDS", 4)
    await make_log(tmp_path)
    async with Engine(data_dir=tmp_path) as queue:
        await queue.enqueue_many([{"function": "f", "delay": 3_600_000} for _ in range(10)])
    segment = list_segments(tmp_path)[0][1]
    data = segment.read_bytes()
    segment.write_bytes(data[:scan(data).offsets[-1]])  # its last frame never written
    status, text = call("verify", tmp_path)
    assert status == TORN
    assert "ends inside a batch split over frames" in text and "its 8 records" in text
    status, text = call("inspect", tmp_path)
    assert status == TORN and "records: 8 (action 1, cancel 1, sub 6)" in text  # as it reads it
    async with Engine(data_dir=tmp_path) as queue:  # the start cuts it
        assert len(queue.core.tasks()) == 6
    assert call("verify", tmp_path)[0] == CLEAN


async def test_damage_refuses_to_start_until_repair_salvages_the_rest(tmp_path: Path) -> None:
    ids = await make_log(tmp_path)
    damage_frame(tmp_path, 2)  # the third task's submission
    status, text = call("verify", tmp_path)
    assert status == DAMAGED and "cloudqueue log repair" in text
    with pytest.raises(LogCorruptError):
        await Engine(data_dir=tmp_path).start()
    status, text = call("repair", tmp_path)
    assert status == CLEAN and "skipped" in text and "backup:" in text
    backups = list(tmp_path.parent.glob(f"{tmp_path.name}.backup-*"))
    assert len(backups) == 1 and list_segments(backups[0])
    async with Engine(data_dir=tmp_path) as queue:
        for uid in ids[:2] + ids[3:]:
            await queue.get_task_info(uid)
        assert (await queue.get_task_info(ids[0])).state is TaskState.CANCELLED
        assert len(queue.core) == 5
    assert call("verify", tmp_path)[0] == CLEAN


async def test_compact_replaces_segments_with_a_snapshot(tmp_path: Path) -> None:
    ids = await make_log(tmp_path)
    status, text = await asyncio.to_thread(call, "compact", tmp_path)
    assert status == CLEAN and "1 segment(s) replaced" in text
    assert len(list_snapshots(tmp_path)) == 1
    async with Engine(data_dir=tmp_path) as queue:
        assert {(await queue.get_task_info(uid)).state for uid in ids[1:]} == {TaskState.QUEUED}


async def test_repair_refuses_while_a_queue_runs_on_the_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with Engine(data_dir=tmp_path):
        assert call("repair", tmp_path)[0] == REFUSED
    assert "in use by another cloudqueue process" in capsys.readouterr().err
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.backup-*"))


async def test_the_console_command_exits_with_the_verdict(tmp_path: Path) -> None:
    await make_log(tmp_path)
    damage_frame(tmp_path, 1)
    result = subprocess.run([sys.executable, "-m", "cloudqueue", "log", "verify", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == DAMAGED
    assert "is damaged at offset" in result.stdout


async def test_a_servers_data_directory_is_inspected_app_by_app(tmp_path: Path) -> None:
    """Pointed at `cloudqueue serve --data-dir` (one log per app under it), inspect and verify
    take each app's log in turn instead of reporting an empty queue."""
    await make_log(tmp_path / "data" / "appA", count=3)
    await make_log(tmp_path / "data" / "appB", count=2)
    (tmp_path / "data" / "not-an-app").mkdir()
    out = io.StringIO()
    assert run("inspect", tmp_path / "data", out) == CLEAN
    text = out.getvalue()
    assert "a server's data directory: 2 app(s), each its own log (appA, appB)" in text
    assert "== app appA" in text and "== app appB" in text
    assert "live tasks: 3 (cancelled 1, queued 2)" in text
    assert "live tasks: 2 (cancelled 1, queued 1)" in text
    damage_frame(tmp_path / "data" / "appB", 0)
    assert run("verify", tmp_path / "data", io.StringIO()) == DAMAGED
