"""A queue process for the kill -9 test (``tests/runtime/test_kill9.py``); not a test itself.

Usage::

    python tests/runtime/crash_child.py DATA_DIR RUNS_FILE SEED --life N --acked FILE
                                        [--drain] [--rate R] [--producers P]

It opens an ``Engine`` on DATA_DIR (replaying the log), checks that every uniqueId listed in
``--acked`` (one a line: the ids acknowledged by earlier lives) is present, and then either

* **burst** (default): P producer tasks enqueue a seeded mix of ``atLeastOnce`` and ``atMostOnce``
  tasks at R enqueues/s overall, until the parent kills the process with SIGKILL; or
* **drain** (``--drain``): enqueue nothing, run until every task is final and durable, close the
  engine cleanly and exit 0.

Every run of the task function appends ``"<uid> <attempt>\\n"`` to RUNS_FILE with one
``os.write`` on an ``O_APPEND`` descriptor, as the first thing the function does (before any
``await``), so every invocation is counted. The line is in the kernel's page cache once
``write`` returns, so SIGKILL cannot lose it (only a power cut could, which this test does not
simulate).

Standard output, one line each, flushed at once:

* ``CHECK <present> <missing>``, then ``MISSING <uid>`` for up to 20 missing ids;
* ``READY <tasks> <states> <recovery summary>`` once the engine runs;
* ``ACK <uid> <mode> <monotonic_ns>`` right after ``enqueue`` returned for ``uid``;
* ``DRAINED <tasks>`` (drain mode) once every task is final.

A uniqueId is ``k<life>p<producer>n<counter><L|M>``: the process's life number makes it unique
across restarts, the last letter says its delivery mode (L = atLeastOnce, M = atMostOnce).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cloudqueue import Engine, RunContext, UnknownTaskError  # noqa: E402

KEEP_RESULT_MS = 3_600_000  # nothing may expire while the test runs
MODES = {"L": "atLeastOnce", "M": "atMostOnce"}
PRODUCE_LIMIT_S = 60.0  # a burst child the parent forgot to kill stops on its own
DRAIN_LIMIT_S = 120.0


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("runs_file", type=Path)
    parser.add_argument("seed", type=int)
    parser.add_argument("--life", type=int, required=True)
    parser.add_argument("--acked", type=Path, required=True)
    parser.add_argument("--drain", action="store_true")
    parser.add_argument("--rate", type=float, default=2000.0, help="enqueues/s, all producers")
    parser.add_argument("--producers", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--segment-bytes", type=int, default=128 * 1024)
    parser.add_argument("--compact-bytes", type=int, default=1 << 40, help="default: never")
    return parser.parse_args(argv)


def define_work(engine: Engine, runs_fd: int) -> None:
    async def work(params: Any, ctx: RunContext) -> int:
        # First, before any await: every invocation is on record, even if killed right after.
        os.write(runs_fd, f"{ctx.unique_id} {ctx.attempt}\n".encode())
        pause_ms = params.get("pause_ms", 0)
        if pause_ms:  # real time: the parent kills this process -9 at a moment of its choosing
            await asyncio.sleep(pause_ms / 1000)
        return int(ctx.attempt)

    engine.define("work")(work)


async def check_acked(engine: Engine, acked_file: Path) -> None:
    ids = acked_file.read_text().split() if acked_file.exists() else []
    missing = []
    for uid in ids:
        try:
            await engine.get_task_info(uid)
        except UnknownTaskError:
            missing.append(uid)
    say(f"CHECK {len(ids) - len(missing)} {len(missing)}")
    for uid in missing[:20]:
        say(f"MISSING {uid}")


def state_counts(engine: Engine) -> str:
    counts = collections.Counter(task.state.value for task in engine.core.tasks())
    return ",".join(f"{state}={n}" for state, n in sorted(counts.items())) or "empty"


async def produce(engine: Engine, args: argparse.Namespace, producer: int,
                  started: float) -> None:
    """Enqueue at ``rate / producers`` per second, catching up at full speed when behind."""
    rng = random.Random(f"{args.seed}:{args.life}:{producer}")
    interval = args.producers / args.rate
    next_at = started + producer * interval / args.producers
    limit = int(args.rate / args.producers * PRODUCE_LIMIT_S)
    for counter in range(limit):
        delay = next_at - time.monotonic()
        if delay > 0:  # a real producer's rate, for the parent's kill -9 to land mid-burst
            await asyncio.sleep(delay)
        next_at += interval
        letter = "M" if rng.random() < 0.5 else "L"
        uid = f"k{args.life}p{producer}n{counter}{letter}"
        pause_ms = rng.choice((0, 0, 0, 1, 3))
        await engine.enqueue(
            "work", {"pause_ms": pause_ms, "pad": "x" * rng.randrange(40)},
            unique_id=uid, delivery_mode=MODES[letter], attempts=2, backoff=100,
            timeout=60_000, keep_result=KEEP_RESULT_MS)
        say(f"ACK {uid} {MODES[letter]} {time.monotonic_ns()}")


async def burst(engine: Engine, args: argparse.Namespace) -> int:
    started = time.monotonic()
    await asyncio.gather(*(produce(engine, args, p, started) for p in range(args.producers)))
    say("PRODUCED-ALL")  # the parent should have killed us long before
    return 3


async def drain(engine: Engine) -> int:
    deadline = time.monotonic() + DRAIN_LIMIT_S
    while time.monotonic() < deadline:
        tasks = engine.core.tasks()
        if engine.idle and all(task.state.is_final for task in tasks):
            say(f"DRAINED {len(tasks)}")
            return 0
        await asyncio.sleep(0.05)  # a real process draining its real log: polled, not clocked
    say(f"STUCK {state_counts(engine)}")
    return 4


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    runs_fd = os.open(args.runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    engine = Engine(data_dir=args.data_dir, concurrency=args.concurrency,
                    segment_bytes=args.segment_bytes, compact_bytes=args.compact_bytes)
    define_work(engine, runs_fd)
    await engine.start()
    try:
        await check_acked(engine, args.acked)
        summary = engine.recovery.summary() if engine.recovery is not None else "-"
        say(f"READY {len(engine.core.tasks())} {state_counts(engine)} {summary}")
        code = await (drain(engine) if args.drain else burst(engine, args))
    finally:
        await engine.close(grace_ms=1_000)
        os.close(runs_fd)
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
