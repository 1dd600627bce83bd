"""HTTP enqueue over loopback: cloudqueue's server beside aiohttp's own no-op ceiling.

Run from the repository root::

    python -m benchmarks.bench_http            # full run
    python -m benchmarks.bench_http --quick    # tiny: checks only that it runs

The server runs in its own process (``cloudqueue serve``, fsync always, a fresh data directory);
this process is the load generator: N concurrent clients, each POSTing an enqueue and awaiting
the answer. Every enqueue is acknowledged only after its record is fsynced. The ceiling case runs
the same load against a no-op aiohttp JSON handler, so the ratio between the two is measured in
one run on the same machine. CPU figures in the record are the load generator's, not the server's.
Two load generators (``params.client``): ``raw`` (plain asyncio streams: cheap, so the server is
what is measured) and ``aiohttp`` (aiohttp's client, as an application would call the queue; on
two cores it is itself the bound near 4,000 req/s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from functools import partial

import aiohttp

from benchmarks._harness import (
    REPO_ROOT,
    Case,
    Stopwatch,
    Target,
    Trial,
    free_port,
    main,
    now_ns,
)
from cloudqueue.adapters.auth import sign

KEYS = {"LEANCLOUD_APP_ID": "bench", "LEANCLOUD_APP_KEY": "bench-app-key",
        "LEANCLOUD_APP_MASTER_KEY": "bench-master-key"}
HEADERS = {"X-LC-Id": "bench", "X-LC-Sign": sign("bench-master-key", 1, master=True),
           "Content-Type": "application/json"}
BODY = b'{"function":"resize","params":{"image":"cat.png","width":640},"delay":86400000}'
PATH = "/1.1/engine/cloud-queue/tasks"


@contextlib.contextmanager
def server(kind: str) -> Iterator[str]:
    """Start the queue (or the no-op ceiling) in its own process; yield its base URL."""
    port = free_port()
    env = {**os.environ, **KEYS, "PYTHONPATH": str(REPO_ROOT)}
    with tempfile.TemporaryDirectory(prefix="cq-bench-") as data:
        if kind == "queue":
            argv = [sys.executable, "-m", "cloudqueue", "serve", "--port", str(port),
                    "--data-dir", data]
        else:
            argv = [sys.executable, "-m", "benchmarks._noop_server", str(port)]
        process = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            asyncio.run(_wait_ready(base))
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)


async def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base}/__health/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{base} did not become ready")


async def _load(base: str, clients: int, total: int) -> Trial:
    latencies: list[int] = []
    remaining = total
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = now_ns()
                async with session.post(base + PATH, data=BODY, headers=HEADERS) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"enqueue answered {response.status}")
                latencies.append(now_ns() - started)

        watch = Stopwatch()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall, cpu = watch.read()
    return Trial(total, wall, cpu, latencies)


def _raw_request(base: str) -> bytes:
    host = base.removeprefix("http://")
    head = "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items())
    return (f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\n{head}"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY


async def _raw_client(base: str, request: bytes, left: list[int], latencies: list[int]) -> None:
    """One keep-alive connection sending the request and reading each answer (status line,
    headers up to Content-Length, body) with plain asyncio streams."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        while left[0] > 0:
            left[0] -= 1
            started = now_ns()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.lower().find(b"\r\ncontent-length:")
            if at < 0:
                raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
            length = int(head[at + 17:head.index(b"\r\n", at + 2)])
            await reader.readexactly(length)
            if head[9:12] != b"200":
                raise RuntimeError(f"enqueue answered {head[9:12].decode()}")
            latencies.append(now_ns() - started)
    finally:
        writer.close()


async def _raw_load(base: str, clients: int, total: int) -> Trial:
    latencies: list[int] = []
    left = [total]
    request = _raw_request(base)
    watch = Stopwatch()
    await asyncio.gather(*(_raw_client(base, request, left, latencies) for _ in range(clients)))
    wall, cpu = watch.read()
    return Trial(total, wall, cpu, latencies)


def http_trial(base_urls: dict[str, str], kind: str, clients: int, total: int,
               client: str = "raw") -> Trial:
    load = _raw_load if client == "raw" else _load
    return asyncio.run(load(base_urls[kind], clients, total))


# The load generators. "raw": plain asyncio streams, one keep-alive connection per client, the
# request bytes built once (~20 us of this process's CPU per request). "aiohttp": aiohttp's
# ClientSession, as an application would call the queue; it costs this process ~250 us of CPU
# per request, so on the 2-core machine it cannot offer more than ~4,000 req/s however fast
# the server is (its `per cpu-s` figure shows that bound).
CLIENTS = ("raw", "aiohttp")


def build_cases(quick: bool) -> list[Case]:
    total = 300 if quick else 20_000
    return [
        Case("http_enqueue", {"server": kind, "store": "log, fsync always" if kind == "queue"
                              else "none", "concurrency": clients, "n": total,
                              "client": client},
             partial(_with_server, kind, clients, total, client), "req/s",
             Target("HTTP enqueue, 64 concurrent clients", 8_000) if
             (kind, clients) == ("queue", 64) else None)
        for client in CLIENTS for kind in ("queue", "aiohttp_noop") for clients in (16, 64)
    ]


_SERVERS: dict[str, str] = {}


def _with_server(kind: str, clients: int, total: int, client: str) -> Trial:
    return http_trial(_SERVERS, kind, clients, total, client)


def run(argv: Sequence[str] | None = None) -> int:
    with server("queue") as queue_url, server("aiohttp_noop") as noop_url:
        _SERVERS.update({"queue": queue_url, "aiohttp_noop": noop_url})
        return main(build_cases, argv, description=(__doc__ or "").split("\n", 1)[0])


if __name__ == "__main__":
    sys.exit(run())
