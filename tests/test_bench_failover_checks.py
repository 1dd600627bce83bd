"""The failover benchmark's audit when tasks expire within the run (its load tasks keep the
queue's default keepResult): an acknowledged task the host invoked ran; one it did not is read
while the queue still holds it (``AckSweep``), so a lost task cannot pass as an expired one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from benchmarks._failover_checks import EXPIRED, UNKNOWN, AckSweep, audit

S = 1_000_000_000  # ns


def test_the_sweep_asks_for_acknowledged_tasks_not_invoked_until_they_are_final(
        tmp_path: Path) -> None:
    acked = tmp_path / "acked.txt"
    acked.write_bytes(b"L0-1\nM0-2\nM0-3\nL0-4\nM0-")  # the last line half written
    sweep = AckSweep(acked, after_ns=10 * S, keep_ns=60 * S)
    sweep.poll(0)
    with acked.open("ab") as f:
        f.write(b"5\n")
    sweep.poll(5 * S)
    assert sweep.due({"L0-1"}, 9 * S, limit=10) == []  # not yet: the queue may still run them
    assert sweep.due({"L0-1"}, 10 * S, limit=10) == ["M0-2", "M0-3", "L0-4"]
    sweep.answer("M0-2", "failed")  # an atMostOnce run lost: failed, never invoked
    sweep.answer("M0-3", "queued")  # not final: asked again at the next sweep
    sweep.answer("L0-4", "404")  # acknowledged 10 s ago, gone: lost
    assert sweep.due({"L0-1"}, 15 * S, limit=1) == ["M0-3"]
    assert sweep.due({"L0-1", "M0-3"}, 15 * S, limit=10) == ["M0-5"]  # M0-3 ran meanwhile
    assert sweep.due(set(), 55 * S, limit=10) == []  # too late to tell an expiry from a loss
    assert sweep.states == {"M0-2": "failed", "L0-4": "404", "M0-5": UNKNOWN}
    assert sweep.pending == {}
    assert sweep.figures() == {"asked": 4, "settled": {"failed": 1, "404": 1, UNKNOWN: 1},
                               "pending": 0}


def test_the_audit_counts_expired_tasks_that_ran_and_misses_lost_and_unknown_ones() -> None:
    result = audit(["L0-1", "M0-2", "L0-4", "M0-5", "L0-6"],
                   {"L0-1": EXPIRED, "M0-2": "failed", "L0-4": "404", "M0-5": UNKNOWN,
                    "L0-6": "success"},
                   Counter({"L0-1": 1, "L0-6": 1}))
    assert result.missing == ["L0-4", "M0-5"] and result.unfinished == []
    assert result.states == Counter({"atLeastOnce:expired": 1, "atMostOnce:failed": 1,
                                     "atLeastOnce:success": 1})
