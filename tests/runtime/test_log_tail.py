"""Exhaustive tail damage through the real recovery path (load_log, which cuts torn tails)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.codec import encode_event
from engine.core.events import RunStarted, RunSucceeded, TaskSubmitted
from engine.core.framing import encode_frame
from engine.core.options import TaskOptions
from engine.runtime.log_file import LogCorruptError, segment_name
from engine.runtime.log_store import load_log

T0 = 1_700_000_000_000
EVENTS = [
    TaskSubmitted(1, T0, "a", "f", {"k": "v" * 20}, TaskOptions(), T0),
    TaskSubmitted(2, T0, "b", "f", [1, 2, 3], TaskOptions(attempts=4), T0),
    RunStarted(3, T0 + 1, "a", 1),
    RunSucceeded(4, T0 + 2, "a", 3, {"result": {"ok": True}}, 200),
    TaskSubmitted(5, T0 + 3, "c", "g", {"n": 5}, TaskOptions(delay_ms=10), T0 + 3),
]
FRAMES = [encode_frame(encode_event(e)) for e in EVENTS]
LOG = b"".join(FRAMES)
BOUNDARIES = [sum(len(f) for f in FRAMES[:i]) for i in range(len(FRAMES) + 1)]
LAST_TWO_START = BOUNDARIES[-3]


def recover(tmp_path: Path, data: bytes) -> list[int]:
    (tmp_path / segment_name(1)).write_bytes(data)
    loaded = load_log(tmp_path)
    assert (tmp_path / segment_name(1)).stat().st_size == (
        BOUNDARIES[len(loaded.events)])  # cut back to the last whole record
    return [e.seq for e in loaded.events]


@pytest.mark.parametrize("cut", range(LAST_TWO_START, len(LOG) + 1))
def test_every_truncation_in_the_last_frames_keeps_the_longest_valid_prefix(
        tmp_path: Path, cut: int) -> None:
    whole = sum(1 for end in BOUNDARIES[1:] if end <= cut)
    assert recover(tmp_path, LOG[:cut]) == [e.seq for e in EVENTS[:whole]]
    if cut not in BOUNDARIES:
        assert len(list((tmp_path / "torn").iterdir())) == 1


@pytest.mark.parametrize("bit", range(len(FRAMES[-1]) * 8))
def test_every_bit_flip_in_the_final_frame_drops_only_that_frame(tmp_path: Path,
                                                                bit: int) -> None:
    data = bytearray(LOG)
    data[BOUNDARIES[-2] + bit // 8] ^= 1 << (bit % 8)
    assert recover(tmp_path, bytes(data)) == [e.seq for e in EVENTS[:-1]]


@pytest.mark.parametrize("frame", range(len(FRAMES) - 1))
def test_a_bit_flip_before_the_final_frame_refuses_to_start(tmp_path: Path, frame: int) -> None:
    data = bytearray(LOG)
    data[BOUNDARIES[frame] + 10] ^= 0x01
    (tmp_path / segment_name(1)).write_bytes(bytes(data))
    with pytest.raises(LogCorruptError) as info:
        load_log(tmp_path)
    assert info.value.offset == BOUNDARIES[frame]
    assert (tmp_path / segment_name(1)).read_bytes() == bytes(data)  # nothing cut
