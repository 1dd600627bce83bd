"""The failover benchmark's cloud function: ``record`` notes every invocation and returns at once.

Each call appends one line ``<uniqueId> <attempt> <monotonic_ns>\\n`` to the file named by
``$CLOUDQUEUE_BENCH_RECORD`` with a single ``write`` on a descriptor opened ``O_APPEND`` (one
line per call, never interleaved with another process's lines), before it returns. The file
is the benchmark's ground truth of what the function hosts were asked to run: an atMostOnce
task whose uniqueId appears twice was invoked twice.

``time.monotonic_ns`` is CLOCK_MONOTONIC on Linux, one clock for every process on the machine,
so the benchmark compares these times with the moment it killed a node.
"""

from __future__ import annotations

import os
import time
from typing import Any

import cloudqueue

RECORD_ENV = "CLOUDQUEUE_BENCH_RECORD"
_fd: int | None = None


def _record_fd() -> int:
    global _fd
    if _fd is None:
        _fd = os.open(os.environ[RECORD_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return _fd


@cloudqueue.define
async def record(params: Any, run: Any) -> None:
    line = f"{run.unique_id} {run.attempt} {time.monotonic_ns()}\n"
    os.write(_record_fd(), line.encode())
