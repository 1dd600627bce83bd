"""The PostgreSQL store beside the embedded log, in one run on one machine: enqueue with one and
with 64 producers, no-op tasks end to end, and enqueue-to-start latency at a paced 1,000
tasks/s; with the floors under them (one fsync of the disk, one single-row commit of the
database).

Each trial gets a fresh data directory (the log, ``fsync=always``) or a fresh database in a
throwaway PostgreSQL cluster this benchmark starts (``synchronous_commit=on``, fsync on: the
server's defaults), on the same disk. The engine is ``Engine(data_dir=...)`` or
``Engine(store="postgresql://...")``: the same engine, only the store differs.

    python -m benchmarks.bench_store [--quick] [--case NAME] [--repeats N]
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import shutil
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks._harness import (
    Case,
    Settings,
    Stopwatch,
    Target,
    Trial,
    format_table,
    now_ns,
    parse_args,
    percentile,
    raw_fsync_us,
    run_cases,
)
from cloudqueue import Engine, RunContext
from cloudqueue.engine.runtime.postgres.local import LocalPostgres

FAR_DELAY_MS = 86_400_000
PARAMS = {"user_id": 1, "template": "welcome", "locale": "en"}
ENQUEUE_64 = Target("embedded enqueue on PostgreSQL, 64 producers", 20_000)
END_TO_END = Target("no-op tasks end to end on PostgreSQL", 4_000)

_cluster: LocalPostgres | None = None
_names = itertools.count(1)
_root = Path(tempfile.mkdtemp(prefix="cloudqueue-bench-store-"))


def cluster() -> LocalPostgres:
    global _cluster
    if _cluster is None:
        _cluster = LocalPostgres(Path(tempfile.mkdtemp(prefix="cloudqueue-bench-pg-"))).init()
        _cluster.start()
        atexit.register(_stop)
    return _cluster


def _stop() -> None:
    if _cluster is not None:
        _cluster.stop("immediate")
        shutil.rmtree(_cluster.directory, ignore_errors=True)
    shutil.rmtree(_root, ignore_errors=True)


def store_options(store: str) -> dict[str, Any]:
    """``Engine``'s keywords for a fresh store of the kind."""
    if store == "log":
        return {"data_dir": Path(tempfile.mkdtemp(dir=_root)), "fsync": "always"}
    return {"store": cluster().create_database(f"bench{next(_names)}")}


def _run(make: Coroutine[Any, Any, Trial]) -> Trial:
    return asyncio.run(make)


# ---------------------------------------------------------------------- enqueue


async def enqueue_trial(store: str, total: int, producers: int) -> Trial:
    """``producers`` tasks share ``total`` enqueues, each awaited (durable); nothing runs."""
    async with Engine(**store_options(store)) as queue:
        latencies: list[int] = []

        async def produce(count: int) -> None:
            for _ in range(count):
                started = now_ns()
                await queue.enqueue("f", PARAMS, delay=FAR_DELAY_MS)
                latencies.append(now_ns() - started)

        shares = [total // producers + (1 if p < total % producers else 0)
                  for p in range(producers)]
        watch = Stopwatch()
        await asyncio.gather(*(produce(n) for n in shares))
        elapsed, cpu = watch.read()
        batches = getattr(queue.store, "batches", 0)
        extra = {"records_per_commit": round(total / batches, 1) if batches else 0.0}
    return Trial(total, elapsed, cpu, latencies, extra)


# ---------------------------------------------------------------------- end to end


async def end_to_end_trial(store: str, total: int, concurrency: int) -> Trial:
    """Enqueue ``total`` no-op tasks (64 producers), then wait until every one succeeded."""
    async with Engine(concurrency=concurrency, **store_options(store)) as queue:
        async def noop(params: Any, ctx: RunContext) -> None:
            return None

        queue.define("noop")(noop)
        ids: list[str] = []

        async def produce(count: int) -> None:
            for _ in range(count):
                ids.append(await queue.enqueue("noop", PARAMS))

        watch = Stopwatch()
        await asyncio.gather(*(produce(total // 64) for _ in range(64)))
        enqueued_s = watch.read()[0] / 1e9
        for unique_id in ids:
            await queue.wait(unique_id, timeout=600_000)
        elapsed, cpu = watch.read()
    return Trial(len(ids), elapsed, cpu, (), {"enqueue_phase_s": round(enqueued_s, 3)})


# ---------------------------------------------------------------------- paced latency


async def paced_trial(store: str, rate: int, seconds: float, concurrency: int) -> Trial:
    """Offer ``rate`` tasks/s for ``seconds`` (one enqueue every 1/rate s, each in a task of its
    own, so a slow acknowledgement does not slow the offer); each sample is one task's time
    from its enqueue call to its run's start."""
    async with Engine(concurrency=concurrency, **store_options(store)) as queue:
        called: dict[str, int] = {}
        started: dict[str, int] = {}
        acks: list[int] = []

        async def noop(params: Any, ctx: RunContext) -> None:
            started[params["i"]] = now_ns()

        queue.define("noop")(noop)

        async def one(i: str) -> None:
            called[i] = now_ns()
            await queue.enqueue("noop", {"i": i})
            acks.append(now_ns() - called[i])

        total = int(rate * seconds)
        loop = asyncio.get_running_loop()
        watch = Stopwatch()
        begin = loop.time()
        pending = []
        for n in range(total):
            delay = begin + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.ensure_future(one(str(n))))
        await asyncio.gather(*pending)
        deadline = loop.time() + 60
        while len(started) < total and loop.time() < deadline:
            await asyncio.sleep(0.01)
        elapsed, cpu = watch.read()
        waits = sorted(started[i] - called[i] for i in started)
        acks.sort()
    return Trial(len(started), elapsed, cpu, waits,
                 {"offered_per_s": rate, "ack_p50_ms": round(percentile(acks, 50) / 1e6, 2),
                  "ack_p99_ms": round(percentile(acks, 99) / 1e6, 2),
                  "not_started": total - len(started)})


# ---------------------------------------------------------------------- floors


async def raw_commit_trial(rounds: int) -> Trial:
    """One client committing one small row per transaction: the database's floor for a
    single acknowledged write (the log's is one fsync)."""
    conn = await asyncpg.connect(cluster().create_database(f"bench{next(_names)}"))
    try:
        await conn.execute("CREATE TABLE t (id bigint, body bytea)")
        latencies = []
        watch = Stopwatch()
        for i in range(rounds):
            started = now_ns()
            await conn.execute("INSERT INTO t VALUES ($1, $2)", i, b"x" * 100)
            latencies.append(now_ns() - started)
        elapsed, cpu = watch.read()
    finally:
        await conn.close()
    fsync_us = raw_fsync_us(_root, 200)
    return Trial(rounds, elapsed, cpu, latencies, {"disk_fsync_p50_us": round(fsync_us, 1)})


# ---------------------------------------------------------------------- cases


def build_cases(quick: bool) -> list[Case]:
    n1, n64, e2e, paced_s = (300, 2_000, 2_000, 3.0) if quick else (2_000, 50_000, 20_000, 20.0)
    cases = [Case("raw_commit", {"rounds": 300 if quick else 3_000},
                  partial(_run, raw_commit_trial(300 if quick else 3_000)), "commits/s",
                  caveat="the floor: one row per commit, one client")]
    for store in ("log", "postgresql"):
        cases.append(Case("enqueue", {"store": store, "producers": 1, "n": n1},
                          partial(lambda s: _run(enqueue_trial(s, n1, 1)), store),
                          "enqueues/s"))
        cases.append(Case("enqueue", {"store": store, "producers": 64, "n": n64},
                          partial(lambda s: _run(enqueue_trial(s, n64, 64)), store),
                          "enqueues/s", ENQUEUE_64 if store == "postgresql" else None))
        cases.append(Case("end_to_end_noop", {"store": store, "n": e2e, "concurrency": 256},
                          partial(lambda s: _run(end_to_end_trial(s, e2e, 256)), store),
                          "tasks/s", END_TO_END if store == "postgresql" else None))
        cases.append(Case("paced_start_latency",
                          {"store": store, "offered_per_s": 1_000, "seconds": paced_s,
                           "concurrency": 256},
                          partial(lambda s: _run(paced_trial(s, 1_000, paced_s, 256)), store),
                          "tasks/s"))
    return cases


def ratios(results: Sequence[tuple[Case, dict[str, Any]]]) -> list[str]:
    """PostgreSQL's figure over the log's, for each case measured on both."""
    by: dict[tuple[str, str], float] = {}
    for case, record in results:
        store = case.params.get("store")
        if store is not None:
            key = case.name + str(case.params.get("producers", ""))
            by[(key, str(store))] = float(record["figures"]["ops_per_s"])
    lines = []
    for (key, store), value in sorted(by.items()):
        log_value = by.get((key, "log"))
        if store == "postgresql" and log_value:
            lines.append(f"{key}: postgresql / log = {value:,.0f} / {log_value:,.0f} = "
                         f"{value / log_value:.2f}x")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    names = [case.name for case in build_cases(True)]
    args = parse_args(argv, names, (__doc__ or "").split("\n", 1)[0])
    settings = Settings(quick=args.quick, warmup=0, repeats=args.repeats or 1)
    cases = [c for c in build_cases(args.quick) if not args.cases or c.name in args.cases]
    results = run_cases(cases, args.out, lambda case: settings)
    print("\n" + format_table(results), file=sys.stderr)
    for line in ratios(results):
        print(line, file=sys.stderr)
    latency = [(c, r) for c, r in results if c.name == "paced_start_latency"]
    for case, record in latency:
        figures = record["figures"]
        print(f"enqueue->start at 1,000/s offered, {case.params['store']}: p50 "
              f"{figures.get('p50_us', 0) / 1000:.2f} ms, p99 "
              f"{figures.get('p99_us', 0) / 1000:.2f} ms", file=sys.stderr)
    print(f"\n{len(results)} case(s); results appended to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
