"""Benchmark of schedules at scale: the event loop's CPU share and fire lateness.

Run from the repository root::

    python -m benchmarks.bench_cron                  # full run (~80 s: two 30 s windows)
    python -m benchmarks.bench_cron --quick          # 1,000 schedules, 3 s windows (~12 s)
    python -m benchmarks.bench_cron --case cron_scale --profile   # + cProfile of the window
    python -m benchmarks.bench_cron --seconds 60 --tmp /some/dir  # a longer window, elsewhere

Case ``cron_scale``: one ``Engine`` (a durable log with ``fsync=always`` in a fresh temp data
dir, and again with the memory store, to separate the log's cost) holds 10,000 schedules: 1,000
fire every second (500 ``cron="* * * * * ?"``, 500 ``interval=1000`` anchored at their creation
times) and 9,000 fire slower (4,500 every minute, 4,500 every 5 minutes, cron, seconds and
minutes spread). Every firing runs an in-process no-op that records when it started; its
lateness is that time minus the slot (parsed from its uniqueId ``cron:<name>:<slot_ms>``).
``keep_result`` is 1 s, so finished firings are purged and the held task count stays flat.

After the schedules are created (concurrently, in chunks, so group commit applies: ``create_s``)
and a settling pause, a window of ``--seconds`` (30; quick: 3) of real time is measured:

* ``cpu_share`` (process CPU time / wall time: the fraction of one core the queue used, writer
  threads included) and ``loop_cpu_share`` (the event loop's thread alone);
* ``ops_per_s``: firings whose slot fell in the window and that ran, per second, against
  ``expected_per_s`` (every slot of every schedule in the window, computed afterwards);
  ``missed`` (an expected slot that had not run ``grace_s`` after the window), ``doubled`` (a
  uniqueId that ran twice) and ``unexpected`` (a slot that is no slot of its schedule);
* lateness p50 / p99 / max in ms, per kind (every-second cron, every-second interval, slower),
  and the p99 of the window's first and last thirds (lateness that grows shows there);
* ``next_fire_*``: calls to ``next_fire_ms`` (wrapped for the window) per firing and their
  share of the process's CPU time: the issue asks that fire times be computed once per fire;
* held tasks, RSS and live small Python objects (``sys.getallocatedblocks``) at both ends of
  the window, and for the log its records per fsync.

Conventions are ``benchmarks/_harness.py``'s (one JSON line per case on stdout, appended to
``--out``; a table on stderr; ``--quick``, ``--case``, ``--repeats``), except that a case runs
one trial with no warm-up unless ``--repeats`` says otherwise (the settling pause is the warm-up)
and the table is this file's own: the harness flags a CPU share under 0.9 as "disturbed", which
here, where the loop mostly sleeps, is the figure being measured. ``--profile`` runs cProfile on
the loop thread during the window and prints the top functions by tottime (figures from such a
run carry ``params.profiled``). The process exits 1 if a firing was doubled or unexpected.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cloudqueue.engine.core.schedules as schedules_module
from benchmarks._harness import (
    Case,
    Settings,
    Stopwatch,
    Trial,
    parse_args,
    percentile,
    run_cases,
)
from cloudqueue.engine.core.cron import parse_cron
from cloudqueue.engine.core.cron_next import next_fire_ms
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.runtime.functions import RunContext
from cloudqueue.engine.runtime.log_store import LogStore

FUNCTION = "tick"
KEEP_RESULT_MS = 1_000
CREATE_CHUNK = 1_000  # set_schedule calls gathered at once (one group commit each)
CONCURRENCY = 1_024  # above the largest burst (the every-second crons all fire at :000)
PROFILE_TOP = 25
KINDS = ("sec_cron", "sec_interval", "slow")


@dataclass(frozen=True, slots=True)
class Sizes:
    schedules: int
    per_second: int  # half cron "* * * * * ?", half interval=1000
    window_s: float
    settle_s: float  # after creation, before the window
    grace_s: float  # after the window, for its last slots to run

    @property
    def slow(self) -> int:
        return self.schedules - self.per_second

    @property
    def nominal_per_s(self) -> float:
        minute, five = self.slow - self.slow // 2, self.slow // 2
        return self.per_second + minute / 60 + five / 300


FULL = Sizes(10_000, 1_000, 30.0, 3.0, 3.0)
QUICK = Sizes(1_000, 100, 3.0, 1.0, 1.5)


@dataclass(frozen=True, slots=True)
class ScheduleDef:
    name: str
    kind: str
    cron: str | None = None
    interval: int | None = None


def schedule_defs(sizes: Sizes) -> list[ScheduleDef]:
    """Every-second ones (cron and interval alternately), then the slower ones: every minute at
    second ``i % 60``, and every 5 minutes at second ``i % 60`` of minutes ``m, m+5, ...``."""
    defs = []
    for i in range(sizes.per_second):
        if i % 2 == 0:
            defs.append(ScheduleDef(f"sc-{i:05d}", "sec_cron", cron="* * * * * ?"))
        else:
            defs.append(ScheduleDef(f"si-{i:05d}", "sec_interval", interval=1_000))
    for i in range(sizes.slow):
        if i % 2 == 0:
            defs.append(ScheduleDef(f"m1-{i:05d}", "slow", cron=f"{i % 60} * * * * ?"))
        else:
            minute = (i // 60) % 5
            defs.append(ScheduleDef(f"m5-{i:05d}", "slow", cron=f"{i % 60} {minute}/5 * * * ?"))
    return defs


# ---------------------------------------------------------------------- instruments


class CountingNextFire:
    """Stands in for ``engine.core.schedules.next_fire_ms`` (what ``Schedule.next_after``
    calls) during the window: counts calls and their time."""

    def __init__(self) -> None:
        # the module's namespace, where Schedule.next_after looks the name up at each call (it is
        # imported there from engine.core.cron, not re-exported, so not a typed attribute)
        self.namespace = vars(schedules_module)
        self.real: Callable[..., int] = self.namespace["next_fire_ms"]
        self.calls = 0
        self.ns = 0

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        t0 = time.perf_counter_ns()
        try:
            return self.real(*args, **kwargs)
        finally:
            self.ns += time.perf_counter_ns() - t0
            self.calls += 1

    def install(self) -> None:
        self.namespace["next_fire_ms"] = self

    def remove(self) -> None:
        self.namespace["next_fire_ms"] = self.real


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(slots=True)
class Snapshot:
    """What the window's two ends read."""

    epoch_ms: int
    thread_cpu_ns: int
    held_tasks: int
    rss: int
    blocks: int  # sys.getallocatedblocks(): small Python objects alive
    recorder_bytes: int
    log: tuple[int, int, int] | None  # records, syncs, batches

    @classmethod
    def take(cls, queue: Engine, runs: Runs) -> Snapshot:
        store = queue.store
        log = (store.records, store.syncs, store.batches) if isinstance(store, LogStore) else None
        return cls(time.time_ns() // 1_000_000, time.thread_time_ns(), len(queue.core),
                   rss_bytes(), sys.getallocatedblocks(), runs.nbytes, log)


@dataclass(slots=True)
class Window:
    start: Snapshot
    end: Snapshot
    elapsed_ns: int
    cpu_ns: int
    next_fire: CountingNextFire
    profile: str = ""


# ---------------------------------------------------------------------- the trial


class Runs:
    """Every run's schedule (an index into the definitions), slot and start time (epoch ns),
    appended by the no-op function to flat arrays: 24 bytes a run and no Python object kept, so
    the recording does not pass for engine memory growth (``recorder_mb`` is its size)."""

    def __init__(self, defs: Sequence[ScheduleDef]) -> None:
        self.index = {d.name: i for i, d in enumerate(defs)}
        self.schedule = array("q")
        self.slot = array("q")
        self.started_ns = array("q")

    async def tick(self, params: Any, ctx: RunContext) -> None:
        started_ns = time.time_ns()
        _, name, slot = ctx.unique_id.split(":")  # cron:<name>:<slot_ms>
        self.schedule.append(self.index[name])
        self.slot.append(int(slot))
        self.started_ns.append(started_ns)

    @property
    def nbytes(self) -> int:
        return sum(len(a) * a.itemsize for a in (self.schedule, self.slot, self.started_ns))


async def create_all(queue: Engine, defs: Sequence[ScheduleDef]) -> tuple[int, int]:
    """Create every schedule, ``CREATE_CHUNK`` at a time; return (wall ns, process CPU ns)."""
    watch = Stopwatch()
    for first in range(0, len(defs), CREATE_CHUNK):
        await asyncio.gather(*(
            queue.set_schedule(d.name, FUNCTION, {"n": d.name}, cron=d.cron, interval=d.interval,
                               keep_result=KEEP_RESULT_MS)
            for d in defs[first:first + CREATE_CHUNK]))
    return watch.read()


async def measure_window(queue: Engine, runs: Runs, sizes: Sizes, profile: bool) -> Window:
    counter = CountingNextFire()
    profiler = cProfile.Profile() if profile else None
    start = Snapshot.take(queue, runs)
    watch = Stopwatch()
    counter.install()
    if profiler is not None:
        profiler.enable()
    try:
        await asyncio.sleep(sizes.window_s)
    finally:
        if profiler is not None:
            profiler.disable()
        counter.remove()
    elapsed_ns, cpu_ns = watch.read()
    window = Window(start, Snapshot.take(queue, runs), elapsed_ns, cpu_ns, counter)
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(PROFILE_TOP)
        window.profile = text.getvalue()
    return window


async def scale_trial(sizes: Sizes, root: Path | None, profile: bool) -> Trial:
    defs = schedule_defs(sizes)
    runs = Runs(defs)
    directory = Path(tempfile.mkdtemp(prefix="cron-", dir=root)) if root is not None else None
    try:
        data_dir = directory / "data" if directory is not None else None
        async with Engine(data_dir=data_dir, concurrency=CONCURRENCY, timezone="UTC") as queue:
            queue.define(FUNCTION)(runs.tick)
            create_ns, create_cpu_ns = await create_all(queue, defs)
            anchors = {d.name: queue.core.schedule(d.name).created_ms
                       for d in defs if d.interval is not None}
            await asyncio.sleep(sizes.settle_s)
            window = await measure_window(queue, runs, sizes, profile)
            await asyncio.sleep(sizes.grace_s)
            log_bytes = _log_bytes(data_dir)
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    if window.profile:
        print(f"  cProfile of the window's loop thread, top {PROFILE_TOP} by tottime:\n"
              f"{window.profile}", file=sys.stderr)
    expected = expected_slots(defs, anchors, window.start.epoch_ms, window.end.epoch_ms)
    return build_trial(sizes, defs, runs, expected, window, {
        "create_s": create_ns / 1e9,
        "creates_per_s": len(defs) / (create_ns / 1e9),
        "create_cpu_s": create_cpu_ns / 1e9,
        **({"log_mb_at_end": log_bytes / 1e6} if data_dir is not None else {}),
    })


def _log_bytes(data_dir: Path | None) -> int:
    if data_dir is None:
        return 0
    return sum(p.stat().st_size for p in data_dir.iterdir() if p.is_file())


def expected_slots(defs: Sequence[ScheduleDef], anchors: Mapping[str, int], w0: int,
                   w1: int) -> dict[str, list[int]]:
    """Every slot of every schedule in [w0, w1), by schedule name (after the run: not timed)."""
    out: dict[str, list[int]] = {}
    compiled: dict[str, Any] = {}
    for d in defs:
        if d.cron is not None:
            spec = compiled.setdefault(d.cron, parse_cron(d.cron))
            step = partial(next_fire_ms, spec, "UTC")
        else:
            assert d.interval is not None
            step = partial(next_fire_ms, d.interval, "UTC", anchor_ms=anchors[d.name])
        slots, slot = [], step(w0 - 1)
        while slot < w1:
            slots.append(slot)
            slot = step(slot)
        out[d.name] = slots
    return out


# ---------------------------------------------------------------------- figures


def _ms(sorted_ns: Sequence[int], p: float) -> float:
    return percentile(sorted_ns, p) / 1e6 if sorted_ns else 0.0


def build_trial(sizes: Sizes, defs: Sequence[ScheduleDef], runs: Runs,
                expected: Mapping[str, list[int]], window: Window,
                extra: dict[str, float]) -> Trial:
    w0, w1 = window.start.epoch_ms, window.end.epoch_ms
    counts = Counter(zip(runs.schedule, runs.slot, strict=True))
    observed: dict[str, set[int]] = {}
    lateness: dict[str, list[tuple[int, int]]] = {kind: [] for kind in KINDS}  # (slot, ns)
    for index, slot, started_ns in zip(runs.schedule, runs.slot, runs.started_ns, strict=True):
        d = defs[index]
        if w0 <= slot < w1 and slot not in observed.setdefault(d.name, set()):
            observed[d.name].add(slot)
            lateness[d.kind].append((slot, started_ns - slot * 1_000_000))
    want = {(name, s) for name, slots in expected.items() for s in slots}
    got = {(name, s) for name, slots in observed.items() for s in slots}
    fires = len(got & want)
    samples = sorted(ns for per_kind in lateness.values() for _, ns in per_kind)
    figures = {
        "expected_per_s": len(want) / ((w1 - w0) / 1000),
        "nominal_per_s": sizes.nominal_per_s,
        "fires_vs_expected": fires / max(1, len(want)),
        "missed": float(len(want - got)),
        "doubled": float(sum(1 for n in counts.values() if n > 1)),
        "unexpected": float(len(got - want)),
        "loop_cpu_share": (window.end.thread_cpu_ns - window.start.thread_cpu_ns)
        / window.elapsed_ns,
        "cpu_ms_per_fire": window.cpu_ns / 1e6 / max(1, fires),
        "lateness_p50_ms": _ms(samples, 50),
        "lateness_p99_ms": _ms(samples, 99),
        "lateness_max_ms": samples[-1] / 1e6 if samples else 0.0,
        **_lateness_breakdown(lateness, w0, w1),
        **_next_fire_figures(window, fires),
        **_state_figures(window),
        **extra,
    }
    return Trial(fires, window.elapsed_ns, window.cpu_ns, samples, figures)


def _lateness_breakdown(lateness: Mapping[str, list[tuple[int, int]]], w0: int,
                        w1: int) -> dict[str, float]:
    out = {}
    for kind, pairs in lateness.items():
        ordered = sorted(ns for _, ns in pairs)
        out[f"{kind}_p50_ms"] = _ms(ordered, 50)
        out[f"{kind}_p99_ms"] = _ms(ordered, 99)
    third = (w1 - w0) / 3
    pairs = [pair for per_kind in lateness.values() for pair in per_kind]
    first = sorted(ns for slot, ns in pairs if slot < w0 + third)
    last = sorted(ns for slot, ns in pairs if slot >= w1 - third)
    out["p99_first_third_ms"] = _ms(first, 99)
    out["p99_last_third_ms"] = _ms(last, 99)
    return out


def _next_fire_figures(window: Window, fires: int) -> dict[str, float]:
    counter = window.next_fire
    return {
        "next_fire_calls": float(counter.calls),
        "next_fire_calls_per_fire": counter.calls / max(1, fires),
        "next_fire_mean_us": counter.ns / 1e3 / max(1, counter.calls),
        "next_fire_share_of_cpu": counter.ns / max(1, window.cpu_ns),
    }


def _state_figures(window: Window) -> dict[str, float]:
    start, end = window.start, window.end
    out = {
        "held_tasks_start": float(start.held_tasks),
        "held_tasks_end": float(end.held_tasks),
        "rss_mb_start": start.rss / 1e6,
        "rss_growth_mb": (end.rss - start.rss) / 1e6,
        "recorder_mb": (end.recorder_bytes - start.recorder_bytes) / 1e6,
        "py_blocks_start": float(start.blocks),
        "py_blocks_growth": float(end.blocks - start.blocks),
    }
    if start.log is not None and end.log is not None:
        records, syncs, batches = (b - a for a, b in zip(start.log, end.log, strict=True))
        out["log_records_per_s"] = records / (window.elapsed_ns / 1e9)
        out["records_per_fsync"] = records / max(1, syncs)
        out["fsyncs_per_s"] = syncs / (window.elapsed_ns / 1e9)
        out["records_per_batch"] = records / max(1, batches)
    return out


# ---------------------------------------------------------------------- cases


def build_cases(quick: bool, root: Path, window_s: float | None = None,
                profile: bool = False) -> list[Case]:
    sizes = QUICK if quick else FULL
    if window_s is not None:
        sizes = Sizes(sizes.schedules, sizes.per_second, window_s, sizes.settle_s, sizes.grace_s)
    half = sizes.per_second // 2
    base = {
        "schedules": sizes.schedules,
        "every_second": f"{sizes.per_second - half} cron '* * * * * ?' + {half} interval=1000",
        "slower": f"{sizes.slow - sizes.slow // 2} every minute + {sizes.slow // 2} every 5 "
                  "minutes (cron, seconds spread)",
        "concurrency": CONCURRENCY,
        "keep_result_ms": KEEP_RESULT_MS,
        "window_s": sizes.window_s,
        "settle_s": sizes.settle_s,
        "grace_s": sizes.grace_s,
        "function": "async no-op recording its start time",
    }
    if profile:
        base["profiled"] = True
    return [
        Case("cron_scale", {"store": "log", "fsync": "always", **base},
             partial(_run_trial, sizes, root, profile), "fires/s"),
        Case("cron_scale", {"store": "memory", **base},
             partial(_run_trial, sizes, None, profile), "fires/s"),
    ]


def _run_trial(sizes: Sizes, root: Path | None, profile: bool) -> Trial:
    return asyncio.run(scale_trial(sizes, root, profile))


# ---------------------------------------------------------------------- the table


def format_table(results: Sequence[tuple[Case, Mapping[str, Any]]]) -> str:
    header = ["case", "fires/s", "expected", "cpu", "loop cpu", "lateness p50/p99/max ms",
              "next_fire", "missed/doubled/unexp", "create"]
    rows = [header]
    for case, record in results:
        f = record["figures"]
        rows.append([
            case.label, f"{f['ops_per_s']:,.0f}", f"{f['expected_per_s']:,.0f}",
            f"{f['cpu_share']:.3f}", f"{f['loop_cpu_share']:.3f}",
            f"{f['lateness_p50_ms']:.1f} / {f['lateness_p99_ms']:.1f} / "
            f"{f['lateness_max_ms']:.1f}",
            f"{f['next_fire_calls_per_fire']:.2f}/fire {100 * f['next_fire_share_of_cpu']:.1f}%",
            f"{f['missed']:.0f}/{f['doubled']:.0f}/{f['unexpected']:.0f}",
            f"{f['create_s']:.2f} s"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("cpu = process CPU time / wall time over the window (writer threads included); "
                 "loop cpu = the event loop thread's alone; next_fire = next_fire_ms calls per "
                 "firing and their share of the process CPU")
    return "\n".join(lines)


def _detail_line(case: Case, record: Mapping[str, Any]) -> str:
    f = record["figures"]
    parts = [f"{kind} p50/p99 {f[kind + '_p50_ms']:.1f}/{f[kind + '_p99_ms']:.1f} ms"
             for kind in KINDS]
    parts.append(f"p99 first/last third {f['p99_first_third_ms']:.1f}/"
                 f"{f['p99_last_third_ms']:.1f} ms")
    parts.append(f"held tasks {f['held_tasks_start']:,.0f} -> {f['held_tasks_end']:,.0f}")
    parts.append(f"rss {f['rss_mb_start']:.0f} MB {f['rss_growth_mb']:+.1f} (recorder "
                 f"{f['recorder_mb']:.1f}), py blocks {f['py_blocks_start']:,.0f} "
                 f"{f['py_blocks_growth']:+,.0f}")
    parts.append(f"{f['cpu_ms_per_fire'] * 1000:.0f} us CPU/fire")
    if "records_per_fsync" in f:
        parts.append(f"log {f['log_records_per_s']:,.0f} rec/s, {f['fsyncs_per_s']:,.0f} "
                     f"fsync/s, {f['records_per_fsync']:.1f} rec/fsync")
    return f"{case.label}: " + "; ".join(parts)


# ---------------------------------------------------------------------- the runner


def _run_all(cases: Sequence[Case], args: argparse.Namespace) -> list[tuple[Case, dict[str, Any]]]:
    settings = Settings(quick=args.quick, warmup=0, repeats=args.repeats or 1)
    return run_cases(cases, args.out, lambda case: settings)


def main(argv: Sequence[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--tmp", type=Path, default=None)
    pre.add_argument("--seconds", type=float, default=None)
    pre.add_argument("--profile", action="store_true")
    known, rest = pre.parse_known_args(argv)
    names = [case.name for case in build_cases(True, Path(tempfile.gettempdir()))]
    args = parse_args(rest, names, (__doc__ or "").split("\n", 1)[0]
                      + " Also: --seconds S (the window), --tmp DIR (where the data directory "
                      "goes), --profile (cProfile of the window, printed to stderr).")
    if known.tmp is not None:
        known.tmp.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="cloudqueue-bench-cron-", dir=known.tmp))
    cases = [c for c in build_cases(args.quick, root, known.seconds, known.profile)
             if not args.cases or c.name in args.cases]
    try:
        results = _run_all(cases, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n" + format_table(results), file=sys.stderr)
    print("\n" + "\n".join(_detail_line(case, record) for case, record in results),
          file=sys.stderr)
    print(f"\n{len(results)} case(s); results appended to {args.out}", file=sys.stderr)
    broken = [case.label for case, record in results
              if record["figures"]["doubled"] or record["figures"]["unexpected"]]
    if broken:
        print(f"FAILED: doubled or unexpected firings in {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
