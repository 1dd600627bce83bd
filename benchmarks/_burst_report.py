"""The burst's time series (per 100 ms bucket) and its plot.

Pure functions over what the generator and the function host recorded: every request's scheduled,
sent and ack times (``LoadResult``) and every run's completion time at the function host, by
``uniqueId``. Queue depth at time t is the number of tasks acknowledged by t and not yet completed
at the host by t (a task the host finished before its ack reached the generator never counts).
The plot needs matplotlib (the ``bench`` extra); without it :func:`plot` returns False.
``python -m benchmarks._burst_report burst-1000.json`` draws a saved series again (to its .png).
"""

from __future__ import annotations

import bisect
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._burst_load import LoadResult
from benchmarks._harness import percentile

BUCKET_MS = 100
P99_TARGET_MS = 50.0


@dataclass(frozen=True, slots=True)
class Drain:
    completed: int  # acknowledged tasks whose run completed at the host
    peak_depth: int
    peak_depth_at_s: float
    drained: bool  # every acknowledged task completed
    drain_s: float  # last completion minus last ack (-1 when not drained)
    last_ack_s: float  # from t0


def _depth_steps(load: LoadResult, done_ns: Mapping[str, int]) -> tuple[list[int], list[int]]:
    """Times at which the depth changes and the depth from each of them on."""
    changes: list[tuple[int, int]] = []
    for acked, uid in zip(load.acked_ns, load.unique_ids, strict=True):
        if not acked:
            continue
        done = done_ns.get(uid)
        if done is not None and done <= acked:
            continue  # finished before the generator saw its ack: never waiting
        changes.append((acked, 1))
        if done is not None:
            changes.append((done, -1))
    changes.sort()
    times: list[int] = []
    depths: list[int] = []
    depth = 0
    for at, step in changes:
        depth += step
        if times and times[-1] == at:
            depths[-1] = depth
        else:
            times.append(at)
            depths.append(depth)
    return times, depths


def _depth_at(times: Sequence[int], depths: Sequence[int], at_ns: int) -> int:
    index = bisect.bisect_right(times, at_ns) - 1
    return depths[index] if index >= 0 else 0


def first_completions(completions: Sequence[Sequence[Any]]) -> dict[str, int]:
    """``[(uniqueId, monotonic_ns), ...]`` from the host -> the first completion of each task."""
    done: dict[str, int] = {}
    for uid, at in completions:
        done.setdefault(str(uid), int(at))
    return done


def drain(load: LoadResult, done_ns: Mapping[str, int]) -> Drain:
    acked = [(t, uid) for t, uid in zip(load.acked_ns, load.unique_ids, strict=True) if t]
    finished = [done_ns[uid] for _, uid in acked if uid in done_ns]
    times, depths = _depth_steps(load, done_ns)
    peak = max(depths, default=0)
    peak_at = times[depths.index(peak)] if depths else load.t0_ns
    last_ack = max((t for t, _ in acked), default=load.t0_ns)
    drained = bool(acked) and len(finished) == len(acked)
    drain_s = max(0, max(finished) - last_ack) / 1e9 if drained else -1.0
    return Drain(len(finished), peak, (peak_at - load.t0_ns) / 1e9, drained, round(drain_s, 4),
                 (last_ack - load.t0_ns) / 1e9)


def _bucket_of(at_ns: int, t0_ns: int, bucket_ns: int) -> int:
    return max(0, (at_ns - t0_ns) // bucket_ns)


def time_series(load: LoadResult, done_ns: Mapping[str, int],
                bucket_ms: int = BUCKET_MS) -> list[dict[str, Any]]:
    """One row per bucket from t0 to the last event: what was sent, acked and completed in it,
    requests dropped (scheduled in it), ack latency p50 / p99 / max in ms of the requests
    *scheduled* in it, and the queue depth at its end."""
    bucket_ns = bucket_ms * 1_000_000
    t0 = load.t0_ns
    events = [t for t in (*load.sent_ns, *load.acked_ns, *done_ns.values()) if t]
    last = max([*events, load.scheduled_ns[-1] if load.scheduled_ns else t0])
    buckets = _bucket_of(last, t0, bucket_ns) + 1
    sent, acked, completed, dropped = ([0] * buckets for _ in range(4))
    latencies: list[list[int]] = [[] for _ in range(buckets)]
    for i, scheduled in enumerate(load.scheduled_ns):
        slot = _bucket_of(scheduled, t0, bucket_ns)
        if load.sent_ns[i]:
            sent[_bucket_of(load.sent_ns[i], t0, bucket_ns)] += 1
        if load.acked_ns[i]:
            acked[_bucket_of(load.acked_ns[i], t0, bucket_ns)] += 1
            latencies[slot].append(load.acked_ns[i] - scheduled)
        elif not load.sent_ns[i]:
            dropped[slot] += 1
    for at in done_ns.values():
        completed[_bucket_of(at, t0, bucket_ns)] += 1
    times, depths = _depth_steps(load, done_ns)
    rows = []
    for b in range(buckets):
        ordered = sorted(latencies[b])
        row: dict[str, Any] = {"t_s": round(b * bucket_ms / 1000, 3), "sent": sent[b],
                               "acked": acked[b], "completed": completed[b],
                               "not_sent": dropped[b],
                               "depth": _depth_at(times, depths, t0 + (b + 1) * bucket_ns - 1)}
        for name, p in (("ack_p50_ms", 50), ("ack_p99_ms", 99), ("ack_max_ms", 100)):
            row[name] = round(percentile(ordered, p) / 1e6, 3) if ordered else None
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- the plot


def plot(rows: Sequence[Mapping[str, Any]], title: str, subtitle: str, rate: int,
         duration_s: float, path: Path, bucket_ms: int = BUCKET_MS) -> bool:
    """Enqueue rate, ack latency and queue depth over time, three panels, one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import LogFormatter
    except ImportError:
        return False
    per_s = 1000 / bucket_ms
    half = bucket_ms / 2000
    t = [r["t_s"] + half for r in rows]  # rates and latencies at their bucket's middle
    fig, (rates, latency, depth) = plt.subplots(3, 1, sharex=True, figsize=(10, 8.5),
                                                height_ratios=(1.1, 1, 0.9))
    rates.plot([0, duration_s], [rate, rate], color="0.6", ls="--", lw=1, label="offered")
    rates.plot(t, [r["sent"] * per_s for r in rows], lw=0.8, color="0.35", label="sent")
    rates.plot(t, [r["acked"] * per_s for r in rows], lw=1.3, color="tab:blue",
               label="acked (enqueues/s)")
    rates.plot(t, [r["completed"] * per_s for r in rows], lw=1.3, color="tab:orange",
               label="completed at the host")
    if any(r["not_sent"] for r in rows):
        rates.plot(t, [r["not_sent"] * per_s for r in rows], lw=1, color="tab:red",
                   label="not sent (dropped)")
    rates.set_ylabel(f"per second\n({bucket_ms} ms buckets)")
    for name, color in (("ack_max_ms", "0.6"), ("ack_p99_ms", "tab:purple"),
                        ("ack_p50_ms", "tab:green")):
        points = [(x, r[name]) for x, r in zip(t, rows, strict=True) if r[name] is not None]
        latency.plot([p[0] for p in points], [max(p[1], 0.01) for p in points], color=color,
                     lw=1.1, label=name.removeprefix("ack_").replace("_ms", ""))
    latency.axhline(P99_TARGET_MS, color="tab:red", ls="--", lw=1, label="p99 target 50 ms")
    latency.set_yscale("log")
    latency.yaxis.set_major_formatter(LogFormatter())
    latency.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(2, 0.5)))
    latency.set_ylabel("ack latency, ms\n(by scheduled send)")
    depths = [0, *(r["depth"] for r in rows)]
    ends = [0.0, *(r["t_s"] + 2 * half for r in rows)]  # the depth at each bucket's end
    depth.fill_between(ends, depths, alpha=0.35)
    depth.plot(ends, depths, lw=1)
    depth.set_ylabel("queue depth\n(acked, not completed)")
    depth.set_xlabel("seconds since the first scheduled enqueue (grey line: last scheduled)")
    for axis in (rates, latency):
        axis.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=8, ncol=5,
                    frameon=False, borderaxespad=0.1)
    for axis in (rates, latency, depth):
        axis.grid(True, alpha=0.3)
        axis.axvline(duration_s, color="0.5", lw=0.8)
    fig.suptitle(title, fontsize=10, y=0.995)
    fig.text(0.5, 0.936, subtitle, ha="center", va="center", fontsize=8, color="0.3")
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.07, top=0.875, hspace=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_document(document: Mapping[str, Any], path: Path) -> bool:
    """The plot of a saved burst (``burst-<rate>.json``: its figures, environment and series)."""
    burst, figures, env = document["burst"], document["figures"], document["environment"]
    ack = document["ack_ms"]
    achieved = figures["acked"] / max(1e-9, figures["last_ack_s"])
    drained = f"{figures['drain_s']:.2f} s" if figures["drained"] else "not drained"
    title = (f"burst: {burst['rate']:,}/s offered for {burst['seconds']:g} s -> {achieved:,.0f}/s"
             f" acked; ack p50 {ack['p50']:.1f} / p99 {ack['p99']:.1f} / max {ack['max']:.0f} ms"
             f"\ndrain after the last ack {drained}; peak depth {figures['peak_depth']:,.0f}")
    cores = ", ".join(f"{k.removeprefix('cores_')} {v:.2f}" for k, v in figures.items()
                      if k.startswith("cores_"))
    subtitle = (f"cloudqueue serve (fsync always, concurrency {burst['server_concurrency']}) + "
                f"FunctionHost no-op + open-loop generator, {env['cpu_count']} CPUs\n"
                f"cores used: {cores}; dropped {figures['dropped']:.0f}, late "
                f"{figures['late']:.0f}; commit {env['commit']}{'+' if env['git_dirty'] else ''}")
    return plot(document["series"], title, subtitle, burst["rate"], burst["seconds"], path,
                document["bucket_ms"])


if __name__ == "__main__":
    for name in sys.argv[1:]:
        saved = Path(name)
        plot_document(json.loads(saved.read_text(encoding="utf-8")), saved.with_suffix(".png"))
