"""Benchmarks of the embedded engine: enqueue throughput and latency, end to end, pure core.

Run from the repository root::

    python -m benchmarks.bench_embedded            # full run (~65 s of CPU, 1-2 min on 2 cores)
    python -m benchmarks.bench_embedded --quick    # tiny sizes: checks only that it runs
    python -m benchmarks.bench_embedded --case end_to_end_noop --out /tmp/e2e.jsonl
    python -m benchmarks.bench_embedded --case enqueue_metrics --case metrics_scrape

``enqueue_metrics`` measures enqueue with the engine's metrics counting on and off, two engines
side by side in alternating chunks (``EngineConfig(metrics=...)``: what ``metrics = false``
turns off in the server);
``metrics_scrape`` times one ``GET /metrics`` collection with 100,000 tasks held, 50,000 of them
ready behind 50,000 cancelled ones (the backlog's age looks at the ready queues' heads only; a
scan of every task, for comparison, is its ``scan_ms``).

Every engine case takes a store and records its label in its JSON line: ``MemoryStore``
("memory": every event is durable the moment it is appended, no fsync) for every case, and the
durable log ("log": a fresh data directory, fsync always) for end to end. the targets
are defined with fsync before the acknowledgement, so a verdict against the memory store is a
ceiling, not a claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from benchmarks._harness import Case, Stopwatch, Target, Trial, main, now_ns
from cloudqueue.adapters.http_api.metrics import QueueCollector
from cloudqueue.engine.core.commands import Invoke
from cloudqueue.engine.core.engine import CoreConfig, EngineCore
from cloudqueue.engine.core.options import TaskOptions
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.runtime.functions import RunContext
from cloudqueue.engine.runtime.store import MemoryStore, Store

# A day: an enqueued task is stored and put on the timer wheel but never runs during a case.
FAR_DELAY_MS = 86_400_000
# Turns a hang in the engine into an error instead of a stuck benchmark.
WAIT_TIMEOUT_S = 120.0
WAIT_TIMEOUT_MS = 120_000
CORE_START_MS = 1_700_000_000_000


@dataclass(frozen=True, slots=True)
class StoreSpec:
    label: str
    factory: Callable[[], Store] | None  # None: the durable log in a fresh data directory
    # Why target verdicts do not carry over to this store (None for a store that fsyncs).
    caveat: str | None = None
    # Producers enqueueing at once in end to end: awaiting each fsynced enqueue in turn would
    # measure one producer's enqueue latency, not the engine end to end.
    producers: int = 1

    @contextlib.contextmanager
    def engine_options(self) -> Iterator[dict[str, Any]]:
        if self.factory is not None:
            yield {"store": self.factory()}
            return
        directory = tempfile.mkdtemp(prefix="cloudqueue-bench-embedded-")
        try:
            yield {"data_dir": directory, "fsync": "always"}
        finally:
            shutil.rmtree(directory, ignore_errors=True)


MEMORY = StoreSpec("memory", MemoryStore,
                   "store=memory never fsyncs; the targets assume fsync before the ack. "
                   "Memory figures are ceilings: 'not met' will not improve with a durable "
                   "store, 'met' proves nothing yet")
LOG = StoreSpec("log", None, producers=64)
STORES: tuple[StoreSpec, ...] = (MEMORY,)
END_TO_END_STORES: tuple[StoreSpec, ...] = (MEMORY, LOG)

ENQUEUE_ONE = Target("embedded enqueue, one producer awaiting each", 4_000)
ENQUEUE_64 = Target("embedded enqueue, 64 concurrent producers (group commit)", 40_000)
END_TO_END = Target("end to end, no-op in-process tasks, one process", 10_000)


async def noop(params: Any, ctx: RunContext) -> None:
    return None


def _run_async(make: Callable[..., Coroutine[Any, Any, Trial]], *args: Any) -> Trial:
    return asyncio.run(make(*args))


# ---------------------------------------------------------------------- enqueue


class _Interleaving:
    """Counts how often consecutive enqueue completions came from different producers: with a
    store whose ``wait_durable`` never suspends, producers do not interleave at all."""

    __slots__ = ("last", "switches")

    def __init__(self) -> None:
        self.last = -1
        self.switches = 0


async def _produce(queue: Engine, ident: int, count: int, latencies: list[int],
                   seen: _Interleaving) -> None:
    enqueue = queue.enqueue
    for i in range(count):
        t0 = now_ns()
        await enqueue("noop", {"i": i}, delay=FAR_DELAY_MS)
        latencies.append(now_ns() - t0)
        if seen.last != ident:
            seen.switches += 1
            seen.last = ident


async def enqueue_trial(store: StoreSpec, total: int, producers: int) -> Trial:
    """``producers`` asyncio tasks share ``total`` enqueues; nothing runs (far delay)."""
    shares = [total // producers + (1 if p < total % producers else 0) for p in range(producers)]
    latencies: list[list[int]] = [[] for _ in range(producers)]
    seen = _Interleaving()
    with store.engine_options() as options:
        return await _enqueue_trial(options, total, producers, shares, latencies, seen)


async def _enqueue_trial(options: dict[str, Any], total: int, producers: int, shares: list[int],
                         latencies: list[list[int]], seen: _Interleaving) -> Trial:
    async with Engine(concurrency=1, **options) as queue:
        watch = Stopwatch()
        await asyncio.gather(*(_produce(queue, p, shares[p], latencies[p], seen)
                               for p in range(producers)))
        elapsed_ns, cpu_ns = watch.read()
    samples = [x for per_producer in latencies for x in per_producer]
    return Trial(total, elapsed_ns, cpu_ns, samples, {"producer_switches": seen.switches - 1})


# ---------------------------------------------------------------------- end to end


async def end_to_end_trial(store: StoreSpec, total: int, concurrency: int) -> Trial:
    """Enqueue ``total`` no-op tasks, then ``wait`` until every one reports success."""
    with store.engine_options() as options:
        return await _end_to_end_trial(store, options, total, concurrency)


async def _enqueue_all(queue: Engine, total: int, producers: int) -> list[str]:
    """``total`` enqueues from ``producers`` coroutines at once; the ids in enqueue order."""
    if producers == 1:
        return [await queue.enqueue("noop", {"i": i}) for i in range(total)]
    uids: list[str] = [""] * total

    async def produce(first: int) -> None:
        for i in range(first, total, producers):
            uids[i] = await queue.enqueue("noop", {"i": i})

    await asyncio.gather(*(produce(p) for p in range(producers)))
    return uids


async def _end_to_end_trial(store: StoreSpec, options: dict[str, Any], total: int,
                            concurrency: int) -> Trial:
    async with Engine(concurrency=concurrency, **options) as queue:
        queue.define(noop)
        watch = Stopwatch()
        uids = await _enqueue_all(queue, total, store.producers)
        enqueued_ns, _ = watch.read()
        # Runs start in (priority, seq) order, so the last one is nearly the last to finish.
        await queue.wait(uids[-1], timeout=WAIT_TIMEOUT_MS)
        last_done = watch.read()
        yielded = await _confirm_all_succeeded(queue, uids)
        swept = watch.read()
    # If the sweep never yielded to the loop, nothing ran during it: every task was already a
    # success when the last one was, and the sweep's own cost is not the engine's.
    elapsed_ns, cpu_ns = swept if yielded else last_done
    return Trial(total, elapsed_ns, cpu_ns, (), {
        "enqueue_phase_s": enqueued_ns / 1e9,
        "drain_tasks_per_s": total / ((elapsed_ns - enqueued_ns) / 1e9),
        "confirm_sweep_s": (swept[0] - last_done[0]) / 1e9,
        "sweep_yielded": float(yielded),
    })


async def _confirm_all_succeeded(queue: Engine, uids: Sequence[str]) -> bool:
    """``wait`` on every task and check it succeeded. Returns whether the event loop ran during
    the sweep (a ``call_soon`` marker tells): only then can a task have finished meanwhile."""
    ran: list[bool] = []
    asyncio.get_running_loop().call_soon(ran.append, True)
    for uid in uids:
        info = await queue.wait(uid, timeout=WAIT_TIMEOUT_MS)
        if info.status != "success":
            raise RuntimeError(f"task {uid} ended {info.state.value}: {info.error}")
    return bool(ran)


# ---------------------------------------------------------------------- pure core


def core_trial(total: int, concurrency: int) -> Trial:
    """EngineCore alone: submit ``total`` tasks, then tick / run_succeeded until all are done,
    with an integer clock that moves 1 ms per round. Appended events are dropped."""
    core = EngineCore(CoreConfig(concurrency=concurrency), start_ms=CORE_START_MS)
    options = TaskOptions()
    ids = [f"task-{i:08d}" for i in range(total)]
    now_ms = CORE_START_MS
    watch = Stopwatch()
    for i, uid in enumerate(ids):
        core.submit(uid, "noop", {"i": i}, options, now_ms)
    submitted_ns, _ = watch.read()
    done = 0
    while done < total:
        now_ms += 1
        progressed = False
        for command in core.tick(now_ms):
            if isinstance(command, Invoke):
                core.run_succeeded(command.unique_id, command.run_seq, None, now_ms)
                done += 1
                progressed = True
        if not progressed:
            raise RuntimeError(f"core stalled with {done}/{total} done at {now_ms}")
    elapsed_ns, cpu_ns = watch.read()
    return Trial(total, elapsed_ns, cpu_ns, (), {
        "submit_per_s": total / (submitted_ns / 1e9),
        "drain_tasks_per_s": total / ((elapsed_ns - submitted_ns) / 1e9),
    })


# ---------------------------------------------------------------------- cases


def _enqueue_cases(store: StoreSpec, total: int) -> list[Case]:
    base = {"store": store.label, "n": total, "delay_ms": FAR_DELAY_MS, "task_params": "{i: int}"}
    cases = [Case("enqueue_one_producer", {**base, "producers": 1},
                  partial(_run_async, enqueue_trial, store, total, 1),
                  "enqueues/s", ENQUEUE_ONE, store.caveat)]
    for producers in (16, 64):
        cases.append(Case("enqueue_concurrent", {**base, "producers": producers},
                          partial(_run_async, enqueue_trial, store, total, producers),
                          "enqueues/s", ENQUEUE_64 if producers == 64 else None, store.caveat))
    return cases


async def metrics_trial(store: StoreSpec, total: int, producers: int, chunk: int) -> Trial:
    """``total`` enqueues into each of two engines alive side by side, one with the metrics'
    counting off and one with it on, in alternating chunks of ``chunk`` (off first, then on
    first, ...), so that both meet the same load from the rest of the machine. The headline is
    the engine with metrics on; ``off_per_s`` the other, ``cost_pct`` how much longer an
    enqueue took with them (wall time) and ``cpu_cost_pct`` how much more CPU it took."""
    with store.engine_options() as off_options, store.engine_options() as on_options:
        async with Engine(concurrency=1, metrics=False, **off_options) as off, \
                Engine(concurrency=1, metrics=True, **on_options) as on:
            spent = {False: [0, 0], True: [0, 0]}  # metrics -> [wall ns, cpu ns]
            done, seen = 0, _Interleaving()
            while done < total:
                n = min(chunk, total - done)
                order = ((False, off), (True, on)) if (done // chunk) % 2 == 0 else \
                    ((True, on), (False, off))
                for metrics, queue in order:
                    shares = [n // producers + (1 if p < n % producers else 0)
                              for p in range(producers)]
                    watch = Stopwatch()
                    await asyncio.gather(*(_produce(queue, p, shares[p], [], seen)
                                           for p in range(producers)))
                    wall_ns, cpu_ns = watch.read()
                    spent[metrics][0] += wall_ns
                    spent[metrics][1] += cpu_ns
                done += n
    (off_wall, off_cpu), (on_wall, on_cpu) = spent[False], spent[True]
    return Trial(total, on_wall, on_cpu, (), {
        "off_per_s": total / (off_wall / 1e9), "on_per_s": total / (on_wall / 1e9),
        "cost_pct": (on_wall / off_wall - 1) * 100, "cpu_cost_pct": (on_cpu / off_cpu - 1) * 100})


def _metrics_cases(total: int) -> list[Case]:
    """Enqueue with the metrics' counting on beside off (the memory store shows the counting's
    share most: it has no fsync)."""
    chunk = max(1, total // 20)
    return [Case("enqueue_metrics", {"store": store.label, "n": n, "producers": producers,
                                     "chunk": chunk, "metrics": "on vs off",
                                     "delay_ms": FAR_DELAY_MS},
                 partial(_run_async, metrics_trial, store, n, producers, chunk), "enqueues/s")
            for store, producers, n in ((MEMORY, 1, total), (MEMORY, 64, total),
                                        (LOG, 64, max(1, total * 2 // 5)))]


def scrape_trial(held: int, scrapes: int) -> Trial:
    """``held`` tasks in an engine on the memory store, one running (it never ends), half of
    the rest cancelled first (the ready queue's oldest entries gone), the others ready; then
    ``scrapes`` collections of ``GET /metrics``'s answer for it."""
    return asyncio.run(_scrape_trial(held, scrapes))


async def _scrape_trial(held: int, scrapes: int) -> Trial:
    async with Engine(concurrency=1) as queue:
        stop = asyncio.Event()

        @queue.define
        async def hold(params: Any, ctx: RunContext) -> None:
            await stop.wait()

        await queue.enqueue("hold")
        for first in range(0, held - 1, 10_000):
            await queue.enqueue_many({"function": "hold", "unique_id": f"t{i}"}
                                     for i in range(first, min(first + 10_000, held - 1)))
        for i in range(0, (held - 1) // 2):
            await queue.cancel(f"t{i}")
        registry = CollectorRegistry()
        registry.register(QueueCollector({"bench": queue}))
        watch = Stopwatch()
        for _ in range(scrapes):
            generate_latest(registry)
        elapsed_ns, cpu_ns = watch.read()
        started = time.perf_counter()
        Counter(task.state for task in queue.core.tasks())  # what a scan per scrape would cost
        scan_ms = (time.perf_counter() - started) * 1000
        stop.set()
    return Trial(scrapes, elapsed_ns, cpu_ns, (), {
        "scrape_ms": elapsed_ns / scrapes / 1e6, "scan_ms": scan_ms, "held": float(held),
        "ready": float(queue.core.ready_count)})


def _end_to_end_cases(store: StoreSpec, total: int) -> list[Case]:
    return [Case("end_to_end_noop",
                 {"store": store.label, "n": total, "concurrency": concurrency,
                  "function": "async noop -> None", "producers": store.producers},
                 partial(_run_async, end_to_end_trial, store, total, concurrency),
                 "tasks/s", END_TO_END, store.caveat)
            for concurrency in (1, 16, 256)]


def build_cases(quick: bool) -> list[Case]:
    n_enqueue, n_end_to_end, n_core = (1_000, 500, 500) if quick else (50_000, 20_000, 20_000)
    cases: list[Case] = []
    for store in STORES:
        cases += _enqueue_cases(store, n_enqueue)
    for store in END_TO_END_STORES:
        cases += _end_to_end_cases(store, n_end_to_end)
    cases += _metrics_cases(n_enqueue)
    held, scrapes = (2_000, 5) if quick else (100_000, 50)
    cases.append(Case("metrics_scrape", {"store": "memory", "held": held, "scrapes": scrapes},
                      partial(scrape_trial, held, scrapes), "scrapes/s"))
    for concurrency in (1, 256):
        cases.append(Case("core_submit_tick",
                          {"store": "none", "n": n_core, "concurrency": concurrency},
                          partial(core_trial, n_core, concurrency), "tasks/s"))
    return cases


def run(argv: Sequence[str] | None = None) -> int:
    return main(build_cases, argv, description=(__doc__ or "").split("\n", 1)[0])


if __name__ == "__main__":
    sys.exit(run())
