"""``GET /metrics``: the queue's metrics in Prometheus's exposition format (docs/metrics.md).

Each app's engine keeps plain counts as it works (``engine/runtime/metrics.py``, and what the core
and the log keep anyway); :class:`QueueCollector` reads them when Prometheus scrapes, into
``prometheus_client``'s metric families, beside the library's process, platform and GC
collectors, and the library's aiohttp handler writes the answer (the text format, OpenMetrics
when the scraper asks for it, gzip when it accepts it). Nothing is computed per event here.

Who may read it: anyone while the server listens on loopback only (127.0.0.0/8, ``::1``,
``localhost``, or a Unix socket: :func:`is_loopback`); on any other address only a request with
``Authorization: Bearer <admin_token>``, else 401 (and 401 saying to set one when the server has
no ``admin_token``). Labels come from closed sets only (app, function with a cap, state,
outcome, status, quota, limit): never a task id, an error or params.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from cloudqueue.adapters.auth import is_operator
from cloudqueue.adapters.http_api.cluster import CLUSTER, Cluster
from cloudqueue.adapters.http_api.tenants import APPS, OPERATOR_TOKEN, QueueApp
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.embedded import Engine
from cloudqueue.engine.runtime.log_store import LogStore
from cloudqueue.engine.runtime.metrics import Histogram

PATH = "/metrics"
QUOTAS = ("rate", "daily", "held")


def is_loopback(host: str | None) -> bool:
    """Whether a server listening on ``host`` is reachable from this machine only: a loopback
    address (127.0.0.0/8, ``::1``), ``localhost``, or a Unix socket (a path, or ``unix:PATH``).
    Anything else, the empty host (every address) included, is not."""
    if not host:
        return False
    if host.startswith(("/", "unix:")) or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LocalEngines(Mapping[str, Engine]):
    """The engines this node runs, read at each collection (a node of several runs the apps it
    holds the lease of; which those are changes)."""

    def __init__(self, apps: Mapping[str, QueueApp]) -> None:
        self._apps = apps

    def __getitem__(self, app_id: str) -> Engine:
        queue_app = self._apps[app_id]
        if not queue_app.local:
            raise KeyError(app_id)
        return queue_app.engine

    def __iter__(self) -> Iterator[str]:
        return (a for a, q in self._apps.items() if q.local)

    def __len__(self) -> int:
        return sum(1 for q in self._apps.values() if q.local)


class DatabaseCollector(Collector):
    """A node's view of the shared database (``serve --store``): whether it answers, the
    apps this node dispatches, the queue's tables and the oldest open transaction
    (``engine/runtime/postgres/health.py``; docs/metrics.md)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        cluster = self._cluster
        health = cluster.health
        up = GaugeMetricFamily("cloudqueue_db_up",
                               "1 while this node's last turn reached the database.")
        up.add_metric([], float(cluster.healthy))
        held = GaugeMetricFamily("cloudqueue_db_apps_dispatched",
                                 "Apps whose lease this node holds (it runs their engines).")
        held.add_metric([], float(len(cluster.node.held)))
        pool = GaugeMetricFamily("cloudqueue_db_connections",
                                 "This node's connections to the database, by use.",
                                 labels=["use"])
        size = cluster.pool.get_size()
        pool.add_metric(["open"], float(size))
        pool.add_metric(["busy"], float(size - cluster.pool.get_idle_size()))
        oldest = GaugeMetricFamily(
            "cloudqueue_db_oldest_transaction_seconds",
            "Age of the oldest transaction or snapshot holding back vacuum (0: none).")
        oldest.add_metric([], health.oldest_age_s)
        rows = GaugeMetricFamily("cloudqueue_db_table_rows",
                                 "Rows of the queue's tables, live and dead (not yet vacuumed).",
                                 labels=["table", "kind"])
        size_bytes = GaugeMetricFamily("cloudqueue_db_table_bytes",
                                       "Size of the queue's tables with their indexes and TOAST.",
                                       labels=["table"])
        for name, stats in sorted(health.tables.items()):
            rows.add_metric([name, "live"], float(stats.live))
            rows.add_metric([name, "dead"], float(stats.dead))
            size_bytes.add_metric([name], float(stats.bytes))
        yield from (up, held, pool, oldest, rows, size_bytes)


def add_route(app: web.Application, *, listen_host: str | None) -> None:
    """Serve ``GET /metrics`` for the apps of ``app`` (its ``APPS``), open when ``listen_host``
    is loopback, else to the operator token only."""
    apps: dict[str, QueueApp] = app[APPS]
    registry = CollectorRegistry()
    registry.register(QueueCollector(LocalEngines(apps)))
    cluster = app.get(CLUSTER)
    if cluster is not None:
        registry.register(DatabaseCollector(cluster))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    write = make_aiohttp_handler(registry)
    where = listen_host or "every address"
    open_ = is_loopback(listen_host)

    async def metrics(request: web.Request) -> web.StreamResponse:
        if not open_:
            token = request.app.get(OPERATOR_TOKEN)
            if not token:
                return _unauthorized(
                    f"GET /metrics needs the operator token while the server listens on {where}"
                    " (not loopback), and this server has none: set admin_token in its "
                    "configuration (or CLOUDQUEUE_ADMIN_TOKEN) and scrape with "
                    "Authorization: Bearer <admin_token>")
            if not is_operator(request.headers, token):
                return _unauthorized(f"GET /metrics needs Authorization: Bearer <admin_token> "
                                     f"while the server listens on {where} (not loopback)")
        return await write(request)

    app.router.add_get(PATH, metrics)


def _unauthorized(message: str) -> web.Response:
    return web.json_response({"code": 401, "error": message}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="cloudqueue metrics"'})


class QueueCollector:
    """The metrics of each engine of ``engines`` (app id -> engine), read when collected: a
    ``prometheus_client`` collector, which a service embedding an ``Engine`` may register in
    its own registry too (``REGISTRY.register(QueueCollector({"myApp": engine}))``). Families
    and their meaning: docs/metrics.md."""

    def __init__(self, engines: Mapping[str, Engine]) -> None:
        self._engines = engines

    def describe(self) -> Iterator[Metric]:
        """The families' names, without reading any engine (for ``?name[]=`` filters)."""
        yield from _Families().all()

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for app_id, engine in self._engines.items():
            families.add(app_id, engine)
        yield from families.all()


class _Families:
    def __init__(self) -> None:
        a, f = ["app"], ["app", "function"]
        self.enqueued = CounterMetricFamily(
            "cloudqueue_tasks_enqueued", "Tasks submitted (enqueued, or fired by a schedule).",
            labels=f)
        self.finished = CounterMetricFamily(
            "cloudqueue_tasks_finished", "Tasks that reached a final state, by status.",
            labels=[*f, "status"])
        self.runs = CounterMetricFamily(
            "cloudqueue_runs", "Runs ended, by outcome.", labels=[*f, "outcome"])
        self.tasks = GaugeMetricFamily(
            "cloudqueue_tasks", "Tasks held, by state (finished ones until keepResult ends).",
            labels=[*a, "state"])
        self.oldest = GaugeMetricFamily(
            "cloudqueue_oldest_ready_task_age_seconds",
            "How long the task ready the longest has waited for a run (0: none is ready).",
            labels=a)
        self.ack = HistogramMetricFamily(
            "cloudqueue_enqueue_ack_seconds",
            "From the engine taking an enqueue call to its acknowledgement (durable).", labels=a)
        self.wait = HistogramMetricFamily(
            "cloudqueue_queue_wait_seconds", "From a task being ready to its run starting.",
            labels=a)
        self.duration = HistogramMetricFamily(
            "cloudqueue_run_duration_seconds", "From a run's start to its outcome.", labels=f)
        self.quota = CounterMetricFamily(
            "cloudqueue_quota_rejections", "Enqueue calls refused by a quota (429).",
            labels=[*a, "quota"])
        self.limit = GaugeMetricFamily(
            "cloudqueue_run_limit",
            "Runs allowed in flight: the app's concurrency, the current limit, and the "
            "loop-lag and host limits that set it when adaptive.", labels=[*a, "limit"])
        self.host_up = GaugeMetricFamily(
            "cloudqueue_host_up",
            "1 while the function host answers, 0 while dispatch is paused and it is probed.",
            labels=a)
        self.ready = GaugeMetricFamily(
            "cloudqueue_app_ready",
            "1 while the app's log takes work, 0 after it failed closed or while the disk is "
            "full (as /__health/ready).", labels=a)
        self.fsync = HistogramMetricFamily(
            "cloudqueue_log_fsync_seconds", "Each fsync of the log's segment.", labels=a)
        self.log_bytes = GaugeMetricFamily(
            "cloudqueue_log_bytes",
            "Log written since the last snapshot: what a restart replays.", labels=a)
        self.records = CounterMetricFamily(
            "cloudqueue_log_records", "Records written to the log.", labels=a)
        self.batches = CounterMetricFamily(
            "cloudqueue_log_batches", "Batches written to the log (group commits).", labels=a)

    def all(self) -> list[Metric]:
        return [self.enqueued, self.finished, self.runs, self.tasks, self.oldest, self.ack,
                self.wait, self.duration, self.quota, self.limit, self.host_up, self.ready,
                self.fsync, self.log_bytes, self.records, self.batches]

    def add(self, app: str, engine: Engine) -> None:
        self._state(app, engine)
        self._counts(app, engine)
        self._log(app, engine)

    def _state(self, app: str, engine: Engine) -> None:
        """What the engine keeps anyway: tasks by state, limits, the host, readiness."""
        by_state = engine.core.tasks_by_state()
        for state in TaskState:
            self.tasks.add_metric([app, state.value], by_state[state])
        limits: dict[str, int] = {"concurrency": engine.config.concurrency,
                                  "current": engine.run_cap}
        if engine.driver.run_cap is not None:
            limits["loop_lag"] = engine.driver.run_cap.cap
        if engine.host_limit is not None:
            limits["host"] = engine.host_limit.limit
        for name, value in limits.items():
            self.limit.add_metric([app, name], value)
        up = engine.host_available
        if up is not None:
            self.host_up.add_metric([app], float(up))
        self.ready.add_metric([app], float(engine.failure is None))

    def _counts(self, app: str, engine: Engine) -> None:
        """What the engine counted as it worked (nothing with ``metrics=False``)."""
        counted = engine.metrics
        if counted is None:
            return
        now_ms = engine.clock.now_ms()
        self.oldest.add_metric([app], counted.oldest_ready_age_ms(now_ms) / 1000)
        for function, count in counted.enqueued.items():
            self.enqueued.add_metric([app, function], count)
        for (function, status), count in counted.finished.items():
            self.finished.add_metric([app, function, str(status)], count)
        for (function, outcome), count in counted.runs.items():
            self.runs.add_metric([app, function, str(outcome)], count)
        for quota in QUOTAS:  # every quota from 0, so that increase() sees the first refusal
            self.quota.add_metric([app, quota], counted.quota_rejections.get(quota, 0))
        _histogram(self.ack, [app], counted.ack)
        _histogram(self.wait, [app], counted.queue_wait)
        for function, histogram in counted.run_duration.items():
            _histogram(self.duration, [app, function], histogram)

    def _log(self, app: str, engine: Engine) -> None:
        store = engine.store
        if not isinstance(store, LogStore):  # in memory: no log to speak of
            return
        _histogram(self.fsync, [app], store.fsync_seconds)
        self.log_bytes.add_metric([app], store.bytes_since_snapshot)
        self.records.add_metric([app], store.records)
        self.batches.add_metric([app], store.batches)


def _histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets: list[Any] = [("+Inf" if bound == math.inf else repr(bound), count)
                          for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.sum)
