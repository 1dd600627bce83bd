"""Benchmark of progress reports: updates absorbed per second from 100 running tasks, log growth.

Run from the repository root::

    python -m benchmarks.bench_progress              # full run (~100 s: 3 cases x 3 trials x 10 s)
    python -m benchmarks.bench_progress --quick      # 1 s per trial, one trial: checks it runs
    python -m benchmarks.bench_progress --case progress_absorb --out /tmp/progress.jsonl

Each trial starts a fresh ``Engine`` (concurrency 100) and enqueues 100 tasks of one function.
Every run waits at a barrier until all 100 are running, then calls ``await ctx.progress(percent,
done=, message=, detail=)`` for ``seconds`` and returns. The measured window runs from the
barrier's release until every task has succeeded and the log has made every event durable.

- ``progress_absorb``: each run calls ``ctx.progress`` in a tight loop, yielding to the event loop
  (``await asyncio.sleep(0)``) every ``yield_every`` calls so the 100 runs interleave. Against the
  durable log (``fsync=always``) and, for comparison, the memory store (nothing written).
- ``progress_paced``: each run reports once every 50 ms with a real sleep (a realistic rate:
  2,000 reports/s over 100 tasks), against the durable log. The process mostly sleeps, so its CPU
  share is low by design; ``cpu_ms_per_s`` says what the reports cost.

The core logs at most one ``ProgressReported`` per task per 500 ms (the latest wins) and flushes
a pending report before the outcome, so about ``2 x seconds + 1`` records per task are expected
whatever the call rate. Figures (``figures`` in the JSON line, medians over the trials):
``calls_per_s`` (= ``ops_per_s``, all tasks), ``progress_records`` and ``..._per_s`` /
``..._per_task_per_s``, ``calls_per_record``, ``log_bytes_grown`` (segment sizes after minus
before) and ``log_bytes_per_s``, ``progress_bytes`` / ``bytes_per_progress_record`` (the framed
ProgressReported records read back from the log), ``log_records`` / ``batches`` / ``fsyncs``
(``LogStore`` counters over the window), ``last_logged_is_latest`` (share of tasks whose last
logged report is their last call: 1.0 expected).

Same conventions as ``bench_embedded`` (``benchmarks/_harness.py``): one JSON line per case on
stdout (also appended to ``--out``), progress and a table on stderr, ``--quick``, ``--case``,
``--repeats``. Local differences: a ``variant`` field in each record, no warm-up trial (a trial is
10 s long; ``--repeats`` still applies), and a table of the progress figures.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks._harness import (
    BUSY_CPU_SHARE,
    Case,
    Settings,
    Stopwatch,
    Trial,
    parse_args,
    run_cases,
)
from cloudqueue.engine.core.batch_codec import encode_batch
from cloudqueue.engine.core.events import Event, ProgressReported
from cloudqueue.engine.core.progress import PROGRESS_WINDOW_MS
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.runtime.functions import RunContext
from cloudqueue.engine.runtime.log_file import list_segments, read_log
from cloudqueue.engine.runtime.log_store import LogStore
from cloudqueue.engine.runtime.store import MemoryStore

TASKS = 100
YIELD_EVERY = 10  # tight loop: progress calls between two ``await asyncio.sleep(0)``
PACED_INTERVAL_S = 0.05
FUNCTION = "chatty"
MESSAGE = "processed row {}"
# Turns a hang in the engine into an error instead of a stuck benchmark.
WAIT_TIMEOUT_S = 120.0
WAIT_TIMEOUT_MS = 120_000


class CountingMemoryStore(MemoryStore):
    """The memory store, counting the ProgressReported events appended to it."""

    def __init__(self) -> None:
        super().__init__()
        self.progress_records = 0

    def append(self, events: Sequence[Event]) -> None:
        super().append(events)
        self.progress_records += sum(isinstance(e, ProgressReported) for e in events)


@dataclass(frozen=True, slots=True)
class Workload:
    store: str  # "log" (fsync always) or "memory"
    tasks: int
    seconds: float
    yield_every: int  # calls per loop-yield (tight) ...
    interval_s: float  # ... or 0 for tight; > 0: one call, then a real sleep this long


@dataclass(frozen=True, slots=True)
class ProgressCase(Case):
    variant: str = ""

    @property
    def label(self) -> str:
        return f"{self.name}[{self.variant}]" if self.variant else self.name


class _Barrier:
    """All runs wait here until every one has started; counts the progress calls made."""

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks
        self.started = 0
        self.all_started = asyncio.Event()
        self.go = asyncio.Event()
        self.calls = 0
        self.calls_by_task: dict[str, int] = {}

    async def arrive(self) -> None:
        self.started += 1
        if self.started == self.tasks:
            self.all_started.set()
        await self.go.wait()


def _make_function(work: Workload, barrier: _Barrier) -> Any:
    async def chatty(params: Any, ctx: RunContext) -> dict[str, int]:
        await barrier.arrive()
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + work.seconds
        calls, now = 0, start
        if work.interval_s:  # spread the runs over the interval, as independent tasks would be
            await asyncio.sleep(params["i"] / work.tasks * work.interval_s)
        while now < deadline:
            percent = round(min(100.0, 100 * (now - start) / work.seconds), 1)
            for _ in range(1 if work.interval_s else work.yield_every):
                calls += 1
                await ctx.progress(percent, done=calls, message=MESSAGE.format(calls),
                             detail={"stage": "transform", "row": calls})
            await asyncio.sleep(work.interval_s)
            now = loop.time()
        barrier.calls += calls
        barrier.calls_by_task[ctx.unique_id] = calls
        return {"calls": calls}

    return chatty


def _segment_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for _, path in list_segments(directory))


async def _run_window(queue: Engine, work: Workload, barrier: _Barrier,
                      data_dir: Path | None) -> dict[str, Any]:
    """Enqueue, release the barrier once all runs are in, wait for every outcome to be durable."""
    timeout_ms = int(work.seconds * 1000) + 60_000
    uids = await asyncio.gather(*(queue.enqueue(FUNCTION, {"i": i}, timeout=timeout_ms)
                                  for i in range(work.tasks)))
    await asyncio.wait_for(barrier.all_started.wait(), WAIT_TIMEOUT_S)
    await queue.store.wait_durable(queue.core.last_seq)
    log = queue.store if isinstance(queue.store, LogStore) else None
    counters0 = (log.records, log.batches, log.syncs) if log else (0, 0, 0)
    bytes0 = _segment_bytes(data_dir) if data_dir else 0
    watch = Stopwatch()
    barrier.go.set()
    infos = await asyncio.gather(*(queue.wait(uid, timeout=WAIT_TIMEOUT_MS) for uid in uids))
    await queue.store.wait_durable(queue.core.last_seq)
    elapsed_ns, cpu_ns = watch.read()
    counters1 = (log.records, log.batches, log.syncs) if log else (0, 0, 0)
    bytes1 = _segment_bytes(data_dir) if data_dir else 0
    for info in infos:
        if info.status != "success":
            raise RuntimeError(f"task {info.unique_id} ended {info.state.value}: {info.error}")
    if log is not None and log.snapshot_seq:
        raise RuntimeError("the log compacted during the window: byte growth is not measurable")
    return {"elapsed_ns": elapsed_ns, "cpu_ns": cpu_ns, "bytes": bytes1 - bytes0,
            "counters": [b - a for a, b in zip(counters0, counters1, strict=True)]}


def _read_progress(data_dir: Path, calls_by_task: Mapping[str, int]) -> dict[str, float]:
    """ProgressReported records in the log: how many, their bytes (each framed as a batch of its
    own, as the writer frames a lone record), and whether each
    task's last logged report is its last call (latest wins, flushed before the outcome)."""
    events, _ = read_log(data_dir, repair_tail=False)
    reports = [e for e in events if isinstance(e, ProgressReported)]
    last: dict[str, int] = {}
    for event in reports:
        last[event.unique_id] = event.progress.get("done", -1)
    latest = sum(last.get(uid) == calls for uid, calls in calls_by_task.items())
    return {"progress_records": len(reports),
            "progress_bytes": sum(len(encode_batch([e], 0, 0)) for e in reports),
            "last_logged_is_latest": latest / len(calls_by_task)}


async def progress_trial(work: Workload) -> Trial:
    root = Path(tempfile.mkdtemp(prefix="cloudqueue-bench-progress-"))
    data_dir = root / "data" if work.store == "log" else None
    memory = CountingMemoryStore() if data_dir is None else None
    barrier = _Barrier(work.tasks)
    try:
        options: dict[str, Any] = ({"data_dir": data_dir, "fsync": "always"} if data_dir
                                   else {"store": memory})
        async with Engine(concurrency=work.tasks, **options) as queue:
            queue.define(FUNCTION)(_make_function(work, barrier))
            window = await _run_window(queue, work, barrier, data_dir)
        if data_dir is not None:
            logged = _read_progress(data_dir, barrier.calls_by_task)
        else:
            assert memory is not None
            logged = {"progress_records": memory.progress_records, "progress_bytes": 0}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _trial(work, barrier.calls, window, logged)


def _trial(work: Workload, calls: int, window: Mapping[str, Any],
           logged: Mapping[str, float]) -> Trial:
    seconds = window["elapsed_ns"] / 1e9
    records = logged["progress_records"]
    log_records, batches, syncs = window["counters"]
    extra = {
        "calls_per_s": calls / seconds,
        "calls_per_task_per_s": calls / seconds / work.tasks,
        "progress_records": records,
        "progress_records_per_s": records / seconds,
        "progress_records_per_task_per_s": records / seconds / work.tasks,
        "calls_per_record": calls / records if records else 0.0,
        "log_bytes_grown": window["bytes"],
        "log_bytes_per_s": window["bytes"] / seconds,
        "progress_bytes": logged["progress_bytes"],
        "bytes_per_progress_record": logged["progress_bytes"] / records if records else 0.0,
        "log_records": log_records,
        "batches": batches,
        "fsyncs": syncs,
        "cpu_ms_per_s": window["cpu_ns"] / 1e6 / seconds,
    }
    if work.store == "log":
        extra["last_logged_is_latest"] = logged["last_logged_is_latest"]
    return Trial(calls, window["elapsed_ns"], window["cpu_ns"], (), extra)


def _run(work: Workload) -> Trial:
    return asyncio.run(progress_trial(work))


def _params(work: Workload) -> dict[str, Any]:
    params: dict[str, Any] = {
        "store": work.store, "fsync": "always" if work.store == "log" else "none",
        "tasks": work.tasks, "concurrency": work.tasks, "seconds": work.seconds,
        "window_ms": PROGRESS_WINDOW_MS,
        "report": "percent, done, message 'processed row N', detail {stage, row}",
    }
    if work.interval_s:
        params["interval_ms"] = int(work.interval_s * 1000)
    else:
        params["yield_every"] = work.yield_every
    return params


def build_cases(quick: bool) -> list[Case]:
    seconds = 1.0 if quick else 10.0
    cases: list[Case] = []
    for store in ("log", "memory"):
        work = Workload(store, TASKS, seconds, YIELD_EVERY, 0.0)
        cases.append(ProgressCase("progress_absorb", _params(work), partial(_run, work),
                                  "calls/s", variant=f"store={store},pace=tight"))
    work = Workload("log", TASKS, seconds, 1, PACED_INTERVAL_S)
    cases.append(ProgressCase("progress_paced", _params(work), partial(_run, work), "calls/s",
                              variant=f"store=log,pace={int(PACED_INTERVAL_S * 1000)}ms"))
    return cases


# ---------------------------------------------------------------------- the table

_COLUMNS = (
    ("calls/s", "calls_per_s", "{:,.0f}"),
    ("rec/s", "progress_records_per_s", "{:,.1f}"),
    ("rec/s/task", "progress_records_per_task_per_s", "{:.2f}"),
    ("calls/rec", "calls_per_record", "{:,.0f}"),
    ("log B/s", "log_bytes_per_s", "{:,.0f}"),
    ("B/rec", "bytes_per_progress_record", "{:,.0f}"),
    ("fsyncs", "fsyncs", "{:,.0f}"),
    ("cpu", "cpu_share", "{:.2f}"),
    ("cpu ms/s", "cpu_ms_per_s", "{:,.0f}"),
)


def format_progress_table(results: Sequence[tuple[Case, Mapping[str, Any]]]) -> str:
    header = ["case", *(name for name, _, _ in _COLUMNS)]
    rows = [header]
    for case, record in results:
        figures = record["figures"]
        rows.append([case.label, *(fmt.format(figures[key]) for _, key, fmt in _COLUMNS)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    busy = [case.label for case, record in results if case.name == "progress_absorb"
            and record["figures"]["cpu_share"] < BUSY_CPU_SHARE]
    if busy:
        lines.append(f"! {', '.join(busy)}: cpu share under {BUSY_CPU_SHARE}: the process "
                     "waited for a CPU (other load) or for fsyncs; calls/s understates it")
    lines.append("progress_paced sleeps between reports: its low cpu share is expected")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    names = [case.name for case in build_cases(True)]
    args = parse_args(argv, names, (__doc__ or "").split("\n", 1)[0])
    settings = Settings(quick=args.quick, warmup=0, repeats=args.repeats or (1 if args.quick
                                                                             else 3))
    cases = [c for c in build_cases(args.quick) if not args.cases or c.name in args.cases]

    def with_variant(case: Case, record: dict[str, Any]) -> None:
        record["variant"] = case.variant if isinstance(case, ProgressCase) else ""

    results = run_cases(cases, args.out, lambda case: settings, with_variant)
    print("\n" + format_progress_table(results), file=sys.stderr)
    print(f"\n{len(results)} case(s); results appended to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
