"""The last minutes of an engine's work, for the dashboard's charts: enqueue and finish rates,
acknowledgement and run latency, one point per step.

``Recent.sample`` reads the engine's cumulative metrics (``EngineMetrics``: counts and
fixed-bucket histograms) at a moment; a point is the difference between two consecutive
samples: counts over the step's seconds, and latency quantiles estimated from the histogram
buckets that filled during the step (linear within a bucket, as Prometheus's
``histogram_quantile`` does). Nothing is recorded per event: the cost is one sample per step.
Pure apart from the reading; the time is an argument.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from cloudqueue.engine.core.task import iso_ms
from cloudqueue.engine.runtime.metrics import RUN_BUCKETS, EngineMetrics

STEP_MS = 5_000
KEEP = 60  # points: five minutes at the default step


@dataclass(frozen=True, slots=True)
class Sample:
    at_ms: int
    enqueued: int
    finished: int
    failed: int
    ack: tuple[int, ...]  # the histograms' bucket counts
    run: tuple[int, ...]


def take(metrics: EngineMetrics, at_ms: int) -> Sample:
    """The metrics' totals at ``at_ms``."""
    finished = failed = 0
    for (_, status), count in list(metrics.finished.items()):
        finished += count
        if status == "failed":
            failed += count
    run = [0] * (len(RUN_BUCKETS) + 1)
    for histogram in list(metrics.run_duration.values()):
        for i, count in enumerate(histogram.counts):
            run[i] += count
    return Sample(at_ms, sum(list(metrics.enqueued.values())), finished, failed,
                  tuple(metrics.ack.counts), tuple(run))


def quantile(q: float, bounds: tuple[float, ...], counts: list[int]) -> float | None:
    """The ``q`` quantile (0..1) of observations counted in buckets with upper ``bounds``
    (the last count: above every bound), linear within its bucket; None for no observations.
    One above the last bound is given as that bound."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i == len(bounds):
                return bounds[-1]
            low = 0.0 if i == 0 else bounds[i - 1]
            return low + (bounds[i] - low) * (rank - seen) / count
        seen += count
    return bounds[-1]


class Recent:
    """Samples of one engine's metrics, the last ``keep`` + 1, and the points between them."""

    def __init__(self, metrics: EngineMetrics, *, step_ms: int = STEP_MS, keep: int = KEEP
                 ) -> None:
        self.metrics, self.step_ms = metrics, step_ms
        self._samples: deque[Sample] = deque(maxlen=keep + 1)
        self._ack_bounds = metrics.ack.bounds
        self._run_bounds = RUN_BUCKETS

    def sample(self, now_ms: int) -> None:
        self._samples.append(take(self.metrics, now_ms))

    def points(self) -> list[dict[str, Any]]:
        """One point per step between samples, oldest first: per-second rates of enqueues,
        finished and failed tasks, and ack p50/p99 and run p50/p95 in ms (None when nothing was
        observed in the step)."""
        out = []
        samples = list(self._samples)
        for before, after in zip(samples, samples[1:], strict=False):
            seconds = max(1, after.at_ms - before.at_ms) / 1000
            ack = [b - a for a, b in zip(before.ack, after.ack, strict=True)]
            run = [b - a for a, b in zip(before.run, after.run, strict=True)]
            out.append({
                "at": iso_ms(after.at_ms),
                "enqueuedPerS": round((after.enqueued - before.enqueued) / seconds, 3),
                "finishedPerS": round((after.finished - before.finished) / seconds, 3),
                "failedPerS": round((after.failed - before.failed) / seconds, 3),
                "ackP50Ms": _ms(quantile(0.5, self._ack_bounds, ack)),
                "ackP99Ms": _ms(quantile(0.99, self._ack_bounds, ack)),
                "runP50Ms": _ms(quantile(0.5, self._run_bounds, run)),
                "runP95Ms": _ms(quantile(0.95, self._run_bounds, run)),
            })
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
