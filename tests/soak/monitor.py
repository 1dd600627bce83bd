"""What the soak test watches while the load runs: health checks, the server's RSS, CPU use; and
the read-back of every acknowledged task afterwards.

All of it runs in the test's own process, beside (not inside) the load generator, so a generator
that falls behind cannot make the server look unhealthy.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.soak import rawhttp

HOST = "127.0.0.1"
HEALTH_EVERY_S = 1.0
HEALTH_DEADLINE_S = 2.0
_TICKS = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ health


@dataclass
class Health:
    polls: int = 0
    live_failures: list[str] = field(default_factory=list)  # "t=12.0s: why"
    ready: Counter[str] = field(default_factory=Counter)  # status (or failure) -> n
    ready_failures: list[str] = field(default_factory=list)
    slowest_live_ms: float = 0.0


async def _probe(port: int, path: str, t0: float) -> tuple[str | None, float]:
    """None when ``path`` answered 200 with JSON within the deadline; else why not."""
    start = time.monotonic()
    try:
        answer = await rawhttp.one_shot(HOST, port, rawhttp.request_bytes(
            "GET", path, {"Connection": "close"}), HEALTH_DEADLINE_S)
    except TimeoutError:
        return f"t={start - t0:.1f}s: no answer within {HEALTH_DEADLINE_S:.0f} s", 0.0
    except (OSError, asyncio.IncompleteReadError, rawhttp.ProtocolError, ValueError) as exc:
        return f"t={start - t0:.1f}s: {type(exc).__name__}: {exc}", 0.0
    elapsed_ms = (time.monotonic() - start) * 1000
    if answer.status != 200:
        return f"t={start - t0:.1f}s: {answer.status} {answer.body[:200]!r}", elapsed_ms
    try:
        json.loads(answer.body)
    except ValueError:
        return f"t={start - t0:.1f}s: 200 but not JSON: {answer.body[:100]!r}", elapsed_ms
    return None, elapsed_ms


async def poll_health(port: int, health: Health, stop: asyncio.Event) -> None:
    """Every second (on a fixed schedule: a slow answer does not delay the next poll), GET
    /__health/live and /__health/ready, each on a new connection with a 2 s deadline."""
    t0 = time.monotonic()
    running: set[asyncio.Task[None]] = set()

    async def once() -> None:
        (live, live_ms), (ready, _) = await asyncio.gather(
            _probe(port, "/__health/live", t0), _probe(port, "/__health/ready", t0))
        health.polls += 1
        health.slowest_live_ms = max(health.slowest_live_ms, live_ms)
        if live is not None:
            health.live_failures.append(live)
        if ready is None:
            health.ready["200"] += 1
        else:
            health.ready["failed"] += 1
            health.ready_failures.append(ready)

    tick = 0
    while not stop.is_set():
        task = asyncio.ensure_future(once())
        running.add(task)
        task.add_done_callback(running.discard)
        tick += 1
        delay = t0 + tick * HEALTH_EVERY_S - time.monotonic()
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, delay))
        except TimeoutError:
            pass
    if running:
        await asyncio.gather(*running, return_exceptions=True)


# ------------------------------------------------------------------ memory and CPU


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the load started
    rss_kib: int
    acked: int  # tasks acknowledged so far (what the generator last reported)


async def sample_rss(pid: int, every_s: float, acked: Callable[[], int], t0: float,
                     samples: list[Sample], stop: asyncio.Event) -> None:
    while not stop.is_set():
        rss = rss_kib(pid)
        if rss is not None:
            samples.append(Sample(time.monotonic() - t0, rss, acked()))
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass


# ------------------------------------------------------------------ reading tasks back

STATES = ("missing", "queued", "running", "retry_wait", "success", "failed", "cancelled")
CODE = {name: i for i, name in enumerate(STATES)}
OTHER = 255  # anything but 200 with a known state or 404
FINAL = frozenset({CODE["success"], CODE["failed"], CODE["cancelled"]})


async def read_states(port: int, uids: Sequence[str], headers: dict[str, str],
                      workers: int = 12) -> tuple[bytearray, list[str], dict[int, int]]:
    """GET every task (keep-alive connections, ``workers`` at once): a code per uid from
    ``STATES`` (``missing`` = 404), ``OTHER`` for anything else, with samples of those; and when
    (monotonic ns) each 404 came, by the uid's index."""
    codes = bytearray(len(uids))
    problems: list[str] = []
    missing_at: dict[int, int] = {}
    next_index = iter(range(len(uids)))
    prefix = "/1.1/engine/cloud-queue/tasks/"

    async def worker() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            for i in next_index:
                for attempt in range(4):
                    try:
                        if conn is None:
                            conn = await rawhttp.open_connection(HOST, port)
                        async with asyncio.timeout(60):
                            conn[1].write(rawhttp.request_bytes("GET", prefix + uids[i], headers))
                            answer = await rawhttp.read_answer(conn[0])
                        if answer.closes:
                            rawhttp.close(conn[1])
                            conn = None
                        break
                    except (OSError, TimeoutError, asyncio.IncompleteReadError,
                            rawhttp.ProtocolError) as exc:
                        if conn is not None:
                            rawhttp.close(conn[1], abort=True)
                            conn = None
                        if attempt == 3:
                            raise RuntimeError(f"GET {uids[i]}: {exc!r}") from exc
                        await asyncio.sleep(0.5)
                codes[i] = _code(uids[i], answer, problems)
                if codes[i] == CODE["missing"]:
                    missing_at[i] = time.monotonic_ns()
        finally:
            if conn is not None:
                rawhttp.close(conn[1])

    await asyncio.gather(*(worker() for _ in range(workers)))
    return codes, problems, missing_at


def _code(uid: str, answer: rawhttp.Answer, problems: list[str]) -> int:
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if answer.status == 404 and isinstance(body, dict) and body.get("code") == 404:
        return CODE["missing"]
    state = body.get("state") if answer.status == 200 and isinstance(body, dict) else None
    if isinstance(state, str) and state in CODE and state != "missing":
        if body.get("uniqueId") != uid:
            if len(problems) < 20:
                problems.append(f"{uid}: task info names {body.get('uniqueId')!r}")
            return OTHER
        return CODE[state]
    if len(problems) < 20:
        problems.append(f"{uid}: {answer.status} {answer.body[:200]!r}")
    return OTHER
