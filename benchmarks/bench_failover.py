"""Failover with real processes: nodes killed, frozen and cut off from PostgreSQL under load.

Run from the repository root::

    python -m benchmarks.bench_failover                 # full run (~25 min): 50 kills, 10
                                                        # SIGSTOPs, 10 PostgreSQL kills, cron 10 min
    python -m benchmarks.bench_failover --quick         # 3 kills, 2 SIGSTOPs, 2 PostgreSQL kills,
                                                        # cron 60 s (under 3 min)
    python -m benchmarks.bench_failover --case failover_cron
    python -m benchmarks.bench_failover --rate 500 --kill-rounds 10 --seed 7
    python -m benchmarks.bench_failover --case failover --keep-result-s 21600  # keep every task
    python -m benchmarks.bench_failover --case failover --standbys --kill-rounds 10 \
        --stop-rounds 3 --pg-rounds 0     # failures far apart: each app's standby ready first

Two cases, each on a fresh throwaway PostgreSQL cluster (``LocalPostgres``, fsync on, listening
on 127.0.0.1) and its own processes, all on 127.0.0.1 and free ports:

``failover``: 3 nodes (``cloudqueue serve --config node-<i>.toml``: ``store`` the cluster's
database, ``lease_ms`` 4000, 6 apps of concurrency 16, each calling its function host), one
function host process (``benchmarks/_failover_host.py``: ``cloudqueue host`` once per app in one
process) serving ``record`` (``benchmarks/_failover_functions.py``: one ``uniqueId attempt
monotonic_ns`` line per invocation, appended with ``O_APPEND``), and a load process
(``benchmarks/_failover_load.py``) enqueueing ~1,000 tasks/s over HTTP, spread over the 3 nodes,
half atLeastOnce and half atMostOnce, with uniqueIds it chooses, noting every acknowledged one.
Once the apps have settled on the nodes rendezvous hashing prefers and the load has run a few
seconds, three phases, under the same load:

1. **kill**: ``kill -9`` of a random node that dispatches at least one app; at once, a probe task
   (priority 0, so it runs before the backlog) per app of that node is enqueued through the other
   nodes (retried on 503/502/errors with the same uniqueId until it is stored). Failover of an app
   = from the kill to the host's record of its probe's invocation; of a round = its slowest app.
   Then the node is started again (same port, new node id) and the round ends once every app is
   dispatched by its preferred node again (rejoined; apps move back by handover).
2. **SIGSTOP**: the same with SIGSTOP of the node's process group instead of a kill, held until
   the lease has run out (``lease_ms`` + 3 s from the stop) and the probes have run elsewhere, then
   SIGCONT: the node wakes fenced, starts nothing, and takes its apps back by handover.
3. **PostgreSQL kill**: ``kill -9`` of the postmaster, then (once its backends have exited) a
   start on the same data directory (crash recovery). The nodes are not touched: a probe per app
   (all apps) measures when each runs tasks again.

The load tasks keep the queue's default ``keepResult``, 300 s (``--keep-result-s``; 40 s with
``--quick``): the apps hold what they would at this rate, about 300,000 tasks, and a finished
task leaves the queue during the run. So every acknowledged task is accounted for by one of
(``account``): it is held at the end; or the host invoked it (the record file: it ran); or,
never invoked, a listing of its app's failed tasks (``GET /tasks?state=failed``, every app every
30 s during the run: a failed task stays listed for its 300 s) showed it failed (an
atMostOnce task whose run was in flight on a dead node fails "run lost", uninvoked).
Then the load stops, the queue drains (every app: no task queued, running or waiting to retry),
and the tasks still held are checked: the app's task list (``GET /tasks``, pages of 1,000)
gives their states, and ``GET /tasks/{uniqueId}`` (master) asks again for any acknowledged
task not accounted for, and for a random sample of those held, on random nodes. Verdict: **no
acknowledged task lost** (absent, or not final), **no atMostOnce task invoked twice** (the record
file), failover p99 <= 10 s over the kill rounds. Reported besides: the 503 / 502 answers (and
broken connections, timeouts) the load saw during each round, database connections per node
(sampled every 2 s under load, from ``/proc``: the node's established TCP connections to
PostgreSQL's port; and ``pg_stat_activity`` by application_name), the achieved rate, ack
latencies.

``failover_cron``: 3 nodes, one app with a schedule firing ``record`` every second (``cron``
``* * * * * *``, atLeastOnce); every 30 s (20 with ``--quick``) ``kill -9`` of the node dispatching
the app, started again at once, for 10 minutes (60 s). Then each slot's task
``cron:tick:<slotMs>`` is looked up: fired (exists), invoked (record file), late (a catch-up:
the slots that fell while the app had no node are fired by its new owner, each once;
docs/protocol.md §1.10). A slot not fired, or fired twice, is a failure.

Output: one JSON line per case (stdout and ``--out``, the harness's record: ``ops_per_s`` the
acknowledged enqueues per second, the latency percentiles the kill rounds' failover times, or the
cron kills'), and ``failover[-quick].json`` beside ``--out`` with every round, sample and check.
The processes' logs stay in the run's directory when a check fails, or with
``CLOUDQUEUE_BENCH_KEEP=1``.
The exit status is 1 when a check fails (a task lost, an atMostOnce task invoked twice, a node or
app that did not recover, a cron slot missed), so that a run cannot pass quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from benchmarks._burst_procs import machine_busy_s
from benchmarks._failover_checks import (
    EXPIRED,
    FINAL,
    NodeView,
    Outage,
    RecordTail,
    account,
    answers_between,
    audit,
    epoch_ms,
    owners,
    read_invocations,
    settled,
    slot_audit,
    spread,
)
from benchmarks._failover_functions import RECORD_ENV
from benchmarks._failover_procs import (
    Node,
    Postgres,
    Processes,
    app_keys,
    node_toml,
    stop_gracefully,
    tcp_inbound,
)
from benchmarks._harness import (
    Case,
    Settings,
    Trial,
    environment,
    format_table,
    free_port,
    parse_args,
    run_cases,
)

now_ns = time.monotonic_ns
BASE = "/1.1/engine/cloud-queue"
FAILOVER_P99_TARGET_S = 10.0
KEEP_ALL_MS = 6 * 3600 * 1000  # probes and cron firings stay readable until the end of the run
SWEEP_EVERY_S = 30.0  # each app's failed tasks are listed this often (at most keepResult / 5)
READY_LIMIT_S = 60.0  # a node answers ready within, after its start
STANDBY_LIMIT_S = 120.0  # --standbys: each app has a ready standby somewhere within
SETTLE_LIMIT_S = 60.0  # the apps are back on their preferred nodes within
PROBE_LIMIT_S = 90.0  # a probe has run within, after the chaos
DRAIN_LIMIT_S = 300.0
CRON_NAME = "tick"


@dataclass(frozen=True, slots=True)
class Plan:
    rate: int
    kill_rounds: int
    stop_rounds: int
    pg_rounds: int
    apps: int = 6
    nodes: int = 3
    lease_ms: int = 4_000
    concurrency: int = 16
    beyond_lease_s: float = 3.0  # a SIGSTOP lasts lease_ms + this, at least
    warmup_s: float = 3.0
    steady_s: float = 1.0  # of calm load between rounds
    sample_every_s: float = 2.0
    get_sample: int = 2_000  # acknowledged tasks asked again one by one
    seed: int = 1
    standbys: bool = False  # before each kill or SIGSTOP round, wait for every app's standby
    # the load tasks' keepResult: the queue's default, so the apps hold what they would at
    # 1,000/s (~300,000 tasks), not every task of the run (KEEP_ALL_MS: ~1,000,000 by its end)
    keep_result_ms: int = 300_000


@dataclass(frozen=True, slots=True)
class CronPlan:
    seconds: float
    kill_every_s: float
    nodes: int = 3
    lease_ms: int = 4_000
    seed: int = 1


# ---------------------------------------------------------------------- the running cluster


class Cluster:
    """The processes of one trial and what the benchmark keeps asking them."""

    def __init__(self, root: Path, app_ids: Sequence[str], nodes: int, lease_ms: int,
                 concurrency: int) -> None:
        self.root = root
        self.app_ids = list(app_ids)
        self.processes = Processes()
        self.pg = Postgres()
        self.record = root / "invocations.txt"
        self.tail = RecordTail(self.record)
        self.node_count = nodes
        self.lease_ms = lease_ms
        self.concurrency = concurrency
        self.nodes: list[Node] = []
        self.host_ports: dict[str, int] = {}
        self.session: aiohttp.ClientSession
        self.rng = random.Random(1)
        self.unsettled: list[dict[str, Any] | None] = []  # views, then inbound connections

    # ------------------------------------------------------------------ start and stop

    async def start(self) -> None:
        await asyncio.to_thread(self.pg.start)
        conn = await asyncpg.connect(self.pg.url_of("postgres"))
        try:
            await conn.execute("CREATE DATABASE bench")
        finally:
            await conn.close()
        self.store = self.pg.url_of("bench")
        ports = [free_port() for _ in range(self.node_count)]
        await self._start_host(f"http://127.0.0.1:{ports[0]}")
        hosts = {a: f"http://127.0.0.1:{self.host_ports[a]}" for a in self.app_ids}
        for index, port in enumerate(ports):
            toml = node_toml(port, self.store, self.lease_ms, self.root / f"data-{index}", hosts,
                             self.concurrency)
            self.nodes.append(Node(index, self.root, self.processes, toml, port))
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            await self.wait_ready(node)
        if await self.wait_settled() is None:
            raise RuntimeError(f"the apps did not settle on the nodes within {SETTLE_LIMIT_S} s")

    async def _start_host(self, queue_url: str) -> None:
        config = self.root / "host.json"
        ports_file = self.root / "host-ports.json"
        config.write_text(json.dumps({"apps": [list(app_keys(a)) for a in self.app_ids],
                                      "queue_url": queue_url, "ports_file": str(ports_file)}))
        self.host = self.processes.start(["-m", "benchmarks._failover_host", str(config)],
                                         self.root / "host.log", {RECORD_ENV: str(self.record)})
        deadline = time.monotonic() + READY_LIMIT_S
        while not ports_file.exists():
            if time.monotonic() > deadline or self.host.poll() is not None:
                raise RuntimeError("the function host did not start:\n"
                                   + (self.root / "host.log").read_text(errors="replace")[-2000:])
            await asyncio.sleep(0.05)
        self.host_ports = json.loads(ports_file.read_text())

    async def close(self) -> None:
        if hasattr(self, "session"):
            await self.session.close()
        self.processes.kill_all()
        await asyncio.to_thread(self.pg.close, self.root / "postgres.log")

    # ------------------------------------------------------------------ asking the nodes

    def headers(self, app_id: str) -> dict[str, str]:
        return {"X-LC-Id": app_id, "X-LC-Key": f"{app_keys(app_id)[2]},master"}

    def up(self, avoid: Sequence[int] = ()) -> list[Node]:
        return [n for n in self.nodes if n.running and not n.frozen and n.index not in avoid]

    async def view_of(self, node: Node) -> NodeView | None:
        try:
            async with self.session.get(f"{node.url}/__health/ready",
                                        timeout=aiohttp.ClientTimeout(total=2)) as answer:
                body = await answer.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        if "node" not in body:
            return None
        return NodeView(node.index, answer.status, body["node"], body.get("dispatching", {}),
                        frozenset(body.get("standbyOf", ())))

    async def views(self) -> list[NodeView | None]:
        return list(await asyncio.gather(*(self.view_of(n) for n in self.up())))

    async def wait_ready(self, node: Node, limit_s: float = READY_LIMIT_S) -> float:
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            if not node.running:
                raise RuntimeError(f"node {node.index} exited:\n{node.log_tail()}")
            view = await self.view_of(node)
            if view is not None and view.status == 200:
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise RuntimeError(f"node {node.index} not ready within {limit_s} s:\n{node.log_tail()}")

    async def wait_settled(self, limit_s: float = SETTLE_LIMIT_S) -> float | None:
        """Seconds until every app is dispatched by its preferred node (None: not in time; then
        ``unsettled`` holds what the nodes said last)."""
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            views = await self.views()
            if settled(views, self.app_ids, self.node_count):
                return time.monotonic() - started
            await asyncio.sleep(0.1)
        self.unsettled = [asdict(v) if v is not None else None for v in views]
        self.unsettled.append({"inbound": [tcp_inbound(n.port) for n in self.nodes]})
        return None

    async def wait_standbys(self, limit_s: float = STANDBY_LIMIT_S) -> float | None:
        """Seconds until every app has a ready standby on some node up (None: not in time)."""
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            views = await self.views()
            kept = set().union(*(v.standby_of for v in views if v is not None))
            if kept >= set(self.app_ids):
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        return None

    async def owners(self) -> dict[str, int]:
        return owners(await self.views(), self.app_ids)

    async def enqueue(self, app_id: str, body: dict[str, Any], avoid: Sequence[int],
                      deadline_ns: int, try_s: float = 2.0) -> dict[str, Any]:
        """POST the task through the nodes that are up (not ``avoid``), again after a 503, 502,
        an error or no answer within ``try_s`` (a request forwarded to a frozen owner hangs),
        with the same uniqueId, until it is stored (200, or 409: an earlier try stored it) or
        ``deadline_ns``; what each try got."""
        tries: list[str] = []
        while now_ns() < deadline_ns:
            nodes = self.up(avoid)
            if not nodes:
                await asyncio.sleep(0.05)
                continue
            node = self.rng.choice(nodes)
            try:
                async with self.session.post(f"{node.url}{BASE}/tasks", json=body,
                                             headers=self.headers(app_id),
                                             timeout=aiohttp.ClientTimeout(total=try_s)) as answer:
                    status = answer.status
                    await answer.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                tries.append(type(exc).__name__)
                await asyncio.sleep(0.1)
                continue
            tries.append(str(status))
            if status in (200, 409):
                return {"stored_ns": now_ns(), "tries": tries}
            await asyncio.sleep(0.1)
        return {"stored_ns": None, "tries": tries}

    async def probe(self, app_id: str, uid: str, avoid: Sequence[int], since_ns: int
                    ) -> dict[str, Any]:
        """A priority-0 task for ``app_id``; seconds from ``since_ns`` to its invocation."""
        deadline = since_ns + round(PROBE_LIMIT_S * 1e9)
        self.tail.poll()
        body = {"function": "record", "params": {}, "uniqueId": uid, "priority": 0,
                "keepResult": KEEP_ALL_MS}
        stored = await self.enqueue(app_id, body, avoid, deadline)
        ran = await self.tail.first_run(uid, deadline)
        return {"app": app_id, "uid": uid, "tries": stored["tries"],
                "stored_s": _since(since_ns, stored["stored_ns"]),
                "failover_s": _since(since_ns, ran)}

    async def get_json(self, node: Node, app_id: str, path: str) -> tuple[int, Any]:
        async with self.session.get(f"{node.url}{BASE}{path}", headers=self.headers(app_id),
                                    timeout=aiohttp.ClientTimeout(total=60)) as answer:
            return answer.status, await answer.json()

    async def unfinished(self, app_id: str) -> int:
        total = 0
        for state in ("queued", "running", "retry_wait"):
            status, body = await self.get_json(self.up()[0], app_id,
                                               f"/tasks?state={state}&limit=1")
            if status != 200:
                return -1
            total += int(body["count"])
        return total

    async def wait_drained(self, limit_s: float) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            try:
                counts = [await self.unfinished(a) for a in self.app_ids]
            except (aiohttp.ClientError, TimeoutError, ValueError):
                counts = [-1]
            if all(c == 0 for c in counts):
                return time.monotonic() - started
            await asyncio.sleep(0.5)
        return None

    async def all_tasks(self, app_id: str, query: str = "") -> dict[str, dict[str, Any]]:
        """Every task of the app the queue holds (``query``: those it picks, e.g.
        ``&state=failed``), from its task list (pages of 1,000)."""
        found: dict[str, dict[str, Any]] = {}
        cursor = ""
        for _ in range(10_000):  # pages; bounded
            node = self.up()[0]
            status, body = await self.get_json(node, app_id,
                                               f"/tasks?limit=1000{query}{cursor}")
            if status != 200:
                raise RuntimeError(f"GET /tasks of {app_id}: {status} {body}")
            for info in body["results"]:
                found[info["uniqueId"]] = info
            if "next" not in body:
                return found
            cursor = f"&cursor={body['next']}"
        raise RuntimeError(f"the task list of {app_id} did not end")

    async def state_of(self, app_id: str, uid: str) -> str:
        """The task's state by ``GET /tasks/{uid}`` on a random node (``"404"``: unknown)."""
        node = self.rng.choice(self.up())
        status, body = await self.get_json(node, app_id, f"/tasks/{uid}")
        if status == 404:
            return "404"
        if status != 200:
            raise RuntimeError(f"GET /tasks/{uid} on node {node.index}: {status} {body}")
        return str(body["state"])


def _or_limit(seconds: float | None) -> float:
    """A failover time; one that never came counts as the probe's limit (a lower bound)."""
    return PROBE_LIMIT_S if seconds is None else seconds


def _since(start_ns: int, end_ns: int | None) -> float | None:
    return None if end_ns is None else round((end_ns - start_ns) / 1e9, 3)


# ---------------------------------------------------------------------- sampling connections


class ConnectionSampler:
    """Every ``every_s``: each node's connections to PostgreSQL (from /proc), and
    ``pg_stat_activity`` by application_name and client address."""

    SQL = """SELECT application_name, coalesce(client_addr::text, 'local') AS addr, count(*)
               FROM pg_stat_activity WHERE backend_type = 'client backend'
                AND pid <> pg_backend_pid() GROUP BY 1, 2"""

    def __init__(self, cluster: Cluster, every_s: float) -> None:
        self.cluster = cluster
        self.every_s = every_s
        self.samples: list[dict[str, Any]] = []

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.every_s)

    async def sample(self) -> None:
        cluster = self.cluster
        per_node = [n.db_connections(cluster.pg.port) for n in cluster.nodes]
        activity: dict[str, int] = {}
        try:  # a connection of its own each time: none is left idle to break at a kill
            conn = await asyncpg.connect(cluster.store, timeout=2, server_settings={
                "application_name": "bench-sampler"})
            try:
                for row in await conn.fetch(self.SQL, timeout=2):
                    activity[f"{row['application_name']}@{row['addr']}"] = int(row["count"])
            finally:
                conn.terminate()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return  # the database is down: no sample
        self.samples.append({"t_ns": now_ns(), "per_node": per_node, "activity": activity,
                             "inbound": [tcp_inbound(n.port) for n in cluster.nodes]})

    def figures(self) -> dict[str, Any]:
        per_node_max = [max((s["per_node"][i] or 0) for s in self.samples) if self.samples
                        else None for i in range(self.cluster.node_count)]
        queue_totals = [sum(n for k, n in s["activity"].items() if k.startswith("cloudqueue@"))
                        for s in self.samples]
        node_counts = [c for s in self.samples for c in s["per_node"] if c is not None]
        return {"samples": len(self.samples), "per_node_max": per_node_max,
                "per_node_max_all": max(node_counts, default=None),
                "per_node_mean": round(sum(node_counts) / len(node_counts), 2)
                if node_counts else None,
                "pg_stat_activity_cloudqueue_max": max(queue_totals, default=None),
                "pg_stat_activity_cloudqueue_mean_per_node": round(
                    sum(queue_totals) / len(queue_totals) / self.cluster.node_count, 2)
                if queue_totals else None,
                "last": self.samples[-1] if self.samples else None}


# ---------------------------------------------------------------------- the failover case


class FailoverRun:
    def __init__(self, plan: Plan, root: Path) -> None:
        self.plan = plan
        self.app_ids = [f"fo{i}" for i in range(plan.apps)]
        self.cluster = Cluster(root, self.app_ids, plan.nodes, plan.lease_ms, plan.concurrency)
        self.root = root
        self.rng = random.Random(plan.seed)
        self.rounds: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.sweep_every_s = min(SWEEP_EVERY_S, plan.keep_result_ms / 5_000)
        self.seen_failed: dict[str, str] = {}  # load tasks the failed lists showed: ``account``
        self.sweeps = 0

    def say(self, text: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    async def run(self) -> dict[str, Any]:
        cluster, plan = self.cluster, self.plan
        try:
            await cluster.start()
            self.say(f"{plan.nodes} nodes up, apps settled: {await cluster.owners()}")
            load = self._start_load()
            sampler = ConnectionSampler(cluster, plan.sample_every_s)
            sampling = asyncio.ensure_future(sampler.run())
            sweeping = asyncio.ensure_future(self._sweep_forever())
            try:
                await self._until_load_runs(load)
                await asyncio.sleep(plan.warmup_s)  # calm load before the first round
                started = now_ns()
                phases = (("kill", plan.kill_rounds, self._kill_round),
                          ("sigstop", plan.stop_rounds, self._stop_round),
                          ("pg_kill", plan.pg_rounds, self._pg_round))
                for kind, count, body in phases:
                    for r in range(count if not self.problems else 0):
                        await self._round(kind, r, body)
                        if self.problems:  # a round did not recover: no more chaos, audit
                            self.say(f"no more rounds after: {self.problems[0][:300]}")
                            break
                chaos_s = (now_ns() - started) / 1e9
            finally:
                sampling.cancel()
                await asyncio.gather(sampling, return_exceptions=True)
                code = await asyncio.to_thread(stop_gracefully, load, 60)
                sweeping.cancel()
                await asyncio.gather(sweeping, return_exceptions=True)
            if code != 0:
                self.problems.append(f"the load process exited with {code}")
            summary = json.loads((self.root / "load-summary.json").read_text())
            acked = (self.root / "acked.txt").read_text().split()
            self.say(f"load stopped: {len(acked):,} acknowledged; draining")
            drained_s = await cluster.wait_drained(DRAIN_LIMIT_S)
            if drained_s is None:
                self.problems.append(f"the queue did not drain within {DRAIN_LIMIT_S} s")
            await self._sweep()  # (the failed tasks are held still: the task lists show them)
            checks = await self._check(acked)
            return self._document(summary, sampler, checks, chaos_s, drained_s)
        finally:
            await cluster.close()

    def _start_load(self) -> Any:
        cluster = self.cluster
        config = {"ports": [n.port for n in cluster.nodes],
                  "apps": [[a, app_keys(a)[2]] for a in self.app_ids], "rate": self.plan.rate,
                  "keep_result_ms": self.plan.keep_result_ms,
                  "acked_path": str(self.root / "acked.txt"),
                  "status_path": str(self.root / "load-status.json"),
                  "summary_path": str(self.root / "load-summary.json"),
                  "per_node_in_flight": 1_500, "timeout_s": 30}
        path = self.root / "load.json"
        path.write_text(json.dumps(config))
        return cluster.processes.start(["-m", "benchmarks._failover_load", str(path)],
                                       self.root / "load.log")

    async def _until_load_runs(self, load: Any) -> None:
        deadline = time.monotonic() + 30
        while not (self.root / "load-status.json").exists():
            if load.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the load did not start:\n"
                                   + (self.root / "load.log").read_text(errors="replace"))
            await asyncio.sleep(0.05)

    def _load_status(self) -> dict[str, Any]:
        try:
            found: dict[str, Any] = json.loads((self.root / "load-status.json").read_text())
            return found
        except (OSError, ValueError):
            return {}

    async def _round(self, kind: str, index: int, body: Any) -> None:
        standby_wait_s = None
        if self.plan.standbys and kind != "pg_kill":  # failures far apart: nodes calm
            standby_wait_s = await self.cluster.wait_standbys()
        started = now_ns()
        acked_before = self._load_status().get("acked", 0)  # ~ the tasks the apps hold
        try:
            result = await body(index)
        except RuntimeError as exc:  # a node that did not come back: a finding, not a crash
            result = {"error": str(exc)}
            self.problems.append(f"{kind} round {index}: {exc}")
        result.update({"kind": kind, "round": index, "start_ns": started, "end_ns": now_ns(),
                       "acked_before": acked_before})
        if self.plan.standbys and kind != "pg_kill":
            result["standbys_ready_s"] = standby_wait_s
        self.rounds.append(result)
        status = self._load_status()
        slowest = result.get("failover_s")
        self.say(f"{kind} {index + 1}: failover {slowest} s; "
                 f"{', '.join(f'{k} {v}' for k, v in result.items() if k.endswith('_s') and k != 'failover_s')}; "  # noqa: E501
                 f"load acked {status.get('acked', 0):,} ({status.get('counts', {})})")
        if result.get("settled_s") is None and "error" not in result:
            result["unsettled"] = self.cluster.unsettled
            self.problems.append(f"{kind} round {index}: the apps did not settle again: "
                                 f"{self.cluster.unsettled}")
        await asyncio.sleep(self.plan.steady_s)

    async def _victim(self) -> tuple[Node, list[str]]:
        found = await self.cluster.owners()
        busy = sorted({i for i in found.values()})
        if not busy:
            raise RuntimeError(f"no node dispatches any app: {found}")
        index = self.rng.choice(busy)
        return self.cluster.nodes[index], sorted(a for a, i in found.items() if i == index)

    async def _probes(self, apps: Sequence[str], tag: str, avoid: Sequence[int],
                      since_ns: int) -> tuple[list[dict[str, Any]], float | None]:
        probes = await asyncio.gather(*(self.cluster.probe(a, f"p{tag}-{a}", avoid, since_ns)
                                        for a in apps))
        times = [p["failover_s"] for p in probes]
        if any(t is None for t in times):
            self.problems.append(f"{tag}: an app did not run its probe within {PROBE_LIMIT_S} s: "
                                 f"{[p for p in probes if p['failover_s'] is None]}")
            return list(probes), None
        return list(probes), max(times)

    def _resumed(self, apps: Sequence[str], since_ns: int) -> dict[str, Any]:
        """When each app's own load tasks were invoked again: the first invocation recorded a
        second or more after ``since_ns`` (a killed or frozen node invokes nothing after it;
        what it sent before reaches the host within milliseconds, and no takeover is that
        quick). Seconds from ``since_ns``, per app and the slowest."""
        per_app = {}
        for app in apps:
            at = self.cluster.tail.app_invoked_after(self.app_ids.index(app),
                                                     since_ns + 1_000_000_000)
            per_app[app] = _since(since_ns, at)
        known = [t for t in per_app.values() if t is not None]
        return {"resumed_s": max(known) if len(known) == len(per_app) else None,
                "resumed_per_app_s": per_app}

    async def _kill_round(self, r: int) -> dict[str, Any]:
        cluster = self.cluster
        victim, apps = await self._victim()
        killed = now_ns()
        victim.kill()
        probes, slowest = await self._probes(apps, f"k{r}", [victim.index], killed)
        restarted = now_ns()
        victim.start()
        ready_s = await cluster.wait_ready(victim)
        settled_s = await cluster.wait_settled()
        resumed = self._resumed(apps, killed)  # now: the first runs after the probe's are in
        return {"node": victim.index, "apps": apps, "probes": probes, "failover_s": slowest,
                **resumed, "down_s": _since(killed, restarted), "ready_s": round(ready_s, 3),
                "settled_s": settled_s, "window": [killed, now_ns()]}

    async def _stop_round(self, r: int) -> dict[str, Any]:
        cluster = self.cluster
        victim, apps = await self._victim()
        stopped = now_ns()
        victim.freeze()
        try:
            probes, slowest = await self._probes(apps, f"s{r}", [victim.index], stopped)
            hold_ns = stopped + round((self.plan.lease_ms / 1000 + self.plan.beyond_lease_s) * 1e9)
            while now_ns() < hold_ns:  # a duration to hold the node frozen, not a wait for state
                await asyncio.sleep(0.05)
        finally:
            thawed = now_ns()
            victim.thaw()
        settled_s = await cluster.wait_settled()
        resumed = self._resumed(apps, stopped)
        return {"node": victim.index, "apps": apps, "probes": probes, "failover_s": slowest,
                **resumed, "frozen_s": _since(stopped, thawed), "settled_s": settled_s,
                "window": [stopped, now_ns()]}

    async def _pg_round(self, r: int) -> dict[str, Any]:
        cluster = self.cluster
        victim = cluster.pg.kill()  # dead before any probe is sent
        killed = now_ns()

        def reaped_and_started() -> tuple[dict[str, Any], int, int]:
            info = cluster.pg.wait_gone(victim)
            dead = now_ns()
            cluster.pg.start()
            return info, dead, now_ns()

        restart = asyncio.ensure_future(asyncio.to_thread(reaped_and_started))
        probes, slowest = await self._probes(self.app_ids, f"g{r}", [], killed)
        info, dead, up = await restart
        settled_s = await cluster.wait_settled()
        alive = [n.index for n in cluster.nodes if n.running]
        if len(alive) != len(cluster.nodes):
            self.problems.append(f"pg round {r}: node(s) exited: "
                                 f"{[n.index for n in cluster.nodes if not n.running]}")
        return {"postgres": info, "failover_s": slowest, "probes": probes,
                "backends_gone_s": _since(killed, dead), "pg_down_s": _since(killed, up),
                "settled_s": settled_s, "window": [killed, now_ns()]}

    # ------------------------------------------------------------------ the checks

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every_s)
            await self._sweep()

    async def _sweep(self) -> None:
        """List each app's failed tasks (``account``); an app that does not answer now (a
        failover under way) is listed again at the next sweep."""
        for app in self.app_ids:
            try:
                found = await self.cluster.all_tasks(app, "&state=failed")
            except (RuntimeError, aiohttp.ClientError, TimeoutError):
                continue
            self.seen_failed.update({uid: info["state"] for uid, info in found.items()
                                     if uid[:1] in ("L", "M")})
        self.sweeps += 1

    async def _check(self, acked: Sequence[str]) -> dict[str, Any]:
        cluster = self.cluster
        states: dict[str, str] = {}
        held = 0
        for app in self.app_ids:
            tasks = await cluster.all_tasks(app)
            held += len(tasks)
            states.update({uid: info["state"] for uid, info in tasks.items()})
        listed = set(states)  # held at the end
        invocations = read_invocations(cluster.record)
        states, gone = account(acked, states, invocations, self.seen_failed)
        doubtful = [u for u in acked if states.get(u) not in FINAL and states.get(u) != EXPIRED]
        asked: dict[str, str] = {}
        for uid in doubtful[:10_000]:
            asked[uid] = await cluster.state_of(self._app_of(uid), uid)
        states.update(asked)
        held_acked = [u for u in acked if u in listed]
        sample = self.rng.sample(held_acked, min(self.plan.get_sample, len(held_acked)))
        disagree = []
        expired_since = 0
        for uid in sample:
            state = await cluster.state_of(self._app_of(uid), uid)
            if state == "404" and states.get(uid) in FINAL \
                    and self.plan.keep_result_ms < KEEP_ALL_MS:
                expired_since += 1  # its keepResult ran out since the list was read
            elif state != states.get(uid, "404"):
                disagree.append((uid, state, states.get(uid)))
        result = audit(acked, states, invocations)
        return {"tasks": result.figures(), "held_at_end": held, "expired_after_running": gone,
                "keep_result_ms": self.plan.keep_result_ms, "failed_lists": {"sweeps": self.sweeps,
                                 "failed_seen": len(self.seen_failed)},
                "asked_one_by_one": len(asked) + len(sample),
                "list_and_get_disagree": disagree[:10], "disagreements": len(disagree),
                "expired_since_listed": expired_since}

    def _app_of(self, uid: str) -> str:
        return self.app_ids[int(uid[1:].split("-", 1)[0])]

    # ------------------------------------------------------------------ the document

    def _document(self, summary: dict[str, Any], sampler: ConnectionSampler,
                  checks: dict[str, Any], chaos_s: float, drained_s: float | None
                  ) -> dict[str, Any]:
        buckets = [(b, c) for b, c in summary["buckets"]]
        phases: dict[str, Any] = {}
        for kind in ("kill", "sigstop", "pg_kill"):
            rounds = [r for r in self.rounds if r["kind"] == kind]
            # a round (an app) that did not run its probe within PROBE_LIMIT_S counts as that
            # long: a lower bound, so that it is in the percentiles rather than left out
            per_app = [_or_limit(p["failover_s"]) for r in rounds for p in r.get("probes", [])]
            slowest = [_or_limit(r.get("failover_s")) for r in rounds]
            unrecovered = sum(1 for r in rounds if r.get("failover_s") is None)
            answers = answers_between(buckets, summary["t0_ns"], summary["bucket_ns"],
                                      [tuple(r["window"]) for r in rounds if "window" in r])
            resumed = [_or_limit(r.get("resumed_s")) for r in rounds if "resumed_s" in r]
            phases[kind] = {"rounds": len(rounds), "failover_s": spread(slowest),
                            "resumed_s": spread(resumed),
                            "failover_per_app_s": spread(per_app),
                            "recovered": len(rounds) - unrecovered, "unrecovered": unrecovered,
                            "answers_in_rounds": dict(answers),
                            "settled_s": spread([r["settled_s"] for r in rounds
                                                 if r.get("settled_s") is not None]),
                            # (tasks acknowledged before the round, failover, own tasks again)
                            "by_tasks_held": [[r.get("acked_before"), r.get("failover_s"),
                                               r.get("resumed_s")] for r in rounds]}
        counts = summary["counts"]
        duration_s = (summary["end_ns"] - summary["t0_ns"]) / 1e9
        tasks = checks["tasks"]
        broken = {k: n for k, n in tasks["states"].items()
                  if k.startswith("atLeastOnce:")
                  and k not in ("atLeastOnce:success", f"atLeastOnce:{EXPIRED}")}
        if broken:  # `record` never fails: an atLeastOnce task must end in success
            self.problems.append(f"acknowledged atLeastOnce tasks not successful: {broken}")
        kill_p99 = phases["kill"]["failover_s"]["p99"]
        verdict = {
            "lost": tasks["lost"], "at_most_once_twice": tasks["at_most_once_twice"],
            "failover_p99_s": kill_p99, "failover_p99_target_s": FAILOVER_P99_TARGET_S,
            "failover_within_target": (kill_p99 is not None and kill_p99 <= FAILOVER_P99_TARGET_S
                                       and phases["kill"]["unrecovered"] == 0),
            "db_connections_per_node_max": sampler.figures()["per_node_max_all"],
            "db_connections_target": 8,
            "problems": self.problems,
            "passed": (tasks["lost"] == 0 and tasks["at_most_once_twice"] == 0
                       and tasks["success_never_invoked"] == 0 and not self.problems),
        }
        return {"plan": asdict(self.plan), "verdict": verdict, "phases": phases,
                "load": {"duration_s": round(duration_s, 2), "scheduled": summary["scheduled"],
                         "acked": counts.get("200", 0),
                         "acked_per_s": round(counts.get("200", 0) / duration_s, 1),
                         "counts": counts, "ack_ms": summary["ack_ms"],
                         "cpu_s": summary["cpu_s"], "reasons": summary.get("reasons", {}),
                         "samples": summary.get("samples", {})},
                "chaos_s": round(chaos_s, 1), "drained_s": drained_s, "checks": checks,
                "connections": sampler.figures(), "rounds": self.rounds}


# ---------------------------------------------------------------------- the cron case


class CronRun:
    APP = "cron"

    def __init__(self, plan: CronPlan, root: Path) -> None:
        self.plan = plan
        self.root = root
        self.cluster = Cluster(root, [self.APP], plan.nodes, plan.lease_ms, 4)
        self.cluster.tail.watch_prefixes = ("cron:",)
        self.rng = random.Random(plan.seed)
        self.problems: list[str] = []
        self.kills: list[dict[str, Any]] = []

    def say(self, text: str) -> None:
        print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    async def run(self) -> dict[str, Any]:
        cluster = self.cluster
        try:
            await cluster.start()
            body = {"function": "record", "params": {}, "cron": "* * * * * *",
                    "keepResult": KEEP_ALL_MS}
            status, schedule = await self._put(body)
            if status != 200:
                raise RuntimeError(f"PUT /schedules/{CRON_NAME}: {status} {schedule}")
            first_slot = epoch_ms(schedule["nextFireTimes"][0])
            started = time.monotonic()
            next_kill = started + self.plan.kill_every_s
            end = started + self.plan.seconds
            while time.monotonic() < end:
                if time.monotonic() >= next_kill:
                    await self._kill()
                    next_kill += self.plan.kill_every_s
                await asyncio.sleep(0.05)
            status, paused = await self._post(f"/schedules/{CRON_NAME}/pause")
            paused_ms = round(time.time() * 1000)
            if status != 200:
                raise RuntimeError(f"pause: {status} {paused}")
            await self._resumed_times()
            drained_s = await cluster.wait_drained(60)
            tasks = await cluster.all_tasks(self.APP)
            invocations = read_invocations(cluster.record)
            last_slot = (paused_ms - 1_500) // 1000 * 1000  # clear of the pause itself
            outages = [Outage(k["killed_ms"], k["resumed_ms"]) for k in self.kills]
            slots = slot_audit(CRON_NAME, first_slot, last_slot, paused_ms, 1_000, tasks,
                               invocations, outages)
            return self._document(slots, drained_s)
        finally:
            await cluster.close()

    async def _put(self, body: dict[str, Any]) -> tuple[int, Any]:
        node = self.cluster.up()[0]
        async with self.cluster.session.put(f"{node.url}{BASE}/schedules/{CRON_NAME}",
                                            json=body,
                                            headers=self.cluster.headers(self.APP)) as answer:
            return answer.status, await answer.json()

    async def _post(self, path: str) -> tuple[int, Any]:
        deadline = now_ns() + 60 * 10**9
        while True:
            node = self.rng.choice(self.cluster.up())
            try:
                async with self.cluster.session.post(
                        f"{node.url}{BASE}{path}",
                        headers=self.cluster.headers(self.APP)) as answer:
                    if answer.status == 200 or now_ns() > deadline:
                        return answer.status, await answer.json()
            except (aiohttp.ClientError, TimeoutError):
                if now_ns() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def _kill(self) -> None:
        cluster = self.cluster
        found = await cluster.owners()
        if self.APP not in found:
            self.problems.append(f"no node dispatched the app at kill {len(self.kills)}")
            return
        victim = cluster.nodes[found[self.APP]]
        killed = now_ns()
        killed_ms = round(time.time() * 1000)
        victim.kill()
        victim.start()
        try:
            ready_s = await cluster.wait_ready(victim)
        except RuntimeError as exc:
            self.problems.append(str(exc))
            ready_s = None
        self.kills.append({"node": victim.index, "killed_ns": killed, "killed_ms": killed_ms,
                           "ready_s": ready_s, "resumed_ms": None, "failover_s": None})
        self.say(f"cron kill {len(self.kills)}: node {victim.index}, ready again in {ready_s} s")

    async def _resumed_times(self) -> None:
        """For each kill, when the next firing was invoked (the record file, monotonic ns)."""
        tail = self.cluster.tail
        for kill in self.kills:
            at = tail.first_after("cron:", kill["killed_ns"])
            if at is None:
                self.problems.append(f"no firing after the kill at {kill['killed_ms']}")
                continue
            kill["failover_s"] = round((at - kill["killed_ns"]) / 1e9, 3)
            kill["resumed_ms"] = kill["killed_ms"] + round((at - kill["killed_ns"]) / 1e6)

    def _document(self, slots: dict[str, Any], drained_s: float | None) -> dict[str, Any]:
        failovers = [k["failover_s"] for k in self.kills if k["failover_s"] is not None]
        passed = (slots["missed"] == 0 and slots["outside_range"] == 0
                  and slots["invoked_twice"] == slots["invoked_twice_after_lost_run"]
                  and not self.problems)
        return {"plan": asdict(self.plan), "slots": slots, "kills": self.kills,
                "failover_s": spread(failovers), "drained_s": drained_s,
                "verdict": {"passed": passed, "problems": self.problems,
                            "missed": slots["missed"],
                            "invoked_twice": slots["invoked_twice"]}}


# ---------------------------------------------------------------------- cases, trials, output


def _trial(kind: str, plan: Plan | CronPlan, out_dir: Path, quick: bool,
           documents: dict[str, Any]) -> Trial:
    root = Path(tempfile.mkdtemp(prefix=f"cq-bench-{kind}-"))
    keep = True  # the logs of a run that failed or broke off stay for a look
    cpu0 = time.process_time_ns()
    load_before = os.getloadavg()
    busy0, wall0 = machine_busy_s(), time.monotonic()
    try:
        if isinstance(plan, Plan):
            document = asyncio.run(FailoverRun(plan, root).run())
        else:
            document = asyncio.run(CronRun(plan, root).run())
        document["environment"] = environment()
        document["load_average"] = {"before": load_before, "after": os.getloadavg()}
        busy1 = machine_busy_s()
        if busy0 is not None and busy1 is not None:  # every process's, ours included
            document["machine_cores_busy"] = round((busy1 - busy0) / (time.monotonic() - wall0),
                                                   2)
        document["work_dir"] = str(root)
        documents[kind] = document
        document["bench_cpu_s"] = (time.process_time_ns() - cpu0) / 1e9
        keep = not document["verdict"]["passed"] or bool(os.environ.get("CLOUDQUEUE_BENCH_KEEP"))
    finally:
        if keep:
            print(f"  logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    _write_document(out_dir, quick, documents)
    return _as_trial(kind, document)


def _as_trial(kind: str, document: dict[str, Any]) -> Trial:
    if kind == "failover":
        load, phases, checks = document["load"], document["phases"], document["checks"]
        failovers = [_or_limit(r.get("failover_s")) for r in document["rounds"]
                     if r["kind"] == "kill"]
        extra: dict[str, float] = {
            "acked": load["acked"], "lost": checks["tasks"]["lost"],
            "at_most_once_twice": checks["tasks"]["at_most_once_twice"],
            "at_least_once_reruns": checks["tasks"]["at_least_once_reruns"],
            "success_never_invoked": checks["tasks"]["success_never_invoked"],
            "held_at_end": checks["held_at_end"],
            "ack_p99_ms": load["ack_ms"]["p99"] or -1,
            "passed": int(document["verdict"]["passed"]),
            "db_conn_per_node_max": document["connections"]["per_node_max_all"] or -1,
        }
        for name, phase in phases.items():
            extra[f"{name}_rounds"] = phase["rounds"]
            for q in ("p50", "p99", "max"):
                value = phase["failover_s"][q]
                extra[f"{name}_failover_{q}_s"] = -1 if value is None else value
            for status in ("503", "502", "broken", "timeout"):
                extra[f"{name}_answers_{status}"] = phase["answers_in_rounds"].get(status, 0)
        return Trial(max(1, load["acked"]), round(load["duration_s"] * 1e9),
                     round(load["cpu_s"] * 1e9), [round(s * 1e9) for s in failovers], extra)
    slots = document["slots"]
    failovers = [k["failover_s"] for k in document["kills"] if k["failover_s"] is not None]
    extra = {key: slots[key] for key in ("expected", "fired", "fired_once", "invoked_twice",
                                         "invoked_twice_after_lost_run", "missed",
                                         "missed_in_outages", "catch_ups")}
    extra["kills"] = len(document["kills"])
    extra["passed"] = int(document["verdict"]["passed"])
    seconds = document["plan"]["seconds"]
    return Trial(max(1, slots["fired"]), round(seconds * 1e9),
                 max(1, round(document["bench_cpu_s"] * 1e9)),
                 [round(s * 1e9) for s in failovers], extra)


def _write_document(out_dir: Path, quick: bool, documents: dict[str, Any]) -> Path:
    path = out_dir / f"failover{'-quick' if quick else ''}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(documents, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def build_cases(quick: bool, rate: int | None = None,
                rounds: dict[str, Any] | None = None, seed: int = 1,
                out_dir: Path = Path("."),
                documents: dict[str, Any] | None = None) -> list[Case]:
    documents = {} if documents is None else documents
    if quick:
        plan = Plan(rate=rate or 500, kill_rounds=3, stop_rounds=2, pg_rounds=2, seed=seed,
                    get_sample=500, keep_result_ms=40_000)  # tasks expire within the run
        cron = CronPlan(seconds=60, kill_every_s=20, seed=seed)
    else:
        plan = Plan(rate=rate or 1_000, kill_rounds=50, stop_rounds=10, pg_rounds=10, seed=seed)
        cron = CronPlan(seconds=600, kill_every_s=30, seed=seed)
    plan = replace(plan, **{k: v for k, v in (rounds or {}).items() if v is not None})
    params = {"nodes": plan.nodes, "apps": plan.apps, "rate_per_s": plan.rate,
              **({"standbys": True} if plan.standbys else {}),
              "keep_result_s": plan.keep_result_ms / 1000,
              "lease_ms": plan.lease_ms, "kill_rounds": plan.kill_rounds,
              "sigstop_rounds": plan.stop_rounds, "pg_kill_rounds": plan.pg_rounds,
              "store": "postgresql, fsync on", "latency": "failover of each kill round"}
    cron_params = {"nodes": cron.nodes, "seconds": cron.seconds,
                   "kill_every_s": cron.kill_every_s, "lease_ms": cron.lease_ms,
                   "store": "postgresql, fsync on", "latency": "failover of each kill"}
    return [Case("failover", params, partial(_trial, "failover", plan, out_dir, quick, documents),
                 "acked enqueues/s"),
            Case("failover_cron", cron_params,
                 partial(_trial, "failover_cron", cron, out_dir, quick, documents),
                 "slots fired/s")]


def summary_table(documents: dict[str, Any]) -> str:
    """The run's figures, for people."""
    lines = []
    failover = documents.get("failover")
    if failover is not None:
        v, load, tasks = failover["verdict"], failover["load"], failover["checks"]["tasks"]
        lines += ["| phase | rounds | failover (probe) p50 / p99 / max (s) | per app p50 / p99 / "
                  "max (s) | own tasks again p50 / p99 / max (s) | 503 | 502 | broken | "
                  "timeouts | settled again p50 / max (s) |",
                  "|---|---:|---|---|---|---:|---:|---:|---:|---|"]
        for name, phase in failover["phases"].items():
            f, a, s = phase["failover_s"], phase["failover_per_app_s"], phase["settled_s"]
            o = phase["resumed_s"]
            answers = phase["answers_in_rounds"]
            lost = f" ({phase['unrecovered']} not recovered: counted as {PROBE_LIMIT_S:g} s)" \
                if phase.get("unrecovered") else ""
            lines.append(
                f"| {name} | {phase['rounds']}{lost} | {f['p50']} / {f['p99']} / {f['max']} | "
                f"{a['p50']} / {a['p99']} / {a['max']} | {o['p50']} / {o['p99']} / {o['max']} | "
                f"{answers.get('503', 0):,} | "
                f"{answers.get('502', 0):,} | {answers.get('broken', 0):,} | "
                f"{answers.get('timeout', 0):,} | {s['p50']} / {s['max']} |")
        conn = failover["connections"]
        reasons = sorted(load["reasons"].items(), key=lambda kv: -kv[1])
        lines += ["", "why not 200: " + "; ".join(f"{k}: {v:,}" for k, v in reasons[:8]),
                  f"load: {load['acked']:,} acknowledged of {load['scheduled']:,} scheduled "
                  f"in {load['duration_s']:.0f} s ({load['acked_per_s']:,.0f}/s); answers "
                  f"{load['counts']}; ack p50 / p99 / max {load['ack_ms']['p50']:.1f} / "
                  f"{load['ack_ms']['p99']:.1f} / {load['ack_ms']['max']:.1f} ms",
                  f"tasks: lost {tasks['lost']} (missing {tasks['missing']}, unfinished "
                  f"{tasks['unfinished']}); final states {tasks['states']}; atMostOnce "
                  f"invoked twice {tasks['at_most_once_twice']}; atLeastOnce invoked again "
                  f"{tasks['at_least_once_reruns']}; success never invoked "
                  f"{tasks['success_never_invoked']}; held at the end "
                  f"{failover['checks']['held_at_end']:,}; ran and expired (keepResult "
                  f"{failover['checks']['keep_result_ms'] / 1000:g} s) "
                  f"{failover['checks']['expired_after_running']:,}; failed tasks listed "
                  f"during the run {failover['checks']['failed_lists']}",
                  f"db connections per node: max {conn['per_node_max']} (mean "
                  f"{conn['per_node_mean']}); pg_stat_activity 'cloudqueue' max "
                  f"{conn['pg_stat_activity_cloudqueue_max']} (mean per node "
                  f"{conn['pg_stat_activity_cloudqueue_mean_per_node']}), {conn['samples']} "
                  "samples",
                  f"verdict: {'PASSED' if v['passed'] else 'FAILED'}; kill failover p99 "
                  f"{v['failover_p99_s']} s (target <= {FAILOVER_P99_TARGET_S:g}: "
                  f"{v['failover_within_target']}); problems: {v['problems'] or 'none'}"]
    for name, document in documents.items():
        loads = {k: [round(x, 2) for x in v]
                 for k, v in document.get("load_average", {}).items()}
        lines.append(f"{name}: machine busy {document.get('machine_cores_busy')} cores on "
                     f"average (every process); load average before {loads.get('before')}, "
                     f"after {loads.get('after')}")
    cron = documents.get("failover_cron")
    if cron is not None:
        s, f = cron["slots"], cron["failover_s"]
        lines += ["", f"cron: {len(cron['kills'])} kills; slots expected {s['expected']}, fired "
                  f"{s['fired']} (invoked once {s['fired_once']}, twice {s['invoked_twice']}, "
                  f"of which after a lost run {s['invoked_twice_after_lost_run']}), missed "
                  f"{s['missed']} (in outages {s['missed_in_outages']}), catch-ups "
                  f"{s['catch_ups']}; failover p50 / "
                  f"max {f['p50']} / {f['max']} s; verdict: "
                  f"{'PASSED' if cron['verdict']['passed'] else 'FAILED'} "
                  f"{cron['verdict']['problems'] or ''}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--rate", type=int, default=None)
    pre.add_argument("--kill-rounds", type=int, default=None)
    pre.add_argument("--stop-rounds", type=int, default=None)
    pre.add_argument("--pg-rounds", type=int, default=None)
    pre.add_argument("--seed", type=int, default=1)
    pre.add_argument("--standbys", action="store_true")
    pre.add_argument("--keep-result-s", type=float, default=None)
    known, rest = pre.parse_known_args(argv)
    names = [case.name for case in build_cases(True)]
    args = parse_args(rest, names, (__doc__ or "").split("\n", 1)[0]
                      + " Also: --rate N (enqueues/s), --kill-rounds N, --stop-rounds N, "
                      "--pg-rounds N, --seed N, --standbys (before each kill or SIGSTOP, wait "
                      "until every app has a ready standby: failures far apart), "
                      "--keep-result-s N (the load tasks' keepResult; default 300).")
    # a SIGTERM (a test's timeout) still cleans up: processes killed, directories removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    documents: dict[str, Any] = {}
    settings = Settings(quick=args.quick, warmup=0, repeats=1)
    rounds: dict[str, Any] = {"kill_rounds": known.kill_rounds,
                              "stop_rounds": known.stop_rounds, "pg_rounds": known.pg_rounds,
                              "standbys": known.standbys or None,
                              "keep_result_ms": None if known.keep_result_s is None
                              else round(known.keep_result_s * 1000)}
    cases = [c for c in build_cases(args.quick, known.rate, rounds, known.seed,
                                    args.out.parent, documents)
             if not args.cases or c.name in args.cases]
    results = run_cases(cases, args.out, lambda case: settings,
                        lambda case, record: record.update(
                            {"verdict": documents.get(case.name, {}).get("verdict")}))
    print("\n" + format_table(results), file=sys.stderr)
    print("\n" + summary_table(documents), file=sys.stderr)
    path = _write_document(args.out.parent, args.quick, documents)
    print(f"\n{len(results)} case(s); results appended to {args.out}; every round in {path}",
          file=sys.stderr)
    passed = all(d["verdict"]["passed"] for d in documents.values())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
