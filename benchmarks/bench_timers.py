"""Benchmark of timer precision at load: how late delayed tasks and retries start.

Run from the repository root::

    python -m benchmarks.bench_timers              # full run (~20 s)
    python -m benchmarks.bench_timers --quick      # tiny: checks only that it runs

One ``Engine`` on the durable log (``fsync=always``, a fresh temp data dir, concurrency 64)
runs, for ``seconds`` of real time, a background load of no-op tasks enqueued at ``load_per_s``
by one paced producer (each run to completion), and beside it the measured tasks:

* ``delay_lateness``: ``n`` tasks with delays spread evenly over 0.2-``seconds`` s. A task's
  lateness is the wall time its function started minus its due time (``createdAt + delay``
  from its task info, the engine's own reference).
* ``retry_lateness``: ``n`` tasks that fail their first run and have a ``backoff`` spread evenly
  over 0.2-2 s. Lateness is the start of the second run minus (the moment the first run raised
  + backoff), both in the engine's whole milliseconds; the engine's ``retryAt`` is the failure's
  time + backoff, so the figure also holds the microseconds between the raise and the engine
  noticing: it can only overstate.

Figures: lateness p50 / p99 / max in ms (the harness's latency fields, in us), how many started
early (must be 0: a timer never fires before its time), and the background load achieved.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks._harness import Case, Stopwatch, Trial, main
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.runtime.functions import RunContext

CONCURRENCY = 64


def _ms() -> float:
    return time.time_ns() / 1e6


async def _background(queue: Engine, per_s: int, seconds: float, stop: asyncio.Event,
                      sent: list[int]) -> None:
    """One producer enqueueing no-op tasks at ``per_s``, paced in 10 ms steps."""
    started = time.monotonic()
    while not stop.is_set():
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            return
        due = int(elapsed * per_s)
        batch = [queue.enqueue("noop", None) for _ in range(due - sent[0])]
        sent[0] = due
        if batch:
            await asyncio.gather(*batch)
        await asyncio.sleep(0.01)


async def timers_trial(kind: str, n: int, seconds: float, load_per_s: int) -> Trial:
    root = Path(tempfile.mkdtemp(prefix="cq-bench-timers-"))
    late_ms: list[float] = []
    failed_at: dict[str, int] = {}
    backoff_of: dict[str, int] = {}
    due_of: dict[str, float] = {}
    done = asyncio.Event()
    remaining = [n]
    try:
        async with Engine(data_dir=root / "queue", concurrency=CONCURRENCY,
                          fsync="always") as queue:

            @queue.define
            async def noop(params: Any, ctx: RunContext) -> None:
                return None

            @queue.define
            async def measured(params: Any, ctx: RunContext) -> None:
                now = _ms()
                if kind == "retry" and ctx.attempt == 1:
                    # the engine's clock is whole ms (floored): so is this, so that the figure
                    # can only overstate lateness, never make a timer look early
                    failed_at[ctx.unique_id] = time.time_ns() // 1_000_000
                    raise RuntimeError("fails once, to be retried")
                due = (failed_at[ctx.unique_id] + backoff_of[ctx.unique_id] if kind == "retry"
                       else due_of[ctx.unique_id])
                late_ms.append(now - due)
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

            stop, sent = asyncio.Event(), [0]
            watch = Stopwatch()
            load = asyncio.create_task(_background(queue, load_per_s, seconds, stop, sent))
            span = max(0.0, seconds - 0.2)
            for i in range(n):
                if kind == "delay":
                    delay = int(200 + span * 1000 * i / max(1, n - 1))
                    uid = await queue.enqueue("measured", None, delay=delay, attempts=0)
                    info = await queue.get_task_info(uid)
                    due_of[uid] = info.created_ms + delay
                else:
                    backoff = int(200 + 1800 * i / max(1, n - 1))
                    uid = await queue.enqueue("measured", None, attempts=1, backoff=backoff)
                    backoff_of[uid] = backoff
            await asyncio.wait_for(done.wait(), seconds + 60)
            stop.set()
            await load
            elapsed_ns, cpu_ns = watch.read()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    samples = [max(0, round(x * 1e6)) for x in late_ms]
    return Trial(n, elapsed_ns, cpu_ns, samples, {
        "early": float(sum(1 for x in late_ms if x < 0)),
        "background_per_s": sent[0] / (elapsed_ns / 1e9),
    })


def build_cases(quick: bool) -> list[Case]:
    n, seconds, load = (50, 1.5, 200) if quick else (2_000, 8.0, 1_000)
    cases = []
    for kind in ("delay", "retry"):
        params = {"n": n, "seconds": seconds, "load_per_s": load, "concurrency": CONCURRENCY,
                  "store": "log", "fsync": "always"}
        cases.append(Case(f"{kind}_lateness", params,
                          partial(_run, kind, n, seconds, load), unit="tasks/s"))
    return cases


def _run(kind: str, n: int, seconds: float, load: int) -> Trial:
    return asyncio.run(timers_trial(kind, n, seconds, load))


def run(argv: Sequence[str] | None = None) -> int:
    return main(build_cases, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(run())
