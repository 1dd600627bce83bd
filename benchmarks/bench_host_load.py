"""Host-adaptive concurrency against a function host whose latency grows with its load.

Run from the repository root::

    python -m benchmarks.bench_host_load            # fixed 1, 16, 64, adaptive up to 64 (~1 min)
    python -m benchmarks.bench_host_load --quick    # tiny sizes: checks only that it runs
    python -m benchmarks.bench_host_load --case host_adaptive

One run, four cases against the same host, each with fresh processes on 127.0.0.1 (free ports,
always stopped): ``cloudqueue serve`` (a fresh data directory, the durable log with fsync always,
the loop-lag pacing on as by default) with ``--concurrency 1``, ``16`` or ``64`` and
``--host-concurrency fixed`` (16 is the reference: the host's best, for whoever knows its
capacity beforehand), then ``--concurrency 64 --host-concurrency adaptive`` (64 the ceiling),
which knows nothing of the host; its function host
is ``benchmarks._load_host``: 20 ms a call with up to 16 in flight, 2 ms more per call beyond,
503 at once past 48 (its docstring has the model; its best is 800 calls/s at 16 in flight). This
process enqueues the tasks over HTTP (``benchmarks._burst_load``, at ``ENQUEUE_RATE``/s), each
with a ``delay`` long enough that every task is acknowledged before the first is due, so the
queue's event loop drains a standing backlog without enqueues beside it; then it waits for every
task to complete at the host, reading the queue's ``/__health/ready`` every 100 ms for the host
limit. Tasks are ``atLeastOnce`` with 100 retries 100 ms apart, so a task the host refused runs
again.

Figures (one trial per case, no warm-up; ``--repeats`` for more): ``ops_per_s`` is **tasks/s**,
the tasks that succeeded over the time from the first call's arrival at the host to the last
success's answer; the latency percentiles are the **host's latency** (arrival to answer, as the
host measured it) of its successful calls; ``host_errors`` counts the host's 503s (every one was
a task's run refused: caused by the queue keeping too many in flight); ``in_flight_p50`` and
``peak_in_flight`` what the host saw; ``limit_p50`` / ``limit_max`` the host limit over the
drain (the adaptive case; fixed: the concurrency); ``server_success`` / ``server_failed`` the
queue's own counts; ``enqueue_s`` how long the enqueues took and ``enqueue_overlap`` (1 if the
last acknowledgement came after the first task was due: the phases were not apart); the CPU each
process used (cores, from /proc). Beside ``--out`` goes ``host-load-<case>-<concurrency>.json``:
per 100 ms, successful calls, 503s, the median in flight and the host p99, the limit.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import _load_host as model
from benchmarks._burst_load import LoadPlan, LoadResult, request_bytes, run_load
from benchmarks._burst_procs import CpuMeter, started
from benchmarks._harness import (
    Case,
    Settings,
    Trial,
    environment,
    format_table,
    free_port,
    parse_args,
    percentile,
    run_cases,
)
from cloudqueue.adapters.auth import sign

APP_ID, APP_KEY, MASTER_KEY = "hostload", "hostload-app-key", "hostload-master-key"
KEYS = {"LEANCLOUD_APP_ID": APP_ID, "LEANCLOUD_APP_KEY": APP_KEY,
        "LEANCLOUD_APP_MASTER_KEY": MASTER_KEY}
BASE = "/1.1/engine/cloud-queue"
HEADERS = {"X-LC-Id": APP_ID, "X-LC-Sign": sign(MASTER_KEY, 1, master=True),
           "Content-Type": "application/json"}
ENQUEUE_RATE = 2_000  # enqueues/s offered (the server takes ~3,000/s on this machine)
ATTEMPTS, BACKOFF_MS = 100, 100
SAMPLE_S = 0.1
BUCKET_NS = 100_000_000


@dataclass(frozen=True, slots=True)
class Plan:
    concurrency: int
    adaptive: bool
    tasks: int
    delay_ms: int  # every task's delay: the enqueues finish before the first is due
    enqueue_rate: int = ENQUEUE_RATE
    drain_limit_s: float = 120.0

    @property
    def mode(self) -> str:
        return "adaptive" if self.adaptive else "fixed"


@dataclass(frozen=True, slots=True)
class Run:
    load: LoadResult
    samples: list[tuple[int, int, int]]  # (monotonic ns, host limit, run cap) while draining
    calls: list[tuple[int, int, float, int]]  # the host's (arrival ns, status, ms, in flight)
    counts: dict[str, int]
    ready: dict[str, Any]  # the last readiness answer


# ---------------------------------------------------------------------- one trial


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, headers=HEADERS) as response:
        return await response.json()


async def _drain(session: aiohttp.ClientSession, plan: Plan, queue_url: str, host_url: str,
                 tasks: int) -> list[tuple[int, int, int]]:
    """Until the host has answered ``tasks`` calls with success (at most ``drain_limit_s``):
    the queue's host limit and run cap every ``SAMPLE_S``."""
    samples = []
    deadline = time.monotonic() + plan.drain_limit_s
    while time.monotonic() < deadline:
        if (await _get_json(session, f"{host_url}/__bench/count"))["ok"] >= tasks:
            break
        ready = await _get_json(session, f"{queue_url}/__health/ready")
        shown = ready.get("hostConcurrency", {}).get(APP_ID)
        limit = shown["limit"] if shown else plan.concurrency
        samples.append((time.monotonic_ns(), limit, shown["runCap"] if shown else limit))
        await asyncio.sleep(SAMPLE_S)
    return samples


async def _server_counts(session: aiohttp.ClientSession, queue_url: str) -> dict[str, int]:
    counts = {}
    for state in ("success", "failed", "queued", "running", "retry_wait"):
        answer = await _get_json(session, f"{queue_url}{BASE}/tasks?state={state}&limit=1")
        counts[state] = int(answer["count"])
    return counts


async def _run(plan: Plan, queue_url: str, host_url: str, meter: CpuMeter) -> Run:
    port = int(queue_url.rsplit(":", 1)[1])
    requests = [request_bytes("127.0.0.1", port, f"{BASE}/tasks", HEADERS, json.dumps(
        {"function": model.FUNCTION, "params": {"i": i}, "delay": plan.delay_ms,
         "attempts": ATTEMPTS, "backoff": BACKOFF_MS}).encode()) for i in range(plan.tasks)]
    load_plan = LoadPlan(plan.enqueue_rate, plan.tasks, 256,
                         time_limit_s=plan.delay_ms / 1000 + 30)
    meter.start()
    load = await run_load("127.0.0.1", port, load_plan, requests.__getitem__)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        samples = await _drain(session, plan, queue_url, host_url, load.acked)
        meter.stop()
        calls = (await _get_json(session, f"{host_url}/__bench/calls"))["calls"]
        counts = await _server_counts(session, queue_url)
        ready = await _get_json(session, f"{queue_url}/__health/ready")
    return Run(load, samples, [tuple(call) for call in calls], counts, ready)


def host_trial(plan: Plan, out_dir: Path, quick: bool) -> Trial:
    root = Path(tempfile.mkdtemp(prefix="cq-bench-host-"))
    try:
        host_port, queue_port = free_port(), free_port()
        host_argv = ["-m", "benchmarks._load_host", str(host_port)]
        with started(host_argv, KEYS, host_port, "/__engine/1/ping", root / "host.log") as host:
            queue_argv = ["-m", "cloudqueue", "serve", "--port", str(queue_port),
                          "--data-dir", str(root / "data"), "--function-host", host.base_url,
                          "--concurrency", str(plan.concurrency),
                          "--host-concurrency", plan.mode]
            with started(queue_argv, KEYS, queue_port, "/__health/ready",
                         root / "server.log") as queue:
                meter = CpuMeter({"server": queue.process.pid, "host": host.process.pid})
                run = asyncio.run(_run(plan, queue.base_url, host.base_url, meter))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _trial(plan, run, meter.shares, out_dir, quick)


# ---------------------------------------------------------------------- figures


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else -1.0


def _figures(plan: Plan, run: Run, window: tuple[int, int],
             cpu: Mapping[str, float]) -> dict[str, float]:
    load, calls = run.load, run.calls
    ok = [call for call in calls if call[1] == 200]
    start, end = window
    draining = [s for s in run.samples if start <= s[0] <= end] or run.samples
    last_ack = max(load.acked_ns) if load.acked else load.t0_ns
    first_due = min((t for t in load.acked_ns if t), default=load.t0_ns) + plan.delay_ms * 1e6
    shown = run.ready.get("hostConcurrency", {}).get(APP_ID, {})
    return {
        "tasks": plan.tasks, "acked": load.acked, "enqueue_errors": load.errors + load.dropped,
        "enqueue_s": round((last_ack - load.t0_ns) / 1e9, 3),
        "enqueue_overlap": int(last_ack > first_due),
        "host_calls": len(calls), "host_ok": len(ok),
        "host_errors": sum(1 for call in calls if call[1] != 200),
        "host_503": sum(1 for call in calls if call[1] == 503),
        "in_flight_p50": _median([call[3] for call in ok]),
        "peak_in_flight": max((call[3] for call in calls), default=0),
        "limit_p50": _median([s[1] for s in draining]),
        "limit_max": max((s[1] for s in draining), default=-1),
        "run_cap_p50": _median([s[2] for s in draining]),
        "backoffs": shown.get("backoffs", 0), "queue_host_errors": shown.get("hostErrors", 0),
        "server_success": run.counts.get("success", 0),
        "server_failed": run.counts.get("failed", 0),
        "server_unfinished": sum(run.counts.get(s, 0) for s in ("queued", "running",
                                                                 "retry_wait")),
        **{f"cores_{name}": share for name, share in cpu.items()},
    }


def _series(run: Run, start: int) -> list[dict[str, Any]]:
    """Per 100 ms from the first call: successes, 503s, median in flight, host p99, limit."""
    buckets: dict[int, list[tuple[int, int, float, int]]] = {}
    for call in run.calls:
        buckets.setdefault((call[0] - start) // BUCKET_NS, []).append(call)
    limits = {(s[0] - start) // BUCKET_NS: s[1] for s in run.samples}
    rows = []
    for index in range(max(buckets, default=-1) + 1):
        calls = buckets.get(index, [])
        ok = sorted(call[2] for call in calls if call[1] == 200)
        rows.append({"t_s": round(index * BUCKET_NS / 1e9, 1), "ok": len(ok),
                     "errors": sum(1 for call in calls if call[1] != 200),
                     "in_flight_p50": _median([call[3] for call in calls]),
                     "host_p99_ms": round(percentile(ok, 99), 1) if ok else None,
                     "limit": limits.get(index)})
    return rows


def _trial(plan: Plan, run: Run, cpu: Mapping[str, float], out_dir: Path,
           quick: bool) -> Trial:
    ok = [call for call in run.calls if call[1] == 200]
    start = min((call[0] for call in run.calls), default=run.load.t0_ns)
    end = max((round(call[0] + call[2] * 1e6) for call in ok), default=start + 1)
    extra = _figures(plan, run, (start, end), cpu)
    stem = out_dir / f"host-load-{plan.mode}-{plan.concurrency}{'-quick' if quick else ''}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(
        {"plan": {"concurrency": plan.concurrency, "mode": plan.mode, "tasks": plan.tasks},
         "model": {"base_ms": model.BASE_MS, "capacity": model.CAPACITY,
                   "penalty": model.PENALTY, "hard_limit": model.HARD_LIMIT},
         "bucket_ms": BUCKET_NS // 1_000_000, "figures": extra, "environment": environment(),
         "series": _series(run, start)}) + "\n", encoding="utf-8")
    return Trial(len(ok), max(1, end - start), run.load.cpu_ns,
                 [round(call[2] * 1e6) for call in ok], extra)


# ---------------------------------------------------------------------- cases


def build_cases(quick: bool, out_dir: Path) -> list[Case]:
    # fixed 16 is the reference: the host's best, for whoever knows its capacity beforehand
    if quick:
        plans = [Plan(1, False, 20, 500, 1_000, 30.0), Plan(16, False, 300, 500, 1_000, 30.0),
                 Plan(64, False, 300, 500, 1_000, 30.0), Plan(64, True, 300, 500, 1_000, 30.0)]
    else:
        plans = [Plan(1, False, 300, 3_000), Plan(16, False, 3_000, 3_000),
                 Plan(64, False, 3_000, 3_000), Plan(64, True, 3_000, 3_000)]
    cases: list[Case] = []
    for plan in plans:
        params = {"concurrency": plan.concurrency, "host_concurrency": plan.mode,
                  "tasks": plan.tasks, "server": "cloudqueue serve", "store": "log, fsync always",
                  "function_host": (f"{model.BASE_MS:g} ms up to {model.CAPACITY} in flight, "
                                    f"+{model.BASE_MS * model.PENALTY:g} ms each beyond, 503 "
                                    f"past {model.HARD_LIMIT}"),
                  "latency": "the host's, arrival to answer, successful calls"}
        name = f"host_{plan.mode}"
        cases.append(Case(name, params, partial(host_trial, plan, out_dir, quick), "tasks/s"))
    return cases


def _label(record: dict[str, Any]) -> None:
    params = record["params"]
    record["variant"] = f"concurrency {params['concurrency']}, {params['host_concurrency']}"


def summary(results: Sequence[tuple[Case, Mapping[str, Any]]]) -> str:
    """One line per case: what the issue asks to compare."""
    lines = ["case                          tasks/s  host p50 / p99 ms  host errors  in flight "
             "p50 / peak  limit p50 / max  failed  cores: server host"]
    for _, record in results:
        f = record["figures"]
        lines.append(
            f"{record['variant']:<28}  {f['ops_per_s']:>7,.0f}  "
            f"{f['p50_us'] / 1000:>8.1f} / {f['p99_us'] / 1000:<6.1f}  {f['host_errors']:>11,.0f}"
            f"  {f['in_flight_p50']:>9.0f} / {f['peak_in_flight']:<4.0f}  "
            f"{f['limit_p50']:>9.0f} / {f['limit_max']:<3.0f}  {f['server_failed']:>6.0f}  "
            f"{f.get('cores_server', -1):.2f} {f.get('cores_host', -1):.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    names = [case.name for case in build_cases(True, Path("."))]
    args = parse_args(argv, names, (__doc__ or "").split("\n", 1)[0])
    settings = Settings(quick=args.quick, warmup=0, repeats=args.repeats or 1)
    cases = [c for c in build_cases(args.quick, args.out.parent)
             if not args.cases or c.name in args.cases]
    results = run_cases(cases, args.out, lambda case: settings, lambda c, r: _label(r))
    print("\n" + format_table(results), file=sys.stderr)
    print("\n" + summary(results), file=sys.stderr)
    print(f"\n{len(results)} case(s); results appended to {args.out}; per-100-ms series beside "
          f"it (host-load-<mode>-<concurrency>.json)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
