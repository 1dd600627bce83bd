"""A long run on the PostgreSQL store: a steady 1,000 tasks/s with ``keepResult`` 300 s, and,
in the middle, a transaction held open for minutes by another client.

What it shows, minute by minute (one line every ``--step`` seconds, and a JSON summary):

- enqueue-to-start latency (p50, p99) and acknowledgement latency (p99) over each step;
- the size of the queue's tables and their dead rows (retention: batches deleted after each
  snapshot, vacuumed by autovacuum);
- the tasks held and the process's RSS;
- when the held transaction began and ended, when the node's alarm named its holder, and how
  long after its end the latency was back at its baseline.

    python -m benchmarks.bench_pg_soak [--minutes 30] [--hold-at 12] [--hold-minutes 5]
                                       [--rate 1000] [--quick]

"Flat" is judged between minute 10 and the end: the mean p99 and the largest table size of the
first and last third of that span, side by side. The engine is ``Engine(store=URL)`` in this
process (a node of one app: the same node code as ``cloudqueue serve --store``, which watches
the database the same way), on a throwaway PostgreSQL cluster with fsync and
``synchronous_commit`` on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks._harness import environment, percentile
from cloudqueue import Engine, RunContext
from cloudqueue.engine.runtime.postgres.local import LocalPostgres

OUT = Path(__file__).resolve().parent / "results" / "pg_soak.json"


class Alarms(logging.Handler):
    """The node's database alarms, with when they were logged."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((time.monotonic(), record.getMessage()))


async def soak(args: argparse.Namespace, url: str) -> dict[str, Any]:
    alarms = Alarms()
    logging.getLogger("cloudqueue.postgres").addHandler(alarms)
    called: dict[int, float] = {}
    started: dict[int, float] = {}
    acks: list[float] = []
    steps: list[dict[str, Any]] = []
    hold: dict[str, Any] = {}
    async with Engine(store=url, concurrency=64) as queue:
        async def noop(params: Any, ctx: RunContext) -> None:
            started[params["i"]] = time.monotonic()

        queue.define("noop")(noop)
        admin = await asyncpg.connect(url)
        begin = time.monotonic()
        end = begin + args.minutes * 60
        holder: asyncpg.Connection | None = None
        in_flight: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            called[i] = time.monotonic()
            await queue.enqueue("noop", {"i": i}, keep_result=300_000)
            acks.append(time.monotonic() - called[i])

        async def sample(at: float) -> None:
            nonlocal acks
            window = [started[i] - called[i] for i in list(started)]
            started.clear()
            ack_window, acks = acks, []
            rows = await admin.fetch(
                "SELECT relname, pg_total_relation_size(relid) AS bytes, n_dead_tup, n_live_tup "
                "FROM pg_stat_user_tables WHERE relname IN ('cq_batches', 'cq_snapshots')")
            sizes = {r["relname"]: r for r in rows}
            window.sort()
            ack_window.sort()
            step = {
                "minute": round((at - begin) / 60, 2),
                "started": len(window),
                "start_p50_ms": round(percentile(window, 50) * 1000, 2) if window else None,
                "start_p99_ms": round(percentile(window, 99) * 1000, 2) if window else None,
                "ack_p99_ms": round(percentile(ack_window, 99) * 1000, 2) if ack_window else None,
                "tables_mb": round(sum(r["bytes"] for r in rows) / 2**20, 1),
                "batches_dead_rows": sizes["cq_batches"]["n_dead_tup"] if "cq_batches" in sizes
                else None,
                "tasks_held": len(queue.core.tasks()),
                "rss_max_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "holding": holder is not None,
            }
            steps.append(step)
            print(json.dumps(step), file=sys.stderr, flush=True)

        loop = asyncio.get_running_loop()
        next_sample = begin + args.step
        n = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if holder is None and "began" not in hold and now - begin >= args.hold_at * 60:
                holder = await asyncpg.connect(
                    url, server_settings={"application_name": "soak-held-transaction"})
                await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                await holder.fetchval("SELECT count(*) FROM cq_snapshots")
                hold.update(began=now, pid=holder.get_server_pid())
            if holder is not None and now - hold["began"] >= args.hold_minutes * 60:
                await holder.execute("ROLLBACK")
                await holder.close()
                holder = None
                hold["ended"] = now
            if now >= next_sample:
                await sample(now)
                next_sample += args.step
            due = begin + n / args.rate
            if due > now:
                await asyncio.sleep(min(due - now, 0.05))
                continue
            task = loop.create_task(one(n))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            n += 1
        await asyncio.gather(*in_flight)
        await admin.close()
    logging.getLogger("cloudqueue.postgres").removeHandler(alarms)
    return summarize(args, steps, hold, alarms, begin, n)


def summarize(args: argparse.Namespace, steps: list[dict[str, Any]], hold: dict[str, Any],
              alarms: Alarms, begin: float, offered: int) -> dict[str, Any]:
    def span(lo: float, hi: float) -> list[dict[str, Any]]:
        return [s for s in steps if lo <= s["minute"] < hi and s["start_p99_ms"] is not None]

    total = args.minutes
    first, last = span(10, 10 + (total - 10) / 3), span(total - (total - 10) / 3, total + 1)
    baseline = span(min(5, args.hold_at / 2), args.hold_at)
    base_p99 = (sorted(s["start_p99_ms"] for s in baseline)[len(baseline) // 2]
                if baseline else None)
    named = [(t - begin, m) for t, m in alarms.seen
             if "pid" in m and str(hold.get("pid")) in m and "holds back vacuum" in m]
    back_s = None
    if "ended" in hold and base_p99 is not None:
        ended_min = (hold["ended"] - begin) / 60
        for s in steps:
            if s["minute"] > ended_min and s["start_p99_ms"] is not None \
                    and s["start_p99_ms"] <= max(1.5 * base_p99, base_p99 + 5):
                back_s = round((s["minute"] - ended_min) * 60, 1)
                break

    def mean(items: list[dict[str, Any]], key: str) -> float | None:
        values = [s[key] for s in items if s[key] is not None]
        return round(sum(values) / len(values), 2) if values else None

    return {
        "env": environment(), "rate": args.rate, "minutes": args.minutes, "offered": offered,
        "hold": {"at_min": args.hold_at, "minutes": args.hold_minutes, "pid": hold.get("pid"),
                 "alarm_after_s": round(named[0][0] - (hold["began"] - begin), 1)
                 if named and "began" in hold else None,
                 "alarm": named[0][1] if named else None,
                 "baseline_start_p99_ms": base_p99, "back_to_baseline_after_end_s": back_s},
        "flat": {"first_third": {"start_p99_ms": mean(first, "start_p99_ms"),
                                 "tables_mb_max": max((s["tables_mb"] for s in first),
                                                      default=None)},
                 "last_third": {"start_p99_ms": mean(last, "start_p99_ms"),
                                "tables_mb_max": max((s["tables_mb"] for s in last),
                                                     default=None)}},
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--hold-at", type=float, default=12, help="minute the hold begins")
    parser.add_argument("--hold-minutes", type=float, default=5)
    parser.add_argument("--rate", type=int, default=1_000, help="tasks offered per second")
    parser.add_argument("--step", type=float, default=30, help="seconds per sample")
    parser.add_argument("--quick", action="store_true",
                        help="2.5 minutes, a 75 s hold (the alarm fires after 60 s) from "
                             "minute 0.5, 200 tasks/s (CI)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.hold_at, args.hold_minutes, args.rate, args.step = \
            2.5, 0.5, 1.25, 200, 10
    directory = Path(tempfile.mkdtemp(prefix="cloudqueue-soak-pg-"))
    cluster = LocalPostgres(directory).init().start()
    try:
        result = asyncio.run(soak(args, cluster.create_database("soak")))
    finally:
        cluster.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k not in ("steps", "env")}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
