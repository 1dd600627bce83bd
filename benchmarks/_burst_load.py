"""The burst's open-loop load generator: enqueues over HTTP at a fixed rate, whatever the answers.

Request ``i`` is *scheduled* at ``t0 + i / rate``; it is sent at that moment (or as soon after as
this process gets to it) on an idle keep-alive connection, or a new one, whether or not earlier
requests have been answered. Its ack latency is measured from the scheduled time, not the send
time, so a server stall shows in full in the latencies of every request that should have gone out
during it (no coordinated omission). Bounded three ways: ``count`` requests at most; nothing is
sent and nothing awaited past ``time_limit_s`` after ``t0`` (what is still open then is cancelled
and the run is marked ``timed_out``); at most ``max_in_flight`` requests open at once. A request
whose moment comes while that many are open is *dropped* (never sent) and counted; one sent more
than ``late_ms`` after its moment is counted *late* (the generator itself fell behind).

The client is a minimal HTTP/1.1 one over asyncio streams (prebuilt request bytes, status line and
``Content-Length`` parsed, the JSON answer decoded for its ``uniqueId``): it costs this process a
fraction of what aiohttp's client would, so that on a 2-core machine more of the CPU goes to the
server under test. Times are ``time.monotonic_ns`` (CLOCK_MONOTONIC, shared with the function
host's process).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["LoadPlan", "LoadResult", "run_load"]

now_ns = time.monotonic_ns
_ERROR_SAMPLES = 5
_WARM_CONNECTIONS = 16  # opened before t0, as a live client population would already have them


@dataclass(frozen=True, slots=True)
class LoadPlan:
    rate: int  # requests per second
    count: int  # requests in all
    max_in_flight: int
    time_limit_s: float  # from t0: no send, no wait past it
    late_ms: float = 5.0


@dataclass(slots=True)
class LoadResult:
    """Per request ``i``: ``scheduled_ns[i]``, ``sent_ns[i]`` and ``acked_ns[i]`` (0: never) and
    the ``uniqueId`` its ack carried ("" when none). Counts of what went wrong besides."""

    plan: LoadPlan
    t0_ns: int
    scheduled_ns: list[int]
    sent_ns: list[int]
    acked_ns: list[int]
    unique_ids: list[str]
    dropped: int = 0
    unsent: int = 0  # never reached: the time limit came first
    late: int = 0
    errors: int = 0
    timed_out: bool = False
    connections: int = 0
    max_in_flight_seen: int = 0
    error_samples: list[str] = field(default_factory=list)
    cpu_ns: int = 0

    @property
    def acked(self) -> int:
        return sum(1 for t in self.acked_ns if t)

    @property
    def sent(self) -> int:
        return sum(1 for t in self.sent_ns if t)

    def note_error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < _ERROR_SAMPLES:
            self.error_samples.append(text[:200])


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send one request, read one answer: (status, body). Content-Length bodies only."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise ValueError("a chunked answer: this client reads Content-Length only")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def request_bytes(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
             *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


class _Generator:
    def __init__(self, host: str, ports: Sequence[int], plan: LoadPlan,
                 request_for: Callable[[int], bytes]) -> None:
        self.host, self.plan = host, plan
        self.ports = itertools.cycle(ports)  # connections go to each port in turn
        self.request_for = request_for
        self.idle: list[_Connection] = []
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        period_ns = 1e9 / plan.rate
        t0 = now_ns() + 50_000_000  # a moment to settle
        self.result = LoadResult(plan, t0, [t0 + round(i * period_ns) for i in range(plan.count)],
                                 [0] * plan.count, [0] * plan.count, [""] * plan.count)

    async def _connection(self) -> _Connection:
        if self.idle:
            return self.idle.pop()
        reader, writer = await asyncio.open_connection(self.host, next(self.ports))
        self.result.connections += 1
        return _Connection(reader, writer)

    async def _one(self, i: int) -> None:
        result = self.result
        try:
            connection = await self._connection()
            result.sent_ns[i] = now_ns()
            try:
                status, body = await connection.exchange(self.request_for(i))
            except BaseException:
                connection.close()
                raise
            self.idle.append(connection)
            if status != 200:
                result.note_error(f"HTTP {status}: {body[:120]!r}")
                return
            result.acked_ns[i] = now_ns()
            result.unique_ids[i] = str(json.loads(body).get("uniqueId", ""))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            result.note_error(f"{type(exc).__name__}: {exc}")
        finally:
            self.in_flight -= 1

    def _launch(self, i: int) -> None:
        result = self.result
        if self.in_flight >= self.plan.max_in_flight:
            result.dropped += 1
            return
        self.in_flight += 1
        result.max_in_flight_seen = max(result.max_in_flight_seen, self.in_flight)
        task = asyncio.ensure_future(self._one(i))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send_all(self, deadline_ns: int) -> None:
        result, plan = self.result, self.plan
        late_ns = plan.late_ms * 1e6
        i = 0
        while i < plan.count:
            now = now_ns()
            if now >= deadline_ns:
                result.unsent = plan.count - i
                result.timed_out = True
                return
            while i < plan.count and result.scheduled_ns[i] <= now:
                if now - result.scheduled_ns[i] > late_ns:
                    result.late += 1
                self._launch(i)
                i += 1
            if i < plan.count:
                await asyncio.sleep(max(0, result.scheduled_ns[i] - now_ns()) / 1e9)

    async def run(self) -> LoadResult:
        result = self.result
        for _ in range(min(_WARM_CONNECTIONS, self.plan.max_in_flight)):
            self.idle.append(await self._connection())
        deadline_ns = result.t0_ns + round(self.plan.time_limit_s * 1e9)
        await asyncio.sleep(max(0, result.t0_ns - now_ns()) / 1e9)
        cpu0 = time.process_time_ns()
        try:
            await self._send_all(deadline_ns)
            if self.tasks:
                _, pending = await asyncio.wait(set(self.tasks),
                                                timeout=max(0, deadline_ns - now_ns()) / 1e9)
                if pending:
                    result.timed_out = True
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            result.cpu_ns = time.process_time_ns() - cpu0
            for connection in self.idle:
                connection.close()
            await asyncio.sleep(0)  # let the transports close
        return result


async def run_load(host: str, port: int | Sequence[int], plan: LoadPlan,
                   request_for: Callable[[int], bytes]) -> LoadResult:
    """Run ``plan`` against ``host:port`` (several ports: the connections spread over them in
    turn); ``request_for(i)`` gives request ``i``'s bytes."""
    ports = [port] if isinstance(port, int) else list(port)
    return await _Generator(host, ports, plan, request_for).run()
