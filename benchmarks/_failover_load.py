"""The failover benchmark's load: enqueues at a fixed rate over HTTP, spread over the nodes.

``python -m benchmarks._failover_load CONFIG.json``; the file holds ``ports`` (the nodes, on
127.0.0.1), ``apps`` (``[[appId, masterKey], ...]``), ``rate`` (enqueues/s), ``keep_result_ms``,
``acked_path``, ``status_path``, ``summary_path``, ``per_node_in_flight`` and ``timeout_s``.
Runs until SIGTERM or SIGINT, then waits for the requests in flight (at most ``timeout_s``),
writes its summary and exits 0.

Request ``i`` is due at ``t0 + i / rate`` and sent then, whatever the earlier answers (open
loop): ``POST /1.1/engine/cloud-queue/tasks`` with master credentials for app ``i % apps``,
``{"function": "record", "params": {}, "uniqueId": uid, "deliveryMode": mode, "keepResult":
...}``. Its uniqueId, chosen here, says its mode and app: ``L<app>-<i>`` (atLeastOnce) or
``M<app>-<i>`` (atMostOnce), alternating per app, at most 32 characters. The nodes take turns
(each app's requests going to every node in turn too), a request going to the next node that is
up and has fewer than ``per_node_in_flight`` requests open when its own is not (as
a load balancer would skip a backend that refuses connections or stopped answering); a request
that finds every node refusing or full is *dropped*. A connection refused (nothing was sent)
moves the request to the next node and marks the refusing one down for 200 ms; any failure
after the request was sent (the connection broken, no answer within ``timeout_s``) is counted
and not retried: its outcome is unknown, and it was not acknowledged. Connections are kept
alive and reused, at most ``IDLE_KEPT`` idle ones per node (after a stall, hundreds of idle
connections would otherwise fill the node's ``max_connections``).

Every uniqueId answered 200 (ACKNOWLEDGED) is appended to ``acked_path``, one per line. The
answers are also counted per 100 ms bucket of their arrival, by status (``"200"``, ``"503"``,
``"502"``, ...) or failure (``"broken"``, ``"timeout"``, ``"refused"``), on CLOCK_MONOTONIC
(``time.monotonic_ns``, shared with the benchmark's process), so that the benchmark can count
what clients saw during each failover. The client is a minimal HTTP/1.1 one over asyncio
streams, as the burst benchmark's, so that this process takes little of the machine's cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

now_ns = time.monotonic_ns
BUCKET_NS = 100_000_000
DOWN_FOR_NS = 200_000_000
PATH = "/1.1/engine/cloud-queue/tasks"
SAMPLES = 5
IDLE_KEPT = 64  # idle keep-alive connections kept per node (more are closed, as a pool would)


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @property
    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """One request, one answer: (status, body, whether the server keeps the connection)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, keep = 0, True
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
            elif name == b"transfer-encoding":
                raise ValueError("a chunked answer: this client reads Content-Length only")
        return status, await self.reader.readexactly(length), keep

    def close(self) -> None:
        self.writer.close()


class _Node:
    __slots__ = ("port", "idle", "in_flight", "down_until")

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[_Connection] = []
        self.in_flight = 0
        self.down_until = 0

    async def connection(self) -> _Connection:
        while self.idle:
            found = self.idle.pop()
            if found.usable:
                return found
            found.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return _Connection(reader, writer)


class Load:
    def __init__(self, config: dict[str, Any]) -> None:
        self.nodes = [_Node(int(p)) for p in config["ports"]]
        self.apps: list[tuple[str, str]] = [(a, m) for a, m in config["apps"]]
        self.rate = float(config["rate"])
        self.keep_result_ms = int(config["keep_result_ms"])
        self.cap = int(config["per_node_in_flight"])
        self.timeout_s = float(config["timeout_s"])
        self.acked_file: TextIO = Path(config["acked_path"]).open("a", encoding="ascii")
        self.status_path = Path(config["status_path"])
        self.summary_path = Path(config["summary_path"])
        self.counts: Counter[str] = Counter()
        self.buckets: dict[int, Counter[str]] = {}
        self.latencies = array("q")  # ns, due time -> 200 answer
        self.tasks: set[asyncio.Task[None]] = set()
        self.t0 = 0
        self.sent = 0
        self.stop = asyncio.Event()
        self.samples: dict[str, list[str]] = {}  # a few answers of each status but 200
        self.reasons: Counter[str] = Counter()  # answers but 200, by status and why

    # ------------------------------------------------------------------ one request

    def _request(self, i: int) -> tuple[bytes, str]:
        app = i % len(self.apps)
        app_id, master = self.apps[app]
        most = (i // len(self.apps)) % 2 == 1
        uid = f"{'M' if most else 'L'}{app}-{i}"
        body = json.dumps({"function": "record", "params": {}, "uniqueId": uid,
                           "deliveryMode": "atMostOnce" if most else "atLeastOnce",
                           "keepResult": self.keep_result_ms}).encode()
        head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-LC-Id: {app_id}\r\n"
                f"X-LC-Key: {master},master\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        return head.encode() + body, uid

    def _note(self, what: str) -> None:
        self.counts[what] += 1
        bucket = (now_ns() - self.t0) // BUCKET_NS
        found = self.buckets.get(bucket)
        if found is None:
            found = self.buckets[bucket] = Counter()
        found[what] += 1

    def _pick(self, i: int, tried: int) -> _Node | None:
        """Request ``i``'s node: they take turns, and each app's requests turn over every node
        too (``i % nodes`` alone would send an app always to the same node when the apps are a
        multiple of the nodes)."""
        now = now_ns()
        n = len(self.nodes)
        start = i + i // len(self.apps)
        for k in range(n):
            node = self.nodes[(start + tried + k) % n]
            if node.down_until <= now and node.in_flight < self.cap:
                return node
        return None

    async def _one(self, i: int, due_ns: int) -> None:
        request, uid = self._request(i)
        for tried in range(len(self.nodes)):
            node = self._pick(i, tried)
            if node is None:
                self._note("dropped")
                return
            node.in_flight += 1
            try:
                try:
                    connection = await node.connection()
                except OSError:  # refused: nothing was sent, try the next node
                    node.down_until = now_ns() + DOWN_FOR_NS
                    self.counts["refused"] += 1
                    continue
                try:
                    status, body, keep = await asyncio.wait_for(connection.exchange(request),
                                                             self.timeout_s)
                except TimeoutError:
                    connection.close()
                    self._note("timeout")
                    return
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        ValueError):
                    connection.close()
                    self._note("broken")
                    return
            finally:
                node.in_flight -= 1
            if keep and len(node.idle) < IDLE_KEPT:
                node.idle.append(connection)
            else:
                connection.close()
            self._note(str(status))
            if status != 200:
                self.reasons[f"{status} {_reason(body)}"] += 1
                seen = self.samples.setdefault(str(status), [])
                if len(seen) < SAMPLES:
                    seen.append(f"{(now_ns() - self.t0) / 1e9:.1f}s port {node.port}: "
                                f"{body[:300].decode(errors='replace')}")
            if status == 200:
                self.acked_file.write(uid + "\n")
                self.latencies.append(now_ns() - due_ns)
            return
        self._note("refused")  # every node refused the connection

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        self.t0 = now_ns()
        period = 1e9 / self.rate
        i = 0
        next_status = self.t0
        cpu0 = time.process_time_ns()
        while not self.stop.is_set():
            now = now_ns()
            due = int((now - self.t0) / period) + 1
            while i < due:
                task = asyncio.ensure_future(self._one(i, self.t0 + round(i * period)))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                i += 1
            if now >= next_status:
                next_status = now + 1_000_000_000
                self._status(i)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.002)
        self.sent = i
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.timeout_s + 2)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.acked_file.close()
        self._summary(time.process_time_ns() - cpu0)
        for node in self.nodes:
            for connection in node.idle:
                connection.close()
        await asyncio.sleep(0)

    def _status(self, i: int) -> None:
        self.acked_file.flush()
        status = {"t_ns": now_ns(), "t0_ns": self.t0, "scheduled": i,
                  "acked": self.counts["200"], "in_flight": len(self.tasks),
                  "counts": dict(self.counts)}
        partial = self.status_path.with_suffix(".partial")
        partial.write_text(json.dumps(status))
        os.replace(partial, self.status_path)

    def _summary(self, cpu_ns: int) -> None:
        ordered = sorted(self.latencies)

        def at(p: float) -> float:
            if not ordered:
                return -1.0
            return ordered[min(len(ordered) - 1, max(0, int(p / 100 * len(ordered)) - 1))] / 1e6

        summary = {"t0_ns": self.t0, "end_ns": now_ns(), "scheduled": self.sent,
                   "counts": dict(self.counts), "cpu_s": cpu_ns / 1e9,
                   "bucket_ns": BUCKET_NS,
                   "buckets": [[b, dict(c)] for b, c in sorted(self.buckets.items())],
                   "ack_ms": {"p50": at(50), "p99": at(99), "max": at(100)},
                   "samples": self.samples, "reasons": dict(self.reasons)}
        partial = self.summary_path.with_suffix(".partial")
        partial.write_text(json.dumps(summary))
        os.replace(partial, self.summary_path)


def _reason(body: bytes) -> str:
    """Why a node refused, in a few words: the error's ``type``, else (a 502) what the
    forwarding node's request to the owner ran into, without addresses."""
    try:
        answer = json.loads(body)
    except ValueError:
        return "not json"
    if not isinstance(answer, dict):
        return "?"
    if "type" in answer:
        return str(answer["type"])
    error = str(answer.get("error", ""))
    if "did not answer (" in error:
        cause = error.split("did not answer (", 1)[1].rsplit("); whether", 1)[0]
        return re.sub(r"\S*\d+\.\d+\.\d+\.\d+\S*|\[Errno \d+\] ", "", cause).strip()[:60]
    return error[:60]


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a connection per request open
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    config = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(Load(config).run())


if __name__ == "__main__":
    main()
