"""The burst's processes: ``cloudqueue serve`` and the function host, each on its own free port on
127.0.0.1, always stopped again; and CPU accounting for them from ``/proc`` (Linux; elsewhere the
CPU figures are absent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks._harness import REPO_ROOT, stop_process

_READY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class Started:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def started(argv: Sequence[str], env: Mapping[str, str], port: int, ready_path: str,
            log_path: Path) -> Iterator[Started]:
    """Run ``argv`` (its output to ``log_path``) until it answers 200 on ``ready_path``; stop it
    (SIGTERM, then SIGKILL after 30 s) when the block ends, however it ends."""
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, *argv],
                                   env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
                                   cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    proc = Started(process, base, log_path)
    try:
        if not asyncio.run(_wait_ready(base + ready_path, process)):
            raise RuntimeError(f"{argv[:2]} did not become ready on {base}:\n{proc.log_tail()}")
        yield proc
    finally:
        stop_process(process, _STOP_TIMEOUT_S)


async def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return True
            await asyncio.sleep(0.05)
    return False


# ---------------------------------------------------------------------- CPU from /proc


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads) so far; None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine spent not idle (all cores) so far; None without /proc."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _CLOCK_TICKS


class CpuMeter:
    """CPU seconds used by named processes and by the machine between ``start`` and ``stop``."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float | None] = {}
        self._wall0 = 0.0
        self.shares: dict[str, float] = {}

    def _sample(self) -> dict[str, float | None]:
        sample = {name: process_cpu_s(pid) for name, pid in self.pids.items()}
        sample["machine"] = machine_busy_s()
        return sample

    def start(self) -> None:
        self._start = self._sample()
        self._wall0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Cores used on average over the window, per process, by the machine and by the rest
        (machine minus the named processes: other load on the machine)."""
        end, wall = self._sample(), time.monotonic() - self._wall0
        shares: dict[str, float] = {}
        for name, before in self._start.items():
            after = end.get(name)
            if before is not None and after is not None and wall > 0:
                shares[name] = round((after - before) / wall, 3)
        if "machine" in shares and all(name in shares for name in self.pids):
            shares["others"] = round(shares["machine"] - sum(shares[n] for n in self.pids), 3)
        self.shares = shares
        return shares
