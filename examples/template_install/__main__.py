"""Run the template-install story: ``python -m examples.template_install``.

Starts the queue and the function host on 127.0.0.1, queues the install, prints the address of
the live progress page, and draws a progress bar here until the install is done. Everything
lives under ``--data`` (default ``data/template-install``); run it again and it installs again
(the import is keyed by objectId, the files are replaced).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from cloudqueue.engine.core.states import TaskState

from .demo import Demo, PortInUse
from .watch import show_progress


async def run(args: argparse.Namespace) -> int:
    async with Demo(args.data, queue_port=args.queue_port, host_port=args.host_port) as demo, \
            demo.client() as queue:
        started = time.monotonic()
        unique_id = await demo.enqueue_install(queue, budget_ms=args.budget_ms,
                                               pause_ms=args.pause_ms)
        print(f"queued install {unique_id}", flush=True)
        print(f"progress page: {await demo.page_url(queue, unique_id)}", flush=True)
        print(f"or in another terminal: python -m examples.template_install.watch {unique_id} "
              f"--queue {demo.queue_url} --app-id {demo.keys.app_id} "
              f"--app-key {demo.keys.app_key}", flush=True)
        info = await show_progress(queue, unique_id, out=sys.stdout)
        elapsed = time.monotonic() - started
        print(json.dumps({"uniqueId": unique_id, "status": info.status, "slices": info.slices,
                          "attempt": info.attempt, "seconds": round(elapsed, 2),
                          "result": info.result, "error": info.error}), flush=True)
        if args.hold:
            print("serving the page until Ctrl-C", flush=True)
            await asyncio.Event().wait()
    return 0 if info.state is TaskState.SUCCESS else 1


# Ports of their own: the Quick start's server (`scripts/run.sh`, `cloudqueue serve`) listens on
# 3100 and `cloudqueue host` on 3000, so the example runs beside them.
QUEUE_PORT = 3200
HOST_PORT = 3201


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/template-install"))
    parser.add_argument("--queue-port", type=int, default=QUEUE_PORT,
                        help=f"the queue's port (default {QUEUE_PORT}; 0: any free port)")
    parser.add_argument("--host-port", type=int, default=HOST_PORT,
                        help=f"the function host's port (default {HOST_PORT}; 0: any free port)")
    parser.add_argument("--budget-ms", type=int, default=50,
                        help="work per slice, ms (each slice's timeout is 2,000 ms); 0: one "
                             "unit of work a slice")
    parser.add_argument("--pause-ms", type=int, default=150,
                        help="a pause at each slice's start, to watch it go (0: full speed)")
    parser.add_argument("--hold", action="store_true",
                        help="keep serving the page after the install is done")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except PortInUse as exc:
        print(f"python -m examples.template_install: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
