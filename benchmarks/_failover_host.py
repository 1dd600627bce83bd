"""The failover benchmark's function host: ``cloudqueue host`` for several apps in one process.

``python -m benchmarks._failover_host CONFIG.json`` where the file holds ``{"apps": [[appId,
appKey, masterKey], ...], "queue_url": ..., "ports_file": ...}``. A function host checks that
a call carries its one app's id and keys (``adapters/function_host.py``), so ``cloudqueue host``
serves one app; this process runs ``cloudqueue.host.running`` (exactly what ``cloudqueue host
--functions benchmarks._failover_functions --port 0`` runs) once per app, each on its own free
port of 127.0.0.1, in one event loop, and writes ``{appId: port}`` to ``ports_file`` once all
listen. The function is ``benchmarks._failover_functions.record`` (its record file from
``$CLOUDQUEUE_BENCH_RECORD``). Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

from cloudqueue.adapters.auth import AppKeys
from cloudqueue.host import HostConfig, running

MODULE = "benchmarks._failover_functions"


async def serve(config: dict[str, object]) -> None:
    apps = config["apps"]
    assert isinstance(apps, list)
    ports: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        for app_id, app_key, master_key in apps:
            host = HostConfig(AppKeys(app_id, app_key, master_key), (MODULE,),
                              str(config["queue_url"]), "127.0.0.1", 0,
                              shutdown_grace_ms=1_000)
            ports[app_id] = (await stack.enter_async_context(running(host))).port
        target = Path(str(config["ports_file"]))
        partial = target.with_suffix(".partial")
        partial.write_text(json.dumps(ports))
        os.replace(partial, target)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    config = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
