"""The failover benchmark's audit when tasks leave the queue within the run (its load tasks keep
the queue's default keepResult): an acknowledged task is accounted for by the queue's state at
the end, by an invocation (it ran), or by a failed list seen during the run; one none of these
accounts for is asked for and, gone, counted lost."""

from __future__ import annotations

from collections import Counter

from benchmarks._failover_checks import EXPIRED, account, audit


def test_every_acknowledged_task_is_accounted_for_or_counted_lost() -> None:
    acked = ["L0-1", "M0-2", "L0-3", "M0-4", "L0-5", "M0-6"]
    held = {"L0-5": "success", "M0-6": "queued", "P-probe": "success"}
    invocations = Counter({"L0-1": 1, "L0-5": 1, "M0-4": 1, "L0-9": 1})
    seen_failed = {"M0-2": "failed", "M0-4": "failed"}  # M0-4 ran: its invocation says so
    states, gone = account(acked, held, invocations, seen_failed)
    assert states == {"L0-1": EXPIRED, "M0-2": "failed", "M0-4": EXPIRED, "L0-5": "success",
                      "M0-6": "queued", "P-probe": "success"}  # L0-3: not accounted for
    assert gone == 2
    states["L0-3"] = "404"  # what the queue says when the audit asks for it
    result = audit(acked, states, invocations)
    assert result.missing == ["L0-3"] and result.unfinished == ["M0-6"]
    assert result.states == Counter({"atLeastOnce:expired": 1, "atMostOnce:failed": 1,
                                     "atMostOnce:expired": 1, "atLeastOnce:success": 1})
