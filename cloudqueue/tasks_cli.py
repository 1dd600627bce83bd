"""``cloudqueue tasks`` and ``cloudqueue apps``: a running server's tasks and its app's dispatch.

::

    cloudqueue tasks enqueue FUNCTION [--params JSON] [--unique-id ID] [--delay MS]
                             [--attempts N] [--backoff MS] [--timeout MS] [--keep-result MS]
                             [--priority N] [--delivery-mode M]
    cloudqueue tasks show ID
    cloudqueue tasks list [--state S | --status S] [--limit N]
    cloudqueue tasks wait ID [--timeout MS] [--quiet]
    cloudqueue tasks cancel|retry ID
    cloudqueue tasks cancel|retry|purge (FILTER... | --all) [--dry-run] [--limit N]
    cloudqueue tasks run-now ID
    cloudqueue apps pause|resume|status
    cloudqueue apps audit [--limit N]

FILTER: ``--state S`` (repeatable), ``--function F``, ``--created-from TIME``, ``--created-to
TIME`` (ISO-8601 with a zone, or epoch ms); ``--all`` takes every task the action applies to.

Credentials as ``cloudqueue cron`` finds them (``cloudqueue.cli_connection``), plus the operator
token (``--admin-token``, ``$CLOUDQUEUE_ADMIN_TOKEN``, or the development server's). Actions are
logged with ``via`` ``cli`` in the app's audit list. Output is for people; ``--json`` prints the
server's JSON answer instead. ``tasks wait`` draws the task's progress on stderr from its live
event stream (a bar redrawn in place on a terminal, a line per change otherwise).

Exit status: 0 done (``wait``: the task succeeded); 1 the server refused (its message on
stderr), or the task ``wait`` waited for failed or was cancelled; 2 a usage error (bad arguments,
no credentials); 3 the server could not be reached (or its event stream broke); 4 ``wait``'s
``--timeout`` passed first; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from cloudqueue.cli_connection import UsageError, add_connection_options, find_connection
from cloudqueue.engine.core.actions import MAX_AUDIT, MAX_BULK, BulkAction, bulk_filter
from cloudqueue.engine.core.errors import (
    ConfigError,
    EngineError,
    QueueUnavailableError,
    ValidationError,
)
from cloudqueue.engine.core.options import parse_options
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import TaskInfo

if TYPE_CHECKING:
    from cloudqueue.adapters.client import QueueClient

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_TIMEOUT", "EXIT_UNREACHABLE", "EXIT_USAGE",
           "add_parsers", "main", "render_progress", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 0, 1, 2, 3, 4
VIA = "cli"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATES = tuple(state.value for state in TaskState)
# (Python option name, argparse dest, metavar, help): enqueue's options
_OPTIONS = (("unique_id", "unique_id", "ID", "the task's id (default a random UUID)"),
            ("delay", "delay", "MS", "wait this long before the first run"),
            ("attempts", "attempts", "N", "retries (runs = N + 1)"),
            ("backoff", "backoff", "MS", "wait between a failed run and the next"),
            ("timeout", "timeout", "MS", "bound on each run"),
            ("keep_result", "keep_result", "MS", "keep the outcome this long"),
            ("priority", "priority", "N", "lower starts first (default the enqueue time)"),
            ("delivery_mode", "delivery_mode", "MODE", "atLeastOnce (default) or atMostOnce"))
_PAST = {"cancel": "cancelled", "retry": "retried", "purge": "purged"}


class Failed(Exception):
    """The command ran and its outcome is a failure (exit status 1): a task ``wait`` waited
    for did not succeed."""


# ---------------------------------------------------------------------------- the parsers


def _json_arg(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc})") from None


def _time_arg(value: str) -> int:
    """An ISO-8601 time with a zone, or epoch ms, as epoch ms."""
    if value.isascii() and value.isdigit() and len(value) <= 15:
        return int(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time with a zone (e.g. 2024-01-01T00:00:00Z) or epoch ms, "
            f"got {value!r}")
    delta = when - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def _whole(least: int, most: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if text.isascii() and text.isdigit() and len(text) <= 15 and least <= int(text) <= most:
            return int(text)
        raise argparse.ArgumentTypeError(f"expected a whole number from {least} to {most}, "
                                         f"got {text!r}")
    return parse


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    add_connection_options(parent, token=True)
    parent.add_argument("--json", action="store_true", help="print the server's JSON answer")
    return parent


def _add_filter(parser: argparse.ArgumentParser, action: str) -> None:
    found = parser.add_argument_group(
        "filter (instead of ID)", f"{action} the tasks these take, oldest first, in one "
                                  "request (at most --limit)")
    found.add_argument("--state", action="append", choices=_STATES, metavar="STATE",
                       help="a state (repeatable; default: every state it applies to)")
    found.add_argument("--function", help="the tasks of this function")
    found.add_argument("--created-from", type=_time_arg, metavar="TIME",
                       help="created at or after TIME (ISO-8601 with a zone, or epoch ms)")
    found.add_argument("--created-to", type=_time_arg, metavar="TIME",
                       help="created before TIME")
    found.add_argument("--all", action="store_true",
                       help=f"every task {action} applies to (no filter)")
    found.add_argument("--dry-run", action="store_true",
                       help="change nothing: count the tasks it would take")
    found.add_argument("--limit", type=_whole(1, MAX_BULK), default=MAX_BULK,
                       help=f"at most this many tasks (1-{MAX_BULK}, the default)")


def _add_tasks(commands: Any, common: argparse.ArgumentParser) -> None:
    tasks = commands.add_parser(
        "tasks", help="enqueue, show, list, wait for, cancel, retry, run now or purge tasks",
        description="A running server's tasks (exit status: 0 done, 1 refused or the task "
                    "failed, 2 usage, 3 unreachable, 4 wait timed out).")
    actions = tasks.add_subparsers(dest="action", required=True, metavar="ACTION")
    enqueue = actions.add_parser("enqueue", parents=[common], help="queue a task; print its id")
    enqueue.add_argument("function")
    enqueue.add_argument("--params", type=_json_arg, metavar="JSON", help="its params ({})")
    for _, dest, metavar, text in _OPTIONS:
        kind = str if dest in ("unique_id", "delivery_mode") else int
        enqueue.add_argument(f"--{dest.replace('_', '-')}", dest=dest, type=kind,
                             metavar=metavar, help=text)
    enqueue.set_defaults(run=_enqueue)
    show = actions.add_parser("show", parents=[common], help="one task's info")
    show.add_argument("unique_id", metavar="ID")
    show.set_defaults(run=_show)
    listing = actions.add_parser("list", parents=[common], help="the newest tasks")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--state", choices=_STATES, help="in this detailed state")
    which.add_argument("--status", choices=("queued", "success", "failed"),
                       help="in LeanCloud's status (queued: every unfinished task)")
    listing.add_argument("--function", help="the tasks of this function")
    listing.add_argument("--created-from", type=_time_arg, metavar="TIME",
                         help="created at or after TIME (ISO-8601 with a zone, or epoch ms)")
    listing.add_argument("--created-to", type=_time_arg, metavar="TIME",
                         help="created before TIME")
    listing.add_argument("--limit", type=_whole(1, 1000), default=20, help="1-1000 (20)")
    listing.add_argument("--cursor", metavar="CURSOR",
                         help="the page after the one that printed this cursor (same filter)")
    listing.set_defaults(run=_list)
    wait = actions.add_parser(
        "wait", parents=[common], help="draw a task's progress until it is final",
        description="Follow the task's live events, drawing its progress on stderr, until it "
                    "is final: exit 0 if it succeeded, 1 if it failed or was cancelled, 4 if "
                    "--timeout passed first.")
    wait.add_argument("unique_id", metavar="ID")
    wait.add_argument("--timeout", type=_whole(1, 10**12), metavar="MS",
                      help="give up after MS (default: no limit)")
    wait.add_argument("--quiet", action="store_true", help="no progress bar")
    wait.set_defaults(run=_wait)
    for action, text in (("cancel", "cancel a queued or retry-waiting task, or many"),
                         ("retry", "run a failed or cancelled task again now, or many"),
                         ("purge", "forget finished tasks (their ids are free again)")):
        one = actions.add_parser(action, parents=[common], help=text)
        if action != "purge":
            one.add_argument("unique_id", metavar="ID", nargs="?")
        _add_filter(one, action)
        one.set_defaults(run=_change)
    now = actions.add_parser("run-now", parents=[common],
                             help="start a delayed or retry-waiting task as soon as a slot is "
                                  "free")
    now.add_argument("unique_id", metavar="ID")
    now.set_defaults(run=_run_now)


def _add_apps(commands: Any, common: argparse.ArgumentParser) -> None:
    apps = commands.add_parser(
        "apps", help="pause or resume an app's dispatch; its status and audit list",
        description="An app's dispatch on a running server (exit status as `cloudqueue tasks`).")
    actions = apps.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("pause", "no run starts until resume (enqueues are still taken)"),
                         ("resume", "runs start again"),
                         ("status", "whether dispatch is paused")):
        one = actions.add_parser(action, parents=[common], help=text)
        one.set_defaults(run=_dispatch)
    audit = actions.add_parser("audit", parents=[common], help="the last operator actions")
    audit.add_argument("--limit", type=_whole(1, MAX_AUDIT), default=20,
                       help=f"1-{MAX_AUDIT} (20)")
    audit.set_defaults(run=_audit)


def add_parsers(commands: Any) -> None:
    """Register ``tasks`` and ``apps`` on ``cloudqueue``'s subcommands."""
    common = _common()
    _add_tasks(commands, common)
    _add_apps(commands, common)
    for name in ("tasks", "apps"):
        commands.choices[name].set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudqueue")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(build_parser().parse_args(argv))
    except SystemExit as exc:  # argparse: a usage error is 2
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


# ---------------------------------------------------------------------------- running


Action = Callable[[Any, argparse.Namespace], Awaitable[Any]]


# what stops a command, most specific first, and the exit status it gives
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (UsageError, EXIT_USAGE), (QueueUnavailableError, EXIT_UNREACHABLE),
    (TimeoutError, EXIT_TIMEOUT), (Failed, EXIT_FAILED), (EngineError, EXIT_FAILED))
_REFUSALS = tuple(kind for kind, _ in _EXIT_CODES)


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``tasks`` or ``apps`` command; the exit status. Every failure is one
    line on stderr, never a traceback."""
    name = f"cloudqueue {args.command} {args.action}"
    try:
        return asyncio.run(_remote(args))
    except _REFUSALS as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return next(code for kind, code in _EXIT_CODES if isinstance(exc, kind))
    except KeyboardInterrupt:
        return 130


async def _remote(args: argparse.Namespace) -> int:
    from cloudqueue.adapters.client import QueueClient

    found = find_connection(args, token=True)
    try:
        client = QueueClient(found.url, found.app_id, master_key=found.master_key,
                             admin_token=found.admin_token, via=VIA)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    action: Action = args.run
    async with client as queue:
        answer = await action(queue, args)
    print(answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False))
    return EXIT_OK


def _out(args: argparse.Namespace, wire: Any, text: Callable[[Any], str]) -> Any:
    """The server's answer as JSON (``--json``), else as ``text`` makes it for people."""
    return wire if args.json else text(wire)


# ---------------------------------------------------------------------------- the actions


async def _enqueue(queue: Any, args: argparse.Namespace) -> Any:
    options = {name: getattr(args, dest) for name, dest, _, _ in _OPTIONS
               if getattr(args, dest) is not None}
    try:  # what the client checks before sending: a usage error, not the server's refusal
        parse_options(options, wire=False)
    except ValidationError as exc:
        raise UsageError(str(exc)) from None
    unique_id = await queue.enqueue(args.function, args.params, **options)
    return _out(args, {"uniqueId": unique_id}, lambda wire: wire["uniqueId"])


async def _show(queue: Any, args: argparse.Namespace) -> Any:
    return _out(args, (await queue.get_task_info(args.unique_id)).to_wire(), describe)


async def _list(queue: Any, args: argparse.Namespace) -> Any:
    page = await queue.list_tasks(args.state, args.limit, status=args.status,
                                  function=args.function, created_from=args.created_from,
                                  created_to=args.created_to, cursor=args.cursor)
    wire: dict[str, Any] = {"results": [info.to_wire() for info in page.tasks]}
    if page.total is not None:
        wire["count"] = page.total
    if page.next is not None:
        wire["next"] = page.next
    return _out(args, wire, _task_table)


async def _run_now(queue: Any, args: argparse.Namespace) -> Any:
    return _out(args, (await queue.run_now(args.unique_id)).to_wire(), describe)


async def _change(queue: Any, args: argparse.Namespace) -> Any:
    """cancel, retry or purge: one task by its id, or the tasks a filter takes."""
    given = [args.state, args.function, args.created_from, args.created_to]
    one = getattr(args, "unique_id", None)
    if one is not None:
        if any(value is not None for value in given) or args.all or args.dry_run:
            raise UsageError("give a task's ID or a filter, not both")
        info = await (queue.cancel if args.action == "cancel" else queue.retry)(one)
        return _out(args, info.to_wire(), describe)
    if not args.all and all(value is None for value in given):
        raise UsageError(("give a task's ID, " if hasattr(args, "unique_id") else "give ")
                         + "a filter (--state, --function, --created-from, --created-to) or "
                           "--all")
    action = BulkAction(args.action)
    try:
        bulk_filter(action, args.state, args.function, args.created_from, args.created_to)
    except ValidationError as exc:
        raise UsageError(str(exc)) from None
    call = {"cancel": queue.cancel_tasks, "retry": queue.retry_tasks,
            "purge": queue.purge_tasks}[args.action]
    result = await call(state=args.state, function=args.function,
                        created_from=args.created_from, created_to=args.created_to,
                        dry_run=args.dry_run, limit=args.limit)
    return _out(args, result.to_wire(), lambda wire: _bulk_line(args.action, wire))


def _bulk_line(action: str, wire: dict[str, Any]) -> str:
    count, matched = wire["count"], wire["matched"]
    if wire["dryRun"]:
        return f"would {action} {count} of {matched} matching tasks"
    rest = matched - count
    more = f" ({rest} more match: run it again)" if rest else ""
    return f"{_PAST[action]} {count} of {matched} matching tasks{more}"


async def _dispatch(queue: Any, args: argparse.Namespace) -> Any:
    call = {"pause": queue.pause, "resume": queue.resume,
            "status": queue.dispatch_state}[args.action]
    state = await call()
    return _out(args, state.to_wire(), lambda wire: (
        f"dispatch paused since {wire['pausedAt']}" if wire["paused"] else "dispatch running"))


async def _audit(queue: Any, args: argparse.Namespace) -> Any:
    entries = await queue.audit(args.limit)
    return _out(args, {"results": [entry.to_wire() for entry in entries]}, _audit_table)


async def _wait(queue: Any, args: argparse.Namespace) -> Any:
    """Follow the task to its end: its final info, or ``Failed`` when it did not succeed."""
    seconds = None if args.timeout is None else args.timeout / 1000
    try:
        async with asyncio.timeout(seconds):
            final = await follow(queue, args.unique_id, None if args.quiet else sys.stderr)
    except TimeoutError:
        raise TimeoutError(f"task '{args.unique_id}' was not final within {args.timeout} ms"
                           ) from None
    answer = _out(args, final.to_wire(), describe)
    if final.state is not TaskState.SUCCESS:
        print(answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False))
        raise Failed(f"task '{args.unique_id}' ended {final.state.value}"
                     + (f": {final.error}" if final.error else ""))
    return answer


# ---------------------------------------------------------------------------- progress


async def follow(queue: QueueClient, unique_id: str, out: TextIO | None,
                 tty: bool | None = None) -> TaskInfo:
    """The task's live events (``queue.watch``) until it is final, drawn on ``out`` (None:
    not drawn): on a terminal one line redrawn in place, otherwise a line per change. Its
    final info."""
    tty = bool(out is not None and out.isatty()) if tty is None else tty
    last, final = "", None
    async with aclosing(queue.watch(unique_id)) as updates:
        async for _, info in updates:
            final = info
            if out is None:
                continue
            line = render_progress(info)
            if tty:
                out.write("\r" + line.ljust(len(last)))
            elif line != last:
                out.write(line + "\n")
            out.flush()
            last = line
    if out is not None and tty:
        out.write("\n")
    if final is None or not final.state.is_final:  # watch() ends only at a final state
        raise QueueUnavailableError(f"the event stream of {unique_id} ended before the task "
                                    "finished", "")
    return final


def render_progress(info: TaskInfo, width: int = 30) -> str:
    """One line: ``[##########....................]  33% copying files (attempt 1/2)``."""
    progress = info.progress or {}
    percent = _percent(info, progress)
    filled = round(width * percent / 100)
    bar = "#" * filled + "." * (width - filled)
    if info.state.is_final:
        what = info.state.value + (f": {info.error}" if info.error and
                                   info.state is not TaskState.SUCCESS else "")
    else:
        what = str(progress.get("message") or info.state.value.replace("_", " "))
        if info.app_paused:
            what += " (dispatch paused)"
    runs = f" (attempt {info.attempt}/{info.max_runs})" if info.max_runs > 1 and \
        info.attempt else ""
    return f"[{bar}] {percent:3.0f}% {what}{runs}"


def _percent(info: TaskInfo, progress: dict[str, Any]) -> float:
    if info.state is TaskState.SUCCESS:
        return 100.0
    percent = progress.get("percent")
    done, total = progress.get("done"), progress.get("total")
    if not isinstance(percent, int | float) and isinstance(done, int | float) \
            and isinstance(total, int | float) and total > 0:
        percent = 100 * done / total
    return float(min(100, max(0, percent))) if isinstance(percent, int | float) else 0.0


# ---------------------------------------------------------------------------- output


_SHOWN = ("uniqueId", "function", "state", "status", "attempt", "maxRuns", "createdAt",
          "startedAt", "finishedAt", "retryAt", "expiresAt", "statusCode", "error", "result",
          "appPaused")


def describe(wire: dict[str, Any]) -> str:
    """A TaskInfo's fields as ``key: value`` lines (progress last)."""
    shown = [key for key in _SHOWN if key in wire]
    shown += [key for key in wire if key not in _SHOWN and key != "progress"]
    width = max(len(key) for key in [*shown, "progress"]) + 2
    lines = [f"{key + ':':<{width}}{_value(wire[key])}" for key in shown]
    progress = wire.get("progress")
    if isinstance(progress, dict):
        values = {k: v for k, v in progress.items() if k not in ("messages", "updatedAt")}
        lines.append(f"{'progress:':<{width}}{_value(values)} (at {progress.get('updatedAt')})")
        lines += [f"{'':<{width}}{m.get('at')} {m.get('message')}"
                  for m in progress.get("messages") or () if isinstance(m, dict)]
    return "\n".join(lines)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = [header, *rows]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in lines)


def _task_table(wire: dict[str, Any]) -> str:
    tasks = wire["results"]
    rows = [(str(t.get("uniqueId")), str(t.get("function", "-")), str(t.get("state", "-")),
             f"{t.get('attempt', 0)}/{t.get('maxRuns', '-')}", str(t.get("createdAt", "-")),
             str(t.get("finishedAt", "-"))) for t in tasks]
    table = _table(("UNIQUE ID", "FUNCTION", "STATE", "RUNS", "CREATED (UTC)",
                    "FINISHED (UTC)"), rows) if rows else "no tasks"
    shown = (f"{len(tasks)} of {wire['count']} tasks" if "count" in wire
             else f"{len(tasks)} task{'' if len(tasks) == 1 else 's'}")
    following = f"; the next page: --cursor {wire['next']}" if "next" in wire else ""
    return f"{table}\n{shown}{following}"


def _audit_table(wire: dict[str, Any]) -> str:
    entries = wire["results"]
    if not entries:
        return "no operator actions"
    rows = [(str(e["at"]), str(e["action"]), str(e["by"]), str(e.get("via", "-")),
             str(e.get("uniqueId") or _filter_text(e.get("filter"))), str(e["count"]))
            for e in entries]
    return _table(("AT (UTC)", "ACTION", "BY", "VIA", "TASK OR FILTER", "COUNT"), rows)


def _filter_text(chosen: Any) -> str:
    if not isinstance(chosen, dict):
        return "-"
    return " ".join(f"{key}={','.join(value) if isinstance(value, list) else value}"
                    for key, value in chosen.items())


if __name__ == "__main__":
    sys.exit(main())
