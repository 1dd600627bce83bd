"""Exhaustive tail damage through the real recovery path (load_log, which cuts torn tails).

The log is laid out as the writer lays it out under fsync=always: the segment header, then
each event its own batch, saying everything before it was synced.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import cloudqueue.engine.core.batch_codec as batch_codec
from cloudqueue.engine.core.batch_codec import encode_batch, encode_segment_header
from cloudqueue.engine.core.events import Event, RunStarted, RunSucceeded, TaskSubmitted
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.runtime.log_dir import load_log
from cloudqueue.engine.runtime.log_file import LogCorruptError, segment_name

T0 = 1_700_000_000_000
EVENTS: list[Event] = [
    TaskSubmitted(1, T0, "a", "f", {"k": "v" * 20}, TaskOptions(), T0),
    TaskSubmitted(2, T0, "b", "f", [1, 2, 3], TaskOptions(attempts=4), T0),
    RunStarted(3, T0 + 1, "a", 1),
    RunSucceeded(4, T0 + 2, "a", 3, {"result": {"ok": True}}, 200),
    TaskSubmitted(5, T0 + 3, "c", "g", {"n": 5}, TaskOptions(delay_ms=10), T0 + 3),
]

def _layout() -> tuple[bytes, list[int], list[int]]:
    """The log bytes, each batch's start, and the end of every frame (the header's first)."""
    log = encode_segment_header(1, 0)
    starts, ends = [], [len(log)]
    for event in EVENTS:
        starts.append(len(log))
        log += encode_batch([event], len(log), len(log))
        ends.append(len(log))
    return log, starts, ends


LOG, STARTS, ENDS = _layout()
FRAMES = [LOG[start:end] for start, end in zip(STARTS, ENDS[1:], strict=True)]
LAST_TWO_START = STARTS[-2]


def recover(tmp_path: Path, data: bytes) -> list[int]:
    (tmp_path / segment_name(1)).write_bytes(data)
    loaded = load_log(tmp_path)
    size = (tmp_path / segment_name(1)).stat().st_size
    assert size == max([0, *(end for end in ENDS if end <= len(data) and end <= size)])
    return [e.seq for e in loaded.events]


@pytest.mark.parametrize("cut", range(LAST_TWO_START, len(LOG) + 1))
def test_every_truncation_in_the_last_frames_keeps_the_longest_valid_prefix(
        tmp_path: Path, cut: int) -> None:
    whole = sum(1 for end in ENDS[1:] if end <= cut)
    assert recover(tmp_path, LOG[:cut]) == [e.seq for e in EVENTS[:whole]]
    if cut not in ENDS and cut != 0:
        assert len(list((tmp_path / "torn").iterdir())) == 1


@pytest.mark.parametrize("bit", range(len(FRAMES[-1]) * 8))
def test_every_bit_flip_in_the_final_frame_drops_only_that_frame(tmp_path: Path,
                                                                bit: int) -> None:
    data = bytearray(LOG)
    data[STARTS[-1] + bit // 8] ^= 1 << (bit % 8)
    assert recover(tmp_path, bytes(data)) == [e.seq for e in EVENTS[:-1]]


@pytest.mark.parametrize("frame", range(len(FRAMES) - 1))
def test_a_bit_flip_in_a_synced_batch_refuses_to_start(tmp_path: Path, frame: int) -> None:
    data = bytearray(LOG)
    data[STARTS[frame] + 10] ^= 0x01
    (tmp_path / segment_name(1)).write_bytes(bytes(data))
    with pytest.raises(LogCorruptError) as info:
        load_log(tmp_path)
    assert info.value.offset == STARTS[frame]
    assert (tmp_path / segment_name(1)).read_bytes() == bytes(data)  # nothing cut


def test_damage_inside_a_never_synced_batch_is_a_torn_tail_whatever_survives_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut may write an unsynced batch's pages back in any order: its first record can
    be lost while later ones survive. Nothing in it was acknowledged; the queue must start."""
    synced = LOG[:ENDS[2]]
    monkeypatch.setattr(batch_codec, "MAX_FRAME_RECORDS", 1)  # the batch over several frames
    batch = encode_batch([TaskSubmitted(10 + i, T0, f"u{i}", "f", {}, TaskOptions(), T0)
                          for i in range(4)], len(synced), len(synced))
    damaged = bytearray(batch)
    damaged[:20] = bytes(20)  # its first page never reached disk
    assert recover(tmp_path, synced + bytes(damaged)) == [1, 2]
    assert len(list((tmp_path / "torn").iterdir())) == 1
