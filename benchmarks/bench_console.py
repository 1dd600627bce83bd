"""Benchmark of the operator's views: the dashboard's reads over HTTP, at 100,000 held tasks.

Run from the repository root::

    python -m benchmarks.bench_console               # 100,000 tasks, 200 requests a trial (~2 min)
    python -m benchmarks.bench_console --quick       # 2,000 tasks, 20 requests: checks it runs
    python -m benchmarks.bench_console --case list_empty_state --case bulk_dry_run --repeats 5
    python -m benchmarks.bench_console --tasks 1000000   # another size (this module's flag)

**The server** is built as the tests build it: ``create_app({app_id: QueueApp(keys, engine)},
operator_token=...)``, served by aiohttp on 127.0.0.1 on a free port, in this process. The
engine keeps its log in a fresh temp directory with ``fsync="always"`` (the server's default),
metrics on (the overview's charts), concurrency 64, and a ``FakeClock`` that the fill moves
forward, so that the tasks' creation times spread over 7 days without waiting 7 days (the clock
stands still while the cases run: nothing expires, no retry comes due).

**The fill** (once, before the first case; its time is reported as ``fill_s``, not measured):
``tasks`` tasks in bursts of 500 (40 with ``--quick``), one ``enqueue_many`` per burst, the
clock moved forward by 7 days / bursts after each burst once its runs have finished
(``cloudqueue.testing.settle``). Ten functions, picked with Zipf weights (the commonest about a
third of the tasks, the rarest 3.4 %), defined in this process as no-ops; params ``{user_id,
template, locale}``; ``keepResult`` 30 days. Of the tasks: 8 % fail (``attempts`` 0:
``failed``), 0.2 % fail with one retry left and a 30-day backoff (``retry_wait``), the rest
succeed; the last 6 % of the bursts are enqueued after ``pause()``, so they stay ``queued`` (the
backlog is the newest tasks). The overview's sampler takes a sample at each step of the clock,
so its chart holds its full 60 points. Then a full garbage collection and ``gc.freeze()``, as
``cloudqueue serve`` freezes its long-lived heap every second.

**A trial** is ``requests`` requests one after the other (fewer if ``TRIAL_S`` runs out), each
one latency sample, from an aiohttp ``ClientSession`` in the same process and event loop as the
server (one keep-alive connection, the operator token); the whole answer is read, and parsed and
checked only after the clock stops. So a latency is the server's work plus the client's, on one
core: ``http_floor`` (``GET /__health/live``) is what HTTP and the client cost alone. Each
record also has ``engine_us``: the call the handler makes, awaited directly (median of a few),
without HTTP or JSON.

Figures: ``ops_per_s`` is requests/s; latency p50 / p95 / p99 / max in us; extras
``tasks_held``, ``rss_mb`` (this process: server, engine and client), ``fill_s``, ``load_1m``,
``answer_bytes``, ``engine_us``; for the lists ``shown`` (tasks in the page), ``count`` when
the answer has one and ``passed_over`` (the tasks the page's walk visits, counted separately by
the same rule as ``EngineCore.page``); ``matched`` for the dry run; ``json_us`` for
``overview_body``. Each record's ``states`` holds the tasks by state.

Same conventions as ``bench_embedded`` (``benchmarks/_harness.py``): one JSON line per case on
stdout (also appended to ``--out``), progress and a table on stderr, ``--quick``, ``--case``,
``--repeats`` (default 3 after one untimed warm-up trial; 1 and none with ``--quick``). Local
differences: a ``variant`` field in each record (the request) and one server and fill shared by
every case.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks._harness import (
    BUSY_CPU_SHARE,
    Case,
    Settings,
    Stopwatch,
    Trial,
    free_port,
    now_ns,
    parse_args,
    run_cases,
)
from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.adapters.http_api.console import RECENT, overview_body
from cloudqueue.adapters.http_api.tenants import APPS
from cloudqueue.engine.core.actions import BulkAction, bulk_filter
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import Task, iso_ms
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.runtime.clock import FakeClock
from cloudqueue.engine.runtime.functions import RunContext
from cloudqueue.engine.runtime.recent import Recent
from cloudqueue.testing import settle

KEYS = AppKeys("bench", "bench-app-key-0123456789", "bench-master-key-0123456789")
TOKEN = "bench-operator-token-0123456789abcdef"
BASE = "/1.1/engine/cloud-queue"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, the fake clock's start
DAY_MS = 86_400_000
SPREAD_MS = 7 * DAY_MS  # the tasks' creation times span this
KEEP_RESULT_MS = 30 * DAY_MS  # longer than the spread: nothing expires during the run
RETRY_BACKOFF_MS = 30 * DAY_MS  # a retry_wait task waits beyond the run
CONCURRENCY = 64
FUNCTIONS = ("send_email", "resize_image", "sync_crm", "charge_card", "render_pdf",
             "index_document", "notify_push", "export_csv", "refresh_cache", "cleanup_tmp")
WEIGHTS = tuple(1 / (rank + 1) for rank in range(len(FUNCTIONS)))  # Zipf: 34 % .. 3.4 %
FAILED_SHARE = 0.08
RETRY_WAIT_SHARE = 0.002
QUEUED_SHARE = 0.06  # of the bursts, the last ones: enqueued while dispatch is paused
PAGE = 50  # the dashboard's page
WALK_PAGE = 1_000  # the page used to follow cursors to the middle (the largest allowed)
TRIAL_S = {False: 20.0, True: 5.0}  # a trial stops after this much wall time, whatever its count
# a bound on waiting for a burst's runs (and a compaction: a snapshot of 1,000,000 tasks can take
# a minute on a busy machine), not a pace
SETTLE_MS = 600_000
SEED = 20261205


@dataclass(frozen=True, slots=True)
class Size:
    tasks: int
    burst: int
    requests: int  # per trial
    direct: int  # direct engine calls behind ``engine_us``
    quick: bool = False

    @property
    def bursts(self) -> int:
        return -(-self.tasks // self.burst)


FULL = Size(tasks=100_000, burst=500, requests=200, direct=20)
QUICK = Size(tasks=2_000, burst=40, requests=20, direct=3, quick=True)


def size_for(quick: bool, tasks: int | None = None) -> Size:
    """The sizes of a run: ``FULL`` or ``QUICK``, with ``tasks`` held if given (``--tasks``)."""
    size = QUICK if quick else FULL
    return size if tasks is None else replace(size, tasks=tasks)


# ---------------------------------------------------------------------- the server and its fill


async def _work(params: Any, run: RunContext) -> None:
    """Every function: a no-op, or a failure when the params say so."""
    if params.get("fail"):
        raise RuntimeError("the upstream service refused the request")


def _bursts(size: Size) -> list[list[dict[str, Any]]]:
    """The enqueue_many items of each burst, in order (seeded: the same mix every run)."""
    rng = random.Random(SEED)
    out, made = [], 0
    for _ in range(size.bursts):
        items = []
        for _ in range(min(size.burst, size.tasks - made)):
            made += 1
            item: dict[str, Any] = {
                "function": rng.choices(FUNCTIONS, WEIGHTS)[0],
                "params": {"user_id": made, "template": "welcome", "locale": "en"},
                "keep_result": KEEP_RESULT_MS, "attempts": 0}
            roll = rng.random()
            if roll < FAILED_SHARE:
                item["params"]["fail"] = True
            elif roll < FAILED_SHARE + RETRY_WAIT_SHARE:
                item["params"]["fail"] = True
                item.update(attempts=1, backoff=RETRY_BACKOFF_MS)
            items.append(item)
        out.append(items)
    return out


def _rss_mb() -> float:
    """This process's resident set (Linux /proc); -1 where it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return -1.0


@dataclass
class Server:
    """One app, its fill, the server, the client; built once, shared by every case."""

    size: Size
    loop: asyncio.AbstractEventLoop | None = None
    root: Path | None = None
    clock: FakeClock = field(default_factory=lambda: FakeClock(T0))
    engine: Engine | None = None
    runner: web.AppRunner | None = None
    session: aiohttp.ClientSession | None = None
    url: str = ""
    fill_s: float = 0.0
    rss_fill_mb: float = 0.0
    burst_times: list[int] = field(default_factory=list)
    # what the cases ask for, found after the fill
    deep_cursor: str = ""
    deep_depth: int = 0
    detail_ids: list[str] = field(default_factory=list)

    # -------------------------------------------------------------- life

    def run(self, coro: Awaitable[Any]) -> Any:
        assert self.loop is not None
        return self.loop.run_until_complete(coro)

    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.root = Path(tempfile.mkdtemp(prefix="cloudqueue-bench-console-"))
        self.run(self._start(self.root / "data"))

    async def _start(self, data_dir: Path) -> None:
        engine = Engine(data_dir=data_dir, fsync="always", clock=self.clock,
                        concurrency=CONCURRENCY)
        for name in FUNCTIONS:
            engine.define(name)(_work)
        self.engine = engine
        app = create_app({KEYS.app_id: QueueApp(KEYS, engine)}, operator_token=TOKEN)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()  # starts the engine (and the overview's sampler)
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}{BASE}"
        started = time.perf_counter()
        await self._fill()
        self.fill_s = time.perf_counter() - started
        gc.collect()
        gc.freeze()  # as the server's HeapFreezer does with what has lived a second
        self.rss_fill_mb = _rss_mb()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            headers={"X-LC-Id": KEYS.app_id, "Authorization": f"Bearer {TOKEN}"})
        await self._find_targets()

    async def _fill(self) -> None:
        engine = self.app_engine
        bursts = _bursts(self.size)
        paused_from = len(bursts) - max(1, round(len(bursts) * QUEUED_SHARE))
        step_ms = SPREAD_MS // len(bursts)
        for index, items in enumerate(bursts):
            if index == paused_from:
                await engine.pause()
            self.burst_times.append(self.clock.now_ms())
            await engine.enqueue_many(items)
            await settle(engine, SETTLE_MS)
            self.clock.advance(step_ms)  # (the overview's sampler takes a sample each step)
            if (index + 1) % max(1, len(bursts) // 10) == 0 and self.size.tasks >= 200_000:
                print(f"  {sum(len(b) for b in bursts[:index + 1]):,} tasks", file=sys.stderr,
                      flush=True)
        await settle(engine, SETTLE_MS)

    async def _find_targets(self) -> None:
        """The deep page's cursor (followed from the first page, ``WALK_PAGE`` at a time, to
        about the middle) and the tasks whose detail is read."""
        assert self.session is not None
        cursor, depth = None, 0
        walk_page = min(WALK_PAGE, max(1, self.size.tasks // 4))
        for _ in range(self.size.tasks // walk_page + 1):  # (a bound: half of it is enough)
            if depth >= self.size.tasks // 2:
                break
            query = {"limit": str(walk_page), **({"cursor": cursor} if cursor else {})}
            async with self.session.get(f"{self.url}/tasks", params=query) as response:
                page = await response.json()
            depth += len(page["results"])
            cursor = page.get("next")
            if cursor is None:
                break
        if cursor is None or depth < self.size.tasks // 2:
            raise RuntimeError(f"the list ended after {depth} of {self.size.tasks} tasks")
        self.deep_cursor, self.deep_depth = cursor, depth
        tasks = list(self.table().values())
        self.detail_ids = [t.unique_id for t in
                           random.Random(SEED).sample(tasks, min(64, len(tasks)))]

    def close(self) -> None:
        if self.loop is None:
            return
        try:
            self.run(self._close())
        finally:
            self.loop.close()
            gc.unfreeze()
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)

    async def _close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()  # stops the engine

    # -------------------------------------------------------------- views

    @property
    def app_engine(self) -> Engine:
        assert self.engine is not None
        return self.engine

    def table(self) -> dict[str, Task]:
        """The engine's tasks, in seq order (read only: what a page walks)."""
        tasks: dict[str, Task] = self.app_engine.core._table.tasks
        return tasks

    def queue_app(self) -> QueueApp:
        assert self.runner is not None
        found: QueueApp = self.runner.app[APPS][KEYS.app_id]
        return found

    def states(self) -> dict[str, int]:
        return {s.value: n for s, n in self.app_engine.core.tasks_by_state().items()}

    def window(self) -> tuple[int, int]:
        """Two bursts' creation times in the middle of the spread: [from, to)."""
        middle = len(self.burst_times) // 2
        if middle + 2 >= len(self.burst_times):  # too few bursts: the whole spread
            return self.burst_times[0], self.clock.now_ms()
        return self.burst_times[middle], self.burst_times[middle + 2]


# ---------------------------------------------------------------------- the requests


Query = Callable[["Server"], Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class Request:
    """One case's request, and what the engine does for it (awaited directly)."""

    name: str
    variant: str
    method: str
    path: str  # after BASE, or from the server's root when it starts with "/__"
    query: Query
    body: Any
    direct: Callable[[Server], Awaitable[Any]]
    # a list's filter, to count the tasks a page walks past: (keep, cursor seq)
    walk: Callable[[Server], tuple[Callable[[Task], bool], int | None]] | None = None


def _keep(state: str | None = None, function: str | None = None,
          window: tuple[int, int] | None = None) -> Callable[[Task], bool]:
    low, high = window or (-2 ** 63, 2 ** 63)
    return lambda task: ((state is None or task.state.value == state)
                         and (function is None or task.function == function)
                         and low <= task.created_ms < high)


def passed_over(server: Server, keep: Callable[[Task], bool], limit: int,
                below: int | None) -> int:
    """How many tasks a page walks past (``EngineCore.page``'s loop: newest first, those at or
    above the cursor skipped one by one, until one more than ``limit`` matched or none is left)."""
    walked = found = 0
    for task in reversed(server.table().values()):
        walked += 1
        if below is not None and task.seq >= below:
            continue
        if keep(task):
            found += 1
            if found > limit:
                break
    return walked


def _list(state: str | None = None, function: str | None = None,
          window: Callable[[Server], tuple[int, int]] | None = None,
          cursor: Callable[[Server], str] | None = None) -> Callable[[Server], Awaitable[Any]]:
    async def direct(server: Server) -> Any:
        low, high = window(server) if window else (None, None)
        return await server.app_engine.list_tasks(
            state, PAGE, function=function, created_from=low, created_to=high,
            cursor=cursor(server) if cursor else None)

    return direct


def _recent(server: Server) -> Recent | None:
    assert server.runner is not None
    return server.runner.app[RECENT].get(KEYS.app_id)


async def _overview_direct(server: Server) -> Any:
    return overview_body(server.queue_app(), _recent(server))


async def _live_direct(server: Server) -> Any:
    return None


async def _detail_direct(server: Server) -> Any:
    return await server.app_engine.inspect(server.detail_ids[0])


async def _bulk_direct(server: Server) -> Any:
    chosen = bulk_filter(BulkAction.RETRY, None, None, None, None)
    return await server.app_engine.bulk(BulkAction.RETRY, chosen, dry_run=True)


def _fixed(**query: str) -> Query:
    return lambda server: query


def _deep_query(server: Server) -> Mapping[str, str]:
    return {"limit": str(PAGE), "cursor": server.deep_cursor}


def _window_query(server: Server) -> Mapping[str, str]:
    low, high = server.window()
    return {"createdFrom": iso_ms(low), "createdTo": iso_ms(high), "limit": str(PAGE)}


def _requests() -> list[Request]:
    rare = TaskState.RETRY_WAIT.value
    empty = TaskState.RUNNING.value  # none while dispatch is paused: the page walks everything
    rarest = FUNCTIONS[-1]
    page = str(PAGE)
    return [
        Request("http_floor", "GET /__health/live", "GET", "/__health/live", _fixed(), None,
                _live_direct),
        Request("overview", "GET /overview", "GET", "/overview", _fixed(), None,
                _overview_direct),
        Request("list_first_page", f"limit={PAGE}", "GET", "/tasks", _fixed(limit=page), None,
                _list(), walk=lambda s: (_keep(), None)),
        Request("list_rare_state", f"state={rare}", "GET", "/tasks",
                _fixed(state=rare, limit=page), None, _list(state=rare),
                walk=lambda s: (_keep(state=rare), None)),
        Request("list_empty_state", f"state={empty} (none held)", "GET", "/tasks",
                _fixed(state=empty, limit=page), None, _list(state=empty),
                walk=lambda s: (_keep(state=empty), None)),
        Request("list_function", f"function={rarest} (3.4 %)", "GET", "/tasks",
                _fixed(function=rarest, limit=page), None, _list(function=rarest),
                walk=lambda s: (_keep(function=rarest), None)),
        Request("list_deep_page", "cursor= at the middle", "GET", "/tasks", _deep_query, None,
                _list(cursor=lambda s: s.deep_cursor),
                walk=lambda s: (_keep(), int(s.deep_cursor))),
        Request("list_time_window", "createdFrom/To: 2 bursts mid-spread", "GET", "/tasks",
                _window_query, None, _list(window=Server.window),
                walk=lambda s: (_keep(window=s.window()), None)),
        Request("task_detail", "GET /tasks/{id}/detail", "GET", "/tasks/{id}/detail",
                _fixed(), None, _detail_direct),
        Request("bulk_dry_run", "POST /tasks/retry {dryRun}", "POST", "/tasks/retry",
                _fixed(), {"dryRun": True}, _bulk_direct),
    ]


# ---------------------------------------------------------------------- a trial


async def _http_trial(server: Server, request: Request, size: Size, limit_s: float
                      ) -> tuple[Trial, bytes]:
    session = server.session
    assert session is not None
    root = server.url.removesuffix(BASE)
    query = request.query(server)
    body = request.body
    ids = server.detail_ids
    latencies: list[int] = []
    answer = b""
    watch = Stopwatch()
    deadline = now_ns() + int(limit_s * 1e9)
    for i in range(size.requests):
        path = request.path.replace("{id}", ids[i % len(ids)])
        url = root + path if path.startswith("/__") else server.url + path
        t0 = now_ns()
        async with session.request(request.method, url, params=query, json=body) as response:
            answer = await response.read()
            status = response.status
        latencies.append(now_ns() - t0)
        if status != 200:
            raise RuntimeError(f"{request.name}: {status} {answer[:200]!r}")
        if now_ns() > deadline:
            break
    elapsed_ns, cpu_ns = watch.read()
    return Trial(len(latencies), elapsed_ns, cpu_ns, latencies), answer


async def _overview_trial(server: Server, size: Size, limit_s: float) -> tuple[Trial, bytes]:
    """``overview_body`` built in-process, as the event stream builds it every 2 s per reader
    (latency: the build; ``json_us``: the ``json.dumps`` the stream's message adds)."""
    queue_app, recent = server.queue_app(), _recent(server)
    calls = size.requests * 5
    latencies, dumps = [], []
    text = ""
    watch = Stopwatch()
    deadline = now_ns() + int(limit_s * 1e9)
    for _ in range(calls):
        t0 = now_ns()
        body = overview_body(queue_app, recent)
        t1 = now_ns()
        text = json.dumps(body, separators=(",", ":"))
        dumps.append(now_ns() - t1)
        latencies.append(t1 - t0)
        if now_ns() > deadline:
            break
    elapsed_ns, cpu_ns = watch.read()
    extra = {"json_us": statistics.median(dumps) / 1000}
    return Trial(len(latencies), elapsed_ns, cpu_ns, latencies, extra), text.encode()


async def _direct_us(server: Server, request: Request, size: Size) -> float:
    samples = []
    for _ in range(size.direct):
        t0 = now_ns()
        await request.direct(server)
        samples.append(now_ns() - t0)
    return statistics.median(samples) / 1000


def _answer_figures(request: Request, answer: bytes) -> dict[str, float]:
    if request.name in ("http_floor", "overview_body"):
        return {}
    data = json.loads(answer)
    out: dict[str, float] = {}
    if "results" in data:
        out["shown"] = len(data["results"])
    if "count" in data:
        out["count"] = data["count"]
    if "matched" in data:
        out["matched"] = data["matched"]
    if request.name == "overview":
        out["series_points"] = len(data["series"]["points"])
    return out


def run_trial(server: Server, request: Request, size: Size) -> Trial:
    if server.engine is None:
        server.start()
    limit_s = TRIAL_S[size.quick]
    if request.name == "overview_body":
        trial, answer = server.run(_overview_trial(server, size, limit_s))
    else:
        trial, answer = server.run(_http_trial(server, request, size, limit_s))
    extra = dict(trial.extra)
    extra.update(_answer_figures(request, answer))
    extra["answer_bytes"] = len(answer)
    if request.name != "overview_body":
        extra["engine_us"] = server.run(_direct_us(server, request, size))
    if request.walk is not None:
        keep, below = request.walk(server)
        extra["passed_over"] = passed_over(server, keep, PAGE, below)
    extra.update(tasks_held=len(server.table()), rss_mb=_rss_mb(), fill_s=server.fill_s,
                 load_1m=os.getloadavg()[0])
    if request.name == "list_deep_page":
        extra["cursor_depth"] = server.deep_depth
    return Trial(trial.ops, trial.elapsed_ns, trial.cpu_ns, trial.latencies_ns, extra)


# ---------------------------------------------------------------------- cases


@dataclass(frozen=True, slots=True)
class ConsoleCase(Case):
    variant: str = ""

    @property
    def label(self) -> str:
        return self.name


def _params(size: Size, request: Request) -> dict[str, Any]:
    params: dict[str, Any] = {
        "tasks": size.tasks, "store": "log", "fsync": "always", "clock": "fake",
        "spread_days": SPREAD_MS // DAY_MS, "functions": len(FUNCTIONS),
        "mix": f"failed {FAILED_SHARE:.0%}, retry_wait {RETRY_WAIT_SHARE:.1%}, queued (paused) "
               f"{QUEUED_SHARE:.0%} of the bursts, the rest success",
    }
    if request.name == "overview_body":
        params.update(calls=size.requests * 5, where="in-process")
    else:
        params.update(requests=size.requests, method=request.method, path=request.path,
                      client="aiohttp, same process, one keep-alive connection")
        params["query"] = request.variant
        if request.body is not None:
            params["body"] = request.body
    params["trial_s_max"] = TRIAL_S[size.quick]
    return params


def build_cases(quick: bool, server: Server | None = None) -> list[Case]:
    size = server.size if server is not None else size_for(quick)
    server = server or Server(size)
    requests = _requests()
    requests.append(Request("overview_body", "in-process, + json.dumps", "CALL",
                            "overview_body()", _fixed(), None, _overview_direct))
    unit = {"overview_body": "builds/s"}
    return [ConsoleCase(r.name, _params(size, r), partial(run_trial, server, r, size),
                        unit.get(r.name, "requests/s"), variant=r.variant)
            for r in requests]


# ---------------------------------------------------------------------- the table

_COLUMNS = (
    ("p50 ms", "p50_us", "{:,.2f}", 1000),
    ("p99 ms", "p99_us", "{:,.2f}", 1000),
    ("max ms", "max_us", "{:,.2f}", 1000),
    ("engine ms", "engine_us", "{:,.2f}", 1000),
    ("walked", "passed_over", "{:,.0f}", 1),
    ("bytes", "answer_bytes", "{:,.0f}", 1),
    ("cpu", "cpu_share", "{:.2f}", 1),
)


def format_console_table(results: Sequence[tuple[Case, Mapping[str, Any]]]) -> str:
    header = ["case", "request", *(name for name, _, _, _ in _COLUMNS)]
    rows = [header]
    for case, record in results:
        figures = record["figures"]
        cells = [fmt.format(figures[key] / scale) if key in figures else "-"
                 for _, key, fmt, scale in _COLUMNS]
        rows.append([case.name, record.get("variant", ""), *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i > 1 else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if results:
        figures = results[0][1]["figures"]
        lines.append(f"{figures['tasks_held']:,.0f} tasks held, RSS {figures['rss_mb']:,.0f} MB, "
                     f"fill {figures['fill_s']:.1f} s; engine ms: the engine's call alone "
                     "(no HTTP); walked: tasks the page passed over")
    if any(record["figures"]["cpu_share"] < BUSY_CPU_SHARE for _, record in results):
        lines.append(f"cpu under {BUSY_CPU_SHARE}: the process waited for a CPU (other load); "
                     "the latencies include that wait")
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _tasks_arg(argv: Sequence[str] | None) -> tuple[int | None, list[str]]:
    """``--tasks N`` (this module's own flag), and the rest for the harness's parser."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--tasks", type=_positive, default=None)
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    tasks: int | None = known.tasks
    return tasks, rest


def main(argv: Sequence[str] | None = None) -> int:
    tasks, rest = _tasks_arg(argv)
    names = [case.name for case in build_cases(True)]
    description = (__doc__ or "").split("\n", 1)[0] + (
        " Also --tasks N: hold N tasks instead of 100,000 (2,000 with --quick).")
    args = parse_args(rest, names, description)
    settings = Settings(quick=args.quick, warmup=0 if args.quick else 1,
                        repeats=args.repeats or (1 if args.quick else 3))
    server = Server(size_for(args.quick, tasks))
    cases = [c for c in build_cases(args.quick, server) if not args.cases or c.name in args.cases]

    def finish(case: Case, record: dict[str, Any]) -> None:
        record["variant"] = case.variant if isinstance(case, ConsoleCase) else ""
        record["states"] = server.states()

    # the fill's failures are on purpose: one log line each would bury the progress lines
    logging.getLogger("cloudqueue.runs").setLevel(logging.CRITICAL)
    try:
        if cases:
            print(f"filling {server.size.tasks:,} tasks ...", file=sys.stderr, flush=True)
            server.start()
            print(f"filled in {server.fill_s:.1f} s: {server.states()}", file=sys.stderr,
                  flush=True)
        results = run_cases(cases, args.out, lambda case: settings, finish)
    finally:
        server.close()
    print("\n" + format_console_table(results), file=sys.stderr)
    print(f"\n{len(results)} case(s); results appended to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
