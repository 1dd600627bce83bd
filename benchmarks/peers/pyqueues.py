"""The Python peers (arq, SAQ, taskiq with taskiq-redis) behind one small interface.

*Producers* run in the benchmark's own process: ``make_producer(peer)`` gives an object with
``open(port)``, ``enqueue(i)``, ``queued()`` and ``close()``. *Workers* run in a process of their
own::

    python -m benchmarks.peers.pyqueues PEER PORT N CONCURRENCY [--timeout S]

prints ``ready`` once the worker consumes, then ``done {json}`` the moment the N-th task has
completed (the peer has recorded it: arq's ``after_job_end``, SAQ's ``after_process``, taskiq
after the acknowledgement) and exits. Every peer enqueues the same no-op task,
``send_email(user_id=i, template="welcome", locale="en")``. The peers are imported lazily, so this
module imports without them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

HOST = "127.0.0.1"
TASK = "send_email"
PEERS = ("arq", "saq", "taskiq")
# arq sleeps up to poll_delay between two polls of its queue (each poll starts at most 100 jobs):
# its default 0.5 s caps a worker at ~200 tasks/s, so the benchmark polls every 50 ms.
ARQ_POLL_DELAY_S = 0.05
ARQ_QUEUE = "arq:queue"  # arq's default queue name
SHUTDOWN_TIMEOUT_S = 10.0


def task_params(i: int) -> dict[str, Any]:
    """The same small params as ``bench_log``'s tasks."""
    return {"user_id": i, "template": "welcome", "locale": "en"}


def _redis_url(port: int) -> str:
    return f"redis://{HOST}:{port}"


# ---------------------------------------------------------------------- the no-op tasks


async def _arq_send_email(ctx: dict[str, Any], user_id: int, template: str, locale: str) -> None:
    return None


async def _saq_send_email(ctx: Any, *, user_id: int, template: str, locale: str) -> None:
    return None


async def _taskiq_send_email(user_id: int, template: str, locale: str) -> None:
    return None


# ---------------------------------------------------------------------- producers


class Producer(Protocol):
    async def open(self, port: int) -> None: ...

    async def enqueue(self, i: int) -> None: ...

    async def queued(self) -> int: ...

    async def close(self) -> None: ...


class ArqProducer:
    """``ArqRedis.enqueue_job``: a WATCH / MULTI transaction (job key + queue sorted set)."""

    def __init__(self) -> None:
        self._pool: Any = None

    async def open(self, port: int) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        self._pool = await create_pool(RedisSettings(host=HOST, port=port))
        await self._pool.ping()

    async def enqueue(self, i: int) -> None:
        if await self._pool.enqueue_job(TASK, **task_params(i)) is None:
            raise RuntimeError("arq did not enqueue a job")

    async def queued(self) -> int:
        return int(await self._pool.zcard(ARQ_QUEUE))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


class SaqProducer:
    """``Queue.enqueue``: one Lua script (job key, incomplete sorted set, queued list)."""

    def __init__(self) -> None:
        self._queue: Any = None

    async def open(self, port: int) -> None:
        from saq import Queue

        self._queue = Queue.from_url(_redis_url(port))
        await self._queue.connect()
        await self._queue.redis.ping()

    async def enqueue(self, i: int) -> None:
        if await self._queue.enqueue(TASK, **task_params(i)) is None:
            raise RuntimeError("saq did not enqueue a job")

    async def queued(self) -> int:
        return int(await self._queue.count("queued"))

    async def close(self) -> None:
        if self._queue is not None:
            await self._queue.disconnect()


def _taskiq_broker(port: int) -> tuple[Any, Any]:
    """A ``RedisStreamBroker`` (XADD; consumer group with XACK: at-least-once) and the task."""
    from taskiq_redis import RedisStreamBroker

    broker = RedisStreamBroker(_redis_url(port))
    task = broker.register_task(_taskiq_send_email, task_name=TASK)
    return broker, task


class TaskiqProducer:
    """``task.kiq(...)`` on taskiq-redis's ``RedisStreamBroker``: one XADD."""

    def __init__(self) -> None:
        self._broker: Any = None
        self._task: Any = None

    async def open(self, port: int) -> None:
        self._broker, self._task = _taskiq_broker(port)
        await self._broker.startup()

    async def enqueue(self, i: int) -> None:
        await self._task.kiq(**task_params(i))

    async def queued(self) -> int:
        from redis.asyncio import Redis

        async with Redis(connection_pool=self._broker.connection_pool) as redis:
            return int(await redis.xlen(self._broker.queue_name))

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()


def make_producer(peer: str) -> Producer:
    producers: dict[str, Callable[[], Producer]] = {
        "arq": ArqProducer, "saq": SaqProducer, "taskiq": TaskiqProducer}
    return producers[peer]()


def import_check(peer: str) -> str:
    """Import the peer's modules; return its distribution's version (ImportError if missing)."""
    from importlib.metadata import version

    if peer == "arq":
        import arq.worker  # noqa: F401
    elif peer == "saq":
        import saq.queue.redis  # noqa: F401
    elif peer == "taskiq":
        import taskiq.api  # noqa: F401
        import taskiq_redis  # noqa: F401

        return f"{version('taskiq')} (taskiq-redis {version('taskiq-redis')})"
    else:
        raise ValueError(f"unknown peer {peer!r}")
    return version(peer)


# ---------------------------------------------------------------------- workers


class Completion:
    """Counts finished tasks; prints ``done {json}`` at once when the n-th one is recorded."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.completed = 0
        self.failed = 0
        self.done = asyncio.Event()
        self._cpu0 = time.process_time_ns()

    def ready(self) -> None:
        self._cpu0 = time.process_time_ns()
        print("ready", flush=True)

    def record(self, ok: bool = True) -> None:
        self.completed += 1
        self.failed += 0 if ok else 1
        if self.completed == self.n:
            report = {"completed": self.completed, "failed": self.failed,
                      "cpu_ns": time.process_time_ns() - self._cpu0}
            print("done " + json.dumps(report), flush=True)
            self.done.set()


async def _until_done(done: Completion, worker: asyncio.Task[Any]) -> None:
    """Wait for the n-th completion; raise if the worker's own task ends first."""
    waiter = asyncio.ensure_future(done.done.wait())
    await asyncio.wait({waiter, worker}, return_when=asyncio.FIRST_COMPLETED)
    if not done.done.is_set():
        waiter.cancel()
        worker.result()  # raises the worker's exception, if any
        raise RuntimeError(f"the worker stopped after {done.completed} of {done.n} tasks")


async def _stop(worker: asyncio.Task[Any], close: Callable[[], Awaitable[Any]]) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(close(), SHUTDOWN_TIMEOUT_S)
    if not worker.done():
        worker.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await worker


async def run_arq_worker(port: int, done: Completion, concurrency: int) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    async def on_startup(ctx: dict[str, Any]) -> None:
        done.ready()

    async def after_job_end(ctx: dict[str, Any]) -> None:  # after the result is recorded
        done.record()

    worker = Worker(functions=[func(_arq_send_email, name=TASK)],
                    redis_settings=RedisSettings(host=HOST, port=port), max_jobs=concurrency,
                    poll_delay=ARQ_POLL_DELAY_S, handle_signals=False, on_startup=on_startup,
                    after_job_end=after_job_end)
    main = asyncio.create_task(worker.main())
    try:
        await _until_done(done, main)
        if worker.jobs_failed:
            raise RuntimeError(f"arq: {worker.jobs_failed} job(s) failed")
    finally:
        await _stop(main, worker.close)


async def run_saq_worker(port: int, done: Completion, concurrency: int) -> None:
    from saq import Queue, Worker
    from saq.job import Status

    queue = Queue.from_url(_redis_url(port))

    async def startup(ctx: Any) -> None:
        done.ready()

    async def after_process(ctx: Any) -> None:  # after job.finish(...)
        job = ctx.get("job")
        done.record(job is not None and job.status == Status.COMPLETE)

    await queue.connect()
    worker = Worker(queue, functions=[(TASK, _saq_send_email)], concurrency=concurrency,
                    startup=startup, after_process=after_process)
    main = asyncio.create_task(worker.start())
    try:
        await _until_done(done, main)
    finally:
        await _stop(main, worker.stop)
        with contextlib.suppress(Exception):
            await queue.disconnect()


async def run_taskiq_worker(port: int, done: Completion, concurrency: int) -> None:
    from taskiq import AckableMessage, TaskiqMessage, TaskiqMiddleware, TaskiqResult
    from taskiq.api import run_receiver_task
    from taskiq.receiver import Receiver

    broker, _ = _taskiq_broker(port)

    class CountFailures(TaskiqMiddleware):
        def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
            if result.is_err:
                done.failed += 1

    class CountingReceiver(Receiver):
        async def callback(self, message: bytes | AckableMessage,
                           raise_err: bool = False) -> None:
            await super().callback(message, raise_err)  # runs, then acknowledges (XACK)
            done.record()

    broker.add_middlewares(CountFailures())
    broker.is_worker_process = True
    await broker.startup()  # creates the consumer group before the producer's first XADD
    main = asyncio.create_task(run_receiver_task(broker, receiver_cls=CountingReceiver,
                                                 max_async_tasks=concurrency))
    done.ready()
    try:
        await _until_done(done, main)
    finally:
        main.cancel()
        await _stop(main, broker.shutdown)


WORKERS: dict[str, Callable[[int, Completion, int], Awaitable[None]]] = {
    "arq": run_arq_worker, "saq": run_saq_worker, "taskiq": run_taskiq_worker}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one peer's worker until N tasks are done.")
    parser.add_argument("peer", choices=PEERS)
    parser.add_argument("port", type=int)
    parser.add_argument("n", type=int)
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="give up after this many seconds (default 300)")
    args = parser.parse_args(argv)

    async def run() -> None:
        done = Completion(args.n)
        await asyncio.wait_for(WORKERS[args.peer](args.port, done, args.concurrency),
                               args.timeout)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
