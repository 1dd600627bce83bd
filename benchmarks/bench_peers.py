"""Peer queues on Redis (arq, SAQ, taskiq, BullMQ) measured on our own benchmarks' workloads.

Run from the repository root::

    python -m benchmarks.bench_peers                 # full run (~5-7 min on the 2-core machine)
    python -m benchmarks.bench_peers --quick         # tiny sizes: checks only that it runs
    python -m benchmarks.bench_peers --peer bullmq --case peer_enqueue_bulk
    python -m benchmarks.bench_peers --no-install    # skip a peer that is missing, never install

What it needs it sets up itself, before the first case: ``redis-server`` (Debian's package,
``apt-get install`` when missing and running as root), the Python peers (the ``bench`` extra of
pyproject.toml, ``pip install``-ed into this interpreter's environment when one is missing) and
BullMQ (``npm install`` of ``benchmarks/peers/package.json`` into a cache directory outside the
repository, ``$CLOUDQUEUE_BENCH_CACHE`` or ``~/.cache/cloudqueue-bench``, when ``node`` is
present). Each peer then runs one tiny end-to-end smoke trial; a peer that cannot be installed or
started is left out with one line ``skipped <peer>: <why>`` on stderr, and the run carries on.

Every trial starts its own ``redis-server`` on 127.0.0.1, on a free port, in a fresh temporary
directory, with ``appendonly yes``, ``appendfsync always`` (or ``everysec``: the second row of
each case) and RDB snapshots off, and stops it (and any worker) afterwards, also on an error or
Ctrl-C. The producers of the Python peers run in this process; BullMQ's run in Node
(``benchmarks/peers/bullmq_driver.js``); workers run in a process of their own. Same conventions
as the other modules (``benchmarks/_harness.py``): one JSON line per case on stdout (appended to
``--out``), progress and a table on stderr, ``--quick``, ``--case``, ``--repeats``. The ``cpu``
column is the *producer's* CPU share: it waits for Redis, so a low share here is not other load;
``redis_cpu_share`` and (end to end) ``worker_cpu_share`` are among the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO

from benchmarks._harness import (
    REPO_ROOT,
    Case,
    Stopwatch,
    Trial,
    free_port,
    main,
    raw_fsync_us,
    stop_process,
)
from benchmarks.peers.pyqueues import PEERS as PYTHON_PEERS
from benchmarks.peers.pyqueues import import_check, make_producer

HOST = "127.0.0.1"
PEERS = (*PYTHON_PEERS, "bullmq")
FSYNCS = ("always", "everysec")
E2E_CONCURRENCY = 16  # matched to our end_to_end_noop[concurrency=16]
PEERS_DIR = Path(__file__).resolve().parent / "peers"
BULLMQ_DRIVER = PEERS_DIR / "bullmq_driver.js"
BULLMQ_PACKAGE = PEERS_DIR / "package.json"
# Fallback when pyproject.toml has no ``bench`` extra (it should: that is the list to keep).
BENCH_REQUIREMENTS = ("arq>=0.28,<0.29", "saq[redis]>=0.26,<0.27", "taskiq>=0.12,<0.13",
                      "taskiq-redis>=1.0.9,<1.1", "redis>=5,<6")

STARTUP_TIMEOUT_S = 30.0  # a redis-server, a worker or the Node driver to be ready
TRIAL_TIMEOUT_S = 300.0  # one trial's answer
STOP_TIMEOUT_S = 10.0
INSTALL_TIMEOUT_S = 600.0

# (full, quick) sizes
N_ONE = (1_500, 100)
N_CONCURRENT = (4_000, 200)
N_BULK = (10_000, 200)
BULK_BATCH = (1_000, 50)
N_E2E = (1_500, 100)
FSYNC_PROBE_ROUNDS = 20


def _size(sizes: tuple[int, int], quick: bool) -> int:
    return sizes[1] if quick else sizes[0]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- child processes


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the benchmark dies (Linux), so that not even
    a kill -9 of the benchmark leaves a redis-server or a worker behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_PREEXEC = _die_with_parent if sys.platform.startswith("linux") else None


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Child:
    """A helper process that speaks in lines on stdout (stdin for ``go``); stderr goes to a
    temporary file, quoted when the child fails. A context manager: stopped on exit."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: Path = REPO_ROOT) -> None:
        self.name = name
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self._buffer = b""
        self.process = subprocess.Popen(list(argv), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._stderr, cwd=cwd,
                                        env=dict(env) if env is not None else None,
                                        preexec_fn=_PREEXEC)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return _tail(self._stderr.read().decode(errors="replace"))

    def _fail(self, what: str) -> RuntimeError:
        return RuntimeError(f"{self.name}: {what}; stderr: {self.stderr_tail() or '(empty)'}")

    def _fd(self) -> int:
        assert self.process.stdout is not None
        return self.process.stdout.fileno()

    def _read_some(self) -> None:
        chunk = os.read(self._fd(), 1 << 16)
        if not chunk:
            raise self._fail(f"exited with {self.process.wait(STOP_TIMEOUT_S)}")
        self._buffer += chunk

    def _take_line(self) -> str:
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail(f"no answer within {timeout:.0f} s")
            readable, _, _ = select.select([self._fd()], [], [], left)
            if readable:
                self._read_some()
        return self._take_line()

    async def readline_async(self, timeout: float) -> str:
        """``readline`` for a coroutine: waits on the event loop, so it can be cancelled."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self._fd(), _resolve, readable)
            try:
                await asyncio.wait_for(readable, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise self._fail(f"no answer within {timeout:.0f} s") from None
            finally:
                loop.remove_reader(self._fd())
            self._read_some()
        return self._take_line()

    def _check(self, line: str, word: str) -> str:
        if line.split(" ", 1)[0] != word:
            raise self._fail(f"said {line[:200]!r}, expected {word!r}")
        return line[len(word):].strip()

    def expect(self, word: str, timeout: float) -> str:
        """The next line, which must start with ``word``; returns the rest of it."""
        return self._check(self.readline(timeout), word)

    async def expect_async(self, word: str, timeout: float) -> str:
        return self._check(await self.readline_async(timeout), word)

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        try:
            stop_process(self.process, STOP_TIMEOUT_S)
        finally:
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._stderr.close()


# ---------------------------------------------------------------------- redis-server


_CLOCK_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def process_cpu_ns(pid: int) -> int:
    """User + system CPU time of another process (Linux /proc; 0 where that is missing)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return (int(fields[11]) + int(fields[12])) * _CLOCK_TICK_NS  # utime, stime


def _pong(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Mark:
    """Redis's CPU time and AOF size at one moment of a trial."""

    cpu_ns: int
    aof_bytes: int
    raw_fsync_us: float = 0.0


class RedisServer:
    """A private ``redis-server`` for one trial: 127.0.0.1, a free port, a fresh temporary
    directory, AOF on with the given ``appendfsync``, RDB snapshots off. A context manager."""

    binary = "redis-server"

    def __init__(self, fsync: str) -> None:
        self.fsync = fsync
        self.port = 0
        self.directory = Path(tempfile.mkdtemp(prefix="cq-peer-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _argv(self, port: int) -> list[str]:
        return [self.binary, "--bind", HOST, "--port", str(port), "--protected-mode", "yes",
                "--dir", str(self.directory), "--logfile", "redis.log", "--daemonize", "no",
                "--appendonly", "yes", "--appendfsync", self.fsync, "--save", ""]

    def _start(self) -> None:
        for _ in range(3):  # a free port can be taken between the probe and the bind
            port = free_port()
            self.process = subprocess.Popen(self._argv(port), cwd=self.directory,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, preexec_fn=_PREEXEC)
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while self.process.poll() is None and time.monotonic() < deadline:
                if _pong(port):
                    self.port = port
                    return
                time.sleep(0.01)
            stop_process(self.process, STOP_TIMEOUT_S)
        raise RuntimeError(f"redis-server did not start: {self.log_tail() or 'no log'}")

    def log_tail(self) -> str:
        try:
            return _tail((self.directory / "redis.log").read_text(errors="replace"), 3)
        except OSError:
            return ""

    def mark(self, probe: bool = False) -> Mark:
        """Redis's CPU time and AOF size now; with ``probe``, first the disk's fsync floor."""
        assert self.process is not None
        floor_us = raw_fsync_us(self.directory, FSYNC_PROBE_ROUNDS) if probe else 0.0
        aof = self.directory / "appendonlydir"
        size = sum(p.stat().st_size for p in aof.iterdir()) if aof.is_dir() else 0
        return Mark(process_cpu_ns(self.process.pid), size, floor_us)

    def stop(self) -> None:
        try:
            if self.process is not None:
                # SIGTERM: redis flushes its AOF and exits
                stop_process(self.process, STOP_TIMEOUT_S)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _redis_figures(before: Mark, after: Mark, elapsed_ns: int, ops: int) -> dict[str, float]:
    return {
        "redis_cpu_share": (after.cpu_ns - before.cpu_ns) / elapsed_ns,
        "aof_bytes_per_op": (after.aof_bytes - before.aof_bytes) / ops,
        "raw_fsync_p50_us": before.raw_fsync_us,
        "load_1m": os.getloadavg()[0],
    }


# ---------------------------------------------------------------------- setting up the peers


@dataclass
class Setup:
    """What ``ensure_peers`` found: the ready peers (peer -> version), Redis's version and
    where BullMQ's node_modules are."""

    peers: dict[str, str] = field(default_factory=dict)
    redis_version: str = "unknown"
    node_modules: Path | None = None


_SETUP = Setup()


def _run_tool(argv: Sequence[str], timeout: float, cwd: Path | None = None,
              env: Mapping[str, str] | None = None) -> str:
    """Run an installer; '' when it succeeded, else a short reason."""
    try:
        done = subprocess.run(list(argv), cwd=cwd, env=dict(env) if env is not None else None,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{Path(argv[0]).name}: {exc}"
    if done.returncode != 0:
        return f"{Path(argv[0]).name} exited {done.returncode}: {_tail(done.stderr, 2)}"
    return ""


def _apt_install(package: str) -> str:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not root, so no apt-get install"
    apt = shutil.which("apt-get")
    if apt is None:
        return "no apt-get"
    _say(f"installing {package} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return (_run_tool([apt, "update", "-qq"], INSTALL_TIMEOUT_S, env=env)
            or _run_tool([apt, "install", "-y", "-qq", package], INSTALL_TIMEOUT_S, env=env))


def ensure_redis_server(install: bool) -> str:
    """Find (or apt-get install) redis-server; return its version, or raise with why not."""
    found = shutil.which(RedisServer.binary)
    if found is None and install:
        why = _apt_install("redis-server")
        found = shutil.which(RedisServer.binary)
        if found is None:
            why = why or "the install put no redis-server on PATH"
            raise RuntimeError(f"redis-server unavailable: not installed, and {why}")
    if found is None:
        raise RuntimeError("redis-server unavailable: not installed (--no-install)")
    RedisServer.binary = found
    version = subprocess.run([found, "--version"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    match = re.search(r"v=(\S+)", version)
    return match.group(1) if match else "unknown"


PEER_DISTRIBUTIONS = {"arq", "saq", "taskiq", "taskiq-redis", "redis"}


def bench_requirements() -> list[str]:
    """The peers' lines of the ``bench`` optional-dependency group of pyproject.toml (the group
    may hold other benchmarks' tools too)."""
    try:
        with (REPO_ROOT / "pyproject.toml").open("rb") as f:
            extras = tomllib.load(f)["project"]["optional-dependencies"]
        lines = [str(line) for line in extras["bench"]]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return list(BENCH_REQUIREMENTS)
    names = [re.match(r"[A-Za-z0-9_.-]*", line) for line in lines]
    ours = [line for line, name in zip(lines, names, strict=True) if name is not None
            and name.group(0).lower().replace("_", "-") in PEER_DISTRIBUTIONS]
    return ours or list(BENCH_REQUIREMENTS)


def _python_peer_versions(peers: Sequence[str]) -> dict[str, str]:
    """Import each peer in a fresh interpreter: peer -> version, or 'error: ...'."""
    code = ("import json, sys\nfrom benchmarks.peers.pyqueues import import_check\nout = {}\n"
            "for peer in sys.argv[1:]:\n"
            "    try:\n        out[peer] = import_check(peer)\n"
            "    except Exception as exc:\n        out[peer] = f'error: {exc!r}'\n"
            "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", code, *peers], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    try:
        found: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {peer: f"error: {_tail(done.stderr, 2)}" for peer in peers}
    return found


def ensure_python_peers(peers: Sequence[str], install: bool) -> dict[str, str]:
    """peer -> version for those that import (pip-installing the bench extra if one does not);
    peer -> 'error: why' for the others."""
    found: dict[str, str] = {}
    for peer in peers:
        try:
            found[peer] = import_check(peer)
        except Exception as exc:  # an import can fail in many ways (versions that clash)
            found[peer] = f"error: {exc!r}"
    missing = [p for p in peers if found[p].startswith("error")]
    if missing and install:
        requirements = bench_requirements()
        _say(f"installing {', '.join(requirements)} with pip ...")
        why = _run_tool([sys.executable, "-m", "pip", "install", "--quiet",
                         "--disable-pip-version-check", *requirements], INSTALL_TIMEOUT_S)
        found.update(_python_peer_versions(missing))  # in a fresh interpreter
        for peer in missing:
            if found[peer].startswith("error") and why:
                found[peer] = f"error: pip install failed: {why}"
    return found


def bullmq_cache() -> Path:
    base = os.environ.get("CLOUDQUEUE_BENCH_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME")
                                        or Path.home() / ".cache") / "cloudqueue-bench"
    return root / "bullmq"


def ensure_bullmq(install: bool) -> tuple[Path, str]:
    """npm-install benchmarks/peers/package.json into the cache (when it changed or is missing);
    return (its node_modules, a version string), or raise with why not."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found")
    cache = bullmq_cache()
    wanted = BULLMQ_PACKAGE.read_text(encoding="utf-8")
    manifest = cache / "node_modules" / "bullmq" / "package.json"
    current = (cache / "package.json").read_text(encoding="utf-8") \
        if (cache / "package.json").is_file() else ""
    if current != wanted or not manifest.is_file():
        npm = shutil.which("npm")
        if not install or npm is None:
            raise RuntimeError("bullmq is not installed in the cache and "
                               + ("npm is missing" if npm is None else "--no-install was given"))
        _say(f"installing bullmq with npm into {cache} ...")
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "package.json").write_text(wanted, encoding="utf-8")
        why = _run_tool([npm, "install", "--no-audit", "--no-fund", "--loglevel=error",
                         "--omit=dev"], INSTALL_TIMEOUT_S, cwd=cache)
        if why or not manifest.is_file():
            (cache / "package.json").unlink(missing_ok=True)  # retry next time
            raise RuntimeError(f"npm install failed: {why or 'no bullmq afterwards'}")
    modules = cache / "node_modules"
    bullmq = json.loads(manifest.read_text(encoding="utf-8"))["version"]
    ioredis = json.loads((modules / "ioredis" / "package.json").read_text())["version"]
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True,
                                  timeout=30, check=False).stdout.strip()
    return modules, f"{bullmq} (ioredis {ioredis}, node {node_version})"


def _smoke(peer: str) -> None:
    """A tiny end to end run (enqueue and worker): proves the peer starts and works."""
    end_to_end_trial(peer, "everysec", 5, 2)


def ensure_peers(peers: Sequence[str] = PEERS, install: bool = True) -> Setup:
    """Make ``peers`` ready (installing what is missing unless ``install`` is false) and smoke-
    test each; print one ``skipped <peer>: <why>`` line for each that is not. Fills the module's
    setup, which ``build_cases`` reads, and returns it."""
    setup = _SETUP
    setup.peers.clear()
    try:
        setup.redis_version = ensure_redis_server(install)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        _say(f"skipped {', '.join(peers)}: {exc}")
        return setup
    candidates: dict[str, str] = {}
    for peer, version in ensure_python_peers([p for p in peers if p in PYTHON_PEERS],
                                             install).items():
        if version.startswith("error"):
            _say(f"skipped {peer}: cannot import it ({version.removeprefix('error: ')})")
        else:
            candidates[peer] = version
    if "bullmq" in peers:
        try:
            setup.node_modules, candidates["bullmq"] = ensure_bullmq(install)
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            _say(f"skipped bullmq: {exc}")
    for peer in (p for p in peers if p in candidates):
        try:
            _smoke(peer)
        except Exception as exc:  # any failure means: leave this peer out, carry on
            _say(f"skipped {peer}: it did not run ({exc})")
        else:
            setup.peers[peer] = candidates[peer]
    return setup


# ---------------------------------------------------------------------- trials: Python peers


def _python_worker(peer: str, port: int, n: int, concurrency: int) -> Child:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    return Child(f"{peer} worker", [sys.executable, "-m", "benchmarks.peers.pyqueues", peer,
                                    str(port), str(n), str(concurrency),
                                    "--timeout", str(TRIAL_TIMEOUT_S)], env)


def _shares(total: int, producers: int) -> list[int]:
    return [total // producers + (1 if p < total % producers else 0) for p in range(producers)]


async def _python_enqueue(peer: str, redis: RedisServer, total: int,
                          producers: int) -> Trial:
    producer = make_producer(peer)
    latencies: list[list[int]] = [[] for _ in range(producers)]

    async def produce(first: int, count: int, samples: list[int]) -> None:
        enqueue = producer.enqueue
        for i in range(first, first + count):
            t0 = time.perf_counter_ns()
            await enqueue(i)
            samples.append(time.perf_counter_ns() - t0)

    try:
        await producer.open(redis.port)
        shares = _shares(total, producers)
        starts = [sum(shares[:p]) for p in range(producers)]
        before = redis.mark(probe=True)
        watch = Stopwatch()
        await asyncio.gather(*(produce(starts[p], shares[p], latencies[p])
                               for p in range(producers)))
        elapsed_ns, cpu_ns = watch.read()
        after = redis.mark()
        queued = await producer.queued()
    finally:
        await producer.close()
    if queued != total:
        raise RuntimeError(f"{peer}: {queued} jobs queued after {total} enqueues")
    samples = [x for per_producer in latencies for x in per_producer]
    return Trial(total, elapsed_ns, cpu_ns, samples,
                 _redis_figures(before, after, elapsed_ns, total))


async def _python_end_to_end(peer: str, redis: RedisServer, worker: Child, total: int) -> Trial:
    producer = make_producer(peer)
    try:
        await producer.open(redis.port)  # while the worker starts
        await worker.expect_async("ready", STARTUP_TIMEOUT_S)
        before = redis.mark(probe=True)
        watch = Stopwatch()
        enqueue = producer.enqueue
        for i in range(total):
            await enqueue(i)
        enqueued_ns, _ = watch.read()
        report = await worker.expect_async("done", TRIAL_TIMEOUT_S)
        elapsed_ns, cpu_ns = watch.read()
        after = redis.mark()
    finally:
        await producer.close()
    return _end_to_end_result(peer, total, elapsed_ns, cpu_ns, enqueued_ns, report, before,
                              after)


def _end_to_end_result(peer: str, total: int, elapsed_ns: int, cpu_ns: int, enqueued_ns: int,
                       report: str, before: Mark, after: Mark) -> Trial:
    done = json.loads(report)
    if done["completed"] != total or done["failed"]:
        raise RuntimeError(f"{peer}: {done['completed']} of {total} tasks completed, "
                           f"{done['failed']} failed")
    return Trial(total, elapsed_ns, cpu_ns, (), {
        **_redis_figures(before, after, elapsed_ns, total),
        "enqueue_phase_s": enqueued_ns / 1e9,
        "worker_cpu_share": done["cpu_ns"] / elapsed_ns,
    })


# ---------------------------------------------------------------------- trials: BullMQ


def _node(mode: str, port: int, n: int, k: int) -> Child:
    node = shutil.which("node") or "node"
    modules = _SETUP.node_modules or bullmq_cache() / "node_modules"
    env = {**os.environ, "NODE_PATH": str(modules)}
    return Child(f"bullmq {mode}", [node, str(BULLMQ_DRIVER), mode, str(port), str(n), str(k)],
                 env)


def _bullmq_produce(mode: str, fsync: str, total: int, k: int) -> Trial:
    """``enqueue`` (k producers) or ``bulk`` (batches of k), timed by the driver itself."""
    with RedisServer(fsync) as redis, _node(mode, redis.port, total, k) as producer:
        producer.expect("ready", STARTUP_TIMEOUT_S)
        before = redis.mark(probe=True)
        producer.send("go")
        result = json.loads(producer.readline(TRIAL_TIMEOUT_S))
        after = redis.mark()
    if result["ops"] != total or result["queued"] != total:
        raise RuntimeError(f"bullmq: {result['queued']} jobs queued after {total} enqueues")
    elapsed_ns = int(result["elapsed_ns"])
    return Trial(total, elapsed_ns, int(result["cpu_ns"]),
                 [int(x) for x in result["latencies_ns"]],
                 _redis_figures(before, after, elapsed_ns, total))


def _bullmq_end_to_end(fsync: str, total: int, concurrency: int) -> Trial:
    with (RedisServer(fsync) as redis,
          _node("worker", redis.port, total, concurrency) as worker,
          _node("enqueue", redis.port, total, 1) as producer):
        worker.expect("ready", STARTUP_TIMEOUT_S)
        producer.expect("ready", STARTUP_TIMEOUT_S)
        before = redis.mark(probe=True)
        watch = Stopwatch()
        producer.send("go")
        report = worker.expect("done", TRIAL_TIMEOUT_S)
        elapsed_ns, _ = watch.read()
        after = redis.mark()
        produced = json.loads(producer.readline(TRIAL_TIMEOUT_S))
    return _end_to_end_result("bullmq", total, elapsed_ns, int(produced["cpu_ns"]),
                              int(produced["elapsed_ns"]), report, before, after)


# ---------------------------------------------------------------------- the trials, per peer


def enqueue_trial(peer: str, fsync: str, total: int, producers: int) -> Trial:
    """``producers`` concurrent producers share ``total`` enqueues, each awaiting its own; no
    worker runs."""
    if peer == "bullmq":
        return _bullmq_produce("enqueue", fsync, total, producers)
    with RedisServer(fsync) as redis:
        return asyncio.run(_python_enqueue(peer, redis, total, producers))


def bulk_trial(peer: str, fsync: str, total: int, batch: int) -> Trial:
    """``total`` jobs in bulk calls of ``batch`` (BullMQ ``addBulk``); no worker runs."""
    if peer != "bullmq":
        raise ValueError(f"{peer} has no bulk-enqueue API")
    return _bullmq_produce("bulk", fsync, total, batch)


def end_to_end_trial(peer: str, fsync: str, total: int, concurrency: int) -> Trial:
    """The peer's worker (its own process, ``concurrency`` jobs at a time) is started and ready;
    then one producer enqueues ``total`` no-op tasks, awaiting each; the time runs from the first
    enqueue to the worker's report of the last completion."""
    if peer == "bullmq":
        return _bullmq_end_to_end(fsync, total, concurrency)
    with (RedisServer(fsync) as redis,
          _python_worker(peer, redis.port, total, concurrency) as worker):
        return asyncio.run(_python_end_to_end(peer, redis, worker, total))


# ---------------------------------------------------------------------- cases


_LABEL_KEYS = ("producers", "batch", "concurrency")


@dataclass(frozen=True, slots=True)
class PeerCase(Case):
    """A harness ``Case`` whose label names the peer and the fsync policy."""

    @property
    def label(self) -> str:
        shown = [str(self.params["peer"]), f"fsync={self.params['fsync']}"]
        shown += [f"{k}={self.params[k]}" for k in _LABEL_KEYS if k in self.params]
        return f"{self.name}[{','.join(shown)}]"


def _peer_cases(peer: str, fsync: str, quick: bool) -> list[Case]:
    base = {"peer": peer, "fsync": fsync, "peer_version": _SETUP.peers.get(peer, "unknown"),
            "redis": _SETUP.redis_version, "task_params": "{user_id: int, template, locale}"}
    one, many = _size(N_ONE, quick), _size(N_CONCURRENT, quick)
    cases: list[Case] = [PeerCase("peer_enqueue_one_producer", {**base, "n": one, "producers": 1},
                                  partial(enqueue_trial, peer, fsync, one, 1), "enqueues/s")]
    cases += [PeerCase("peer_enqueue_concurrent", {**base, "n": many, "producers": producers},
                       partial(enqueue_trial, peer, fsync, many, producers), "enqueues/s")
              for producers in (16, 64)]
    if peer == "bullmq":
        n_bulk, batch = _size(N_BULK, quick), _size(BULK_BATCH, quick)
        cases.append(PeerCase("peer_enqueue_bulk", {**base, "n": n_bulk, "batch": batch},
                              partial(bulk_trial, peer, fsync, n_bulk, batch), "enqueues/s"))
    n_e2e = _size(N_E2E, quick)
    cases.append(PeerCase("peer_end_to_end_noop",
                          {**base, "n": n_e2e, "producers": 1, "concurrency": E2E_CONCURRENCY},
                          partial(end_to_end_trial, peer, fsync, n_e2e, E2E_CONCURRENCY),
                          "tasks/s"))
    return cases


def build_cases(quick: bool) -> list[Case]:
    """Every case of every ready peer (``ensure_peers`` decides which are; before it has run,
    all of them), both fsync policies."""
    peers = [p for p in PEERS if p in _SETUP.peers] if _SETUP.peers else list(PEERS)
    return [case for peer in peers for fsync in FSYNCS for case in _peer_cases(peer, fsync, quick)]


def _note_bulk_skips(cases: Sequence[str] | None) -> None:
    if cases and "peer_enqueue_bulk" not in cases:
        return
    without = [p for p in PYTHON_PEERS if p in _SETUP.peers]
    if without:
        _say(f"skipped peer_enqueue_bulk for {', '.join(without)}: no bulk-enqueue API "
             "(each job is its own enqueue call)")


def run(argv: Sequence[str] | None = None) -> int:
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    own.add_argument("--peer", action="append", choices=PEERS, dest="peers")
    own.add_argument("--no-install", action="store_true")
    known, rest = own.parse_known_args(argv)
    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    peek.add_argument("--case", action="append", dest="cases")
    peek.add_argument("-h", "--help", action="store_true")
    seen, _ = peek.parse_known_args(rest)
    description = ((__doc__ or "").split("\n", 1)[0] + " Also: --peer NAME (repeatable: only "
                   "these peers), --no-install (skip a missing peer instead of installing it).")
    if not seen.help:
        ensure_peers(known.peers or PEERS, install=not known.no_install)
        _note_bulk_skips(seen.cases)
        if not _SETUP.peers:
            _say("no peer is ready: nothing to measure")
            return 0
    code = main(build_cases, rest, description=description)
    _say("note: cpu = the producer's CPU share (it waits for Redis; a low share is not other "
         "load); see redis_cpu_share and worker_cpu_share in the JSON")
    return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _entry() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # clean up on kill too, as on Ctrl-C
    try:
        return run()
    except KeyboardInterrupt:
        _say("interrupted: every redis-server and worker this run started has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(_entry())
