"""A progress bar in the terminal for any task, from the queue's event stream.

    python -m examples.template_install.watch UNIQUE_ID --queue http://127.0.0.1:3200 \\
        --app-id APP --app-key KEY

On a terminal the bar redraws in place; otherwise (a pipe, a log) it prints one line per
update. Exits 0 when the task succeeds, 1 when it fails or is cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import aclosing
from typing import TextIO

from cloudqueue.adapters.client import QueueClient
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import TaskInfo

WIDTH = 32


def render(info: TaskInfo, width: int = WIDTH) -> str:
    """One line: ``[#########...........]  42% importing ... · slice 12``."""
    progress = info.progress or {}
    percent = 100.0 if info.state is TaskState.SUCCESS else float(progress.get("percent", 0))
    filled = round(width * percent / 100)
    bar = "#" * filled + "." * (width - filled)
    if info.state.is_final:
        what = info.state.value if info.state is not TaskState.FAILED else f"failed: {info.error}"
    else:
        what = str(progress.get("message") or info.state.value)
    slices = f" · slice {info.slices}" if info.slices else ""
    return f"[{bar}] {percent:5.1f}% {what}{slices}"


async def show_progress(queue: QueueClient, unique_id: str, out: TextIO = sys.stderr,
                        tty: bool | None = None) -> TaskInfo:
    """Draw the task's progress until it is final; return its final info."""
    tty = out.isatty() if tty is None else tty
    last = ""
    final: TaskInfo | None = None
    async with aclosing(queue.watch(unique_id)) as updates:
        async for _, info in updates:
            line = render(info)
            if tty:
                out.write("\r" + line.ljust(len(last)))
            elif line != last:
                out.write(line + "\n")
            out.flush()
            last, final = line, info
    if tty:
        out.write("\n")
    if final is None or not final.state.is_final:  # watch() ends only at a final state
        raise RuntimeError(f"the event stream of {unique_id} ended before the task finished")
    return final


async def _main(args: argparse.Namespace) -> int:
    async with QueueClient(args.queue, args.app_id, app_key=args.app_key,
                           master_key=args.master_key) as queue:
        info = await show_progress(queue, args.unique_id)
    return 0 if info.state is TaskState.SUCCESS else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("unique_id")
    parser.add_argument("--queue", default="http://127.0.0.1:3200",
                        help="the queue's base URL (default: the template example's queue)")
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--app-key", help="the app key (enough to read a task)")
    parser.add_argument("--master-key")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.app_key or args.master_key):
        parser.error("give --app-key or --master-key")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
