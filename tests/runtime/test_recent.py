"""The dashboard's points: rates and latency quantiles between two samples of the metrics,
exact on a fake clock's times."""

from __future__ import annotations

from cloudqueue.engine.core.engine import EngineCore
from cloudqueue.engine.runtime.metrics import EngineMetrics
from cloudqueue.engine.runtime.recent import Recent, quantile

T0 = 1_700_000_000_000


def test_quantiles_are_linear_within_a_bucket() -> None:
    bounds = (0.01, 0.1, 1.0)
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [4, 0, 0, 0]) == 0.005  # half of the first bucket's width
    assert quantile(0.5, bounds, [2, 2, 0, 0]) == 0.01
    assert round(quantile(0.75, bounds, [2, 2, 0, 0]) or 0, 9) == 0.055
    assert quantile(0.99, bounds, [0, 0, 1, 1]) == 1.0  # above the last bound: that bound


def test_points_are_the_differences_between_samples() -> None:
    metrics = EngineMetrics(EngineCore())
    recent = Recent(metrics, step_ms=5_000, keep=2)
    recent.sample(T0)
    assert recent.points() == []
    metrics.enqueued["resize"] += 10
    metrics.finished["resize", "success"] += 3
    metrics.finished["resize", "failed"] += 1
    for _ in range(4):
        metrics.acknowledged(2.0)  # ms: the bucket (1, 2.5] ms
    recent.sample(T0 + 5_000)
    [point] = recent.points()
    assert point == {"at": "2023-11-14T22:13:25.000Z", "enqueuedPerS": 2.0,
                     "finishedPerS": 0.8, "failedPerS": 0.2, "ackP50Ms": 1.75,
                     "ackP99Ms": 2.485, "runP50Ms": None, "runP95Ms": None}
    recent.sample(T0 + 10_000)
    recent.sample(T0 + 15_000)  # keep=2: three samples, two points
    assert [p["at"] for p in recent.points()] == ["2023-11-14T22:13:30.000Z",
                                                  "2023-11-14T22:13:35.000Z"]
    assert recent.points()[-1]["enqueuedPerS"] == 0.0
