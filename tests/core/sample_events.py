"""Events of every registered kind, with every optional field used somewhere: what the codec
tests round-trip and the golden logs hold (``tests.data.make_golden``). A registered event
without a sample here fails ``test_event_registry``. Add new samples at the end (the golden
files of formats no longer written hold the first ``FORMAT_2_SAMPLES``)."""

from __future__ import annotations

from cloudqueue.engine.core.events import (
    ActionTaken,
    DispatchPaused,
    Event,
    FailureKind,
    ProgressReported,
    RunContinued,
    RunFailed,
    RunRequeued,
    RunStarted,
    RunSucceeded,
    ScheduleDeleted,
    SchedulePaused,
    ScheduleSet,
    ScheduleSkipped,
    TaskCancelled,
    TaskPurged,
    TaskRetried,
    TaskRunNow,
    TaskSubmitted,
    TaskWoken,
)
from cloudqueue.engine.core.options import DeliveryMode, TaskOptions
from cloudqueue.engine.core.schedules import ScheduleSpec

T = 1_700_000_000_000
EVENTS: list[Event] = [
    TaskSubmitted(1, T, "a", "f", {"x": [1, 2.5, None, "s"]}, TaskOptions(), T),
    TaskSubmitted(2, T, "b", "g", [1, 2], TaskOptions(
        attempts=3, backoff_ms=5, delay_ms=6, delivery_mode=DeliveryMode.AT_MOST_ONCE,
        keep_result_ms=7, priority=1.5, timeout_ms=8, deadline_ms=9), 1.5),
    TaskSubmitted(3, T, "cron:s:5", "f", {}, TaskOptions(), 5, "s", 5),
    RunStarted(4, T + 1, "a", 1),
    RunSucceeded(5, T + 2, "a", 4, {"result": {"ok": True}}, 200),
    RunSucceeded(6, T + 2, "a", 4, {"result": None}, None),
    RunFailed(7, T + 3, "b", 4, "boom", FailureKind.UNKNOWN, None),
    RunFailed(8, T + 3, "b", 4, "boom", FailureKind.ERROR, 500),
    RunRequeued(9, T + 4, "b", 4, "connection refused"),
    TaskCancelled(10, T + 5, "c"),
    TaskPurged(11, T + 6, "a"),
    RunContinued(12, T + 7, "a", 4, {"step": 2}),
    ProgressReported(13, T + 8, "a", 4, {"percent": 40, "message": "m"}, ((T, "m"),)),
    ScheduleSet(14, T + 9, ScheduleSpec("s", "f", {"p": 1}, "0 * * * * ?", None, "UTC",
                                        TaskOptions(attempts=2), False)),
    SchedulePaused(15, T + 10, "s", True),
    ScheduleDeleted(16, T + 11, "s"),
    ScheduleSkipped(17, T + 12, "s", 3, T),
    TaskWoken(18, T + 13, "b"),
    ActionTaken(19, T + 14, "retry", "operator", "cli", "b", None, 1),
    TaskRetried(20, T + 14, "b"),
    ActionTaken(21, T + 15, "cancel", "master", None, None,
                {"state": ["queued"], "function": "f", "createdFrom": T, "createdTo": T + 9}, 2),
    TaskRunNow(22, T + 16, "b"),
    ActionTaken(23, T + 17, "pause", "embedded", None, None, None, 0),
    DispatchPaused(24, T + 17, True),
]

FORMAT_2_SAMPLES = 17  # the samples there were when format 2 was last written
