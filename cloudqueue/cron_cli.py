"""``cloudqueue cron``: a running server's schedules, and offline previews of fire times.

::

    cloudqueue cron list
    cloudqueue cron show NAME [--count N]
    cloudqueue cron set NAME --function F [--params JSON] (--cron EXPR | --interval MS)
                        [--timezone TZ] [--attempts N] [--backoff MS] [--delivery-mode M]
                        [--timeout MS] [--keep-result MS] [--paused]
    cloudqueue cron pause|resume|delete NAME
    cloudqueue cron preview (--cron EXPR | --interval MS) [--timezone TZ] [--from ISO]
                            [--count N]

Every command but ``preview`` talks to a server through ``QueueClient`` with the master key:
``--url`` (default ``$CLOUDQUEUE_URL``, else http://127.0.0.1:3100), ``--app-id`` and
``--master-key`` (default ``$LEANCLOUD_APP_ID`` and ``$LEANCLOUD_APP_MASTER_KEY``; when they are
not set, the development app's that ``cloudqueue serve`` wrote to
``DATA_DIR/dev-credentials.json``, ``--data-dir`` defaulting to ./data). ``preview`` computes
the fire times here, with the engine's own cron code, without a server.

Output is for people (a table for ``list``, ``key: value`` lines for a schedule); ``--json``
prints the server's JSON answer instead (``preview``: ``{"fireTimes": [...]}``, as the server's
preview endpoint answers).

Exit status: 0 done; 1 the server refused (its message on stderr) or could not be reached; 2 a
usage error (bad arguments, an invalid schedule caught before sending, no credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from cloudqueue.cli_connection import (
    DEFAULT_URL,
    UsageError,
    add_connection_options,
    find_connection,
)
from cloudqueue.engine.core.cron import (
    MAX_PREVIEW,
    CronExpr,
    check_interval,
    check_timezone,
    parse_cron,
)
from cloudqueue.engine.core.cron_next import fire_times
from cloudqueue.engine.core.errors import ConfigError, EngineError, ValidationError
from cloudqueue.engine.core.schedules import check_schedule_name, parse_schedule
from cloudqueue.engine.core.task import iso_ms

__all__ = ["DEFAULT_URL", "add_parser", "build_parser", "main", "run"]

MAX_UPCOMING = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DELIVERY_MODES = ("atLeastOnce", "atMostOnce")

# (Python option name, argparse dest): the per-firing task options ``set`` takes.
_OPTIONS = (("attempts", "attempts"), ("backoff", "backoff"), ("delivery_mode", "delivery_mode"),
            ("timeout", "timeout"), ("keep_result", "keep_result"))
# The schedule object's fields, in the order ``show`` prints them.
_SHOWN = ("name", "function", "params", "cron", "interval", "timezone", "paused", "attempts",
          "backoff", "deliveryMode", "timeout", "keepResult", "lastFiredAt")
_MS_FIELDS = {"interval", "backoff", "timeout", "keepResult"}


# ---------------------------------------------------------------------------- the parser


def _name(value: str) -> str:
    try:
        return check_schedule_name(value)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc})") from None


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    add_connection_options(parent, token=False)
    parent.add_argument("--json", action="store_true", help="print the server's JSON answer")
    return parent


def _when_options(parser: argparse.ArgumentParser) -> None:
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR",
                      help="six fields, seconds first: '0 30 10-13 ? * WED,FRI'")
    when.add_argument("--interval", metavar="MS", type=int, help="fire every MS milliseconds")


def _add_set(actions: Any, conn: argparse.ArgumentParser) -> None:
    put = actions.add_parser(
        "set", parents=[conn], help="create or replace a schedule",
        description="Create or replace a schedule: the whole schedule is replaced, so options "
                    "not given take their defaults and, without --paused, it is active.")
    put.add_argument("name", type=_name, metavar="NAME")
    put.add_argument("--function", required=True, help="the cloud function each firing runs")
    put.add_argument("--params", type=_json, metavar="JSON", help="its params (default {})")
    _when_options(put)
    put.add_argument("--timezone", metavar="TZ",
                     help="an IANA zone for --cron (default: the server's, UTC unless set)")
    put.add_argument("--attempts", type=int, metavar="N", help="retries of each firing")
    put.add_argument("--backoff", type=int, metavar="MS", help="wait between retries")
    put.add_argument("--delivery-mode", choices=_DELIVERY_MODES, help="each firing's (default "
                     "atLeastOnce)")
    put.add_argument("--timeout", type=int, metavar="MS", help="bound on each run")
    put.add_argument("--keep-result", type=int, metavar="MS", help="keep each result this long")
    put.add_argument("--paused", action="store_true", help="create it paused")
    put.set_defaults(action_func=_set)


def _add_actions(parser: argparse.ArgumentParser) -> None:
    conn = _connection_options()
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[conn], help="every schedule, by name")
    listing.set_defaults(action_func=_list)
    show = actions.add_parser("show", parents=[conn], help="one schedule and its next fire times")
    show.add_argument("name", type=_name, metavar="NAME")
    show.add_argument("--count", type=int, default=5, metavar="N",
                      help=f"how many upcoming fire times (1-{MAX_UPCOMING}, default 5)")
    show.set_defaults(action_func=_show)
    _add_set(actions, conn)
    for action, func, text in (("pause", _pause, "stop firing a schedule"),
                               ("resume", _resume, "fire a paused schedule again, from now"),
                               ("delete", _delete, "delete a schedule"),
                               ("run-now", _run_now,
                                "fire a schedule once now, outside its slots")):
        one = actions.add_parser(action, parents=[conn], help=text)
        one.add_argument("name", type=_name, metavar="NAME")
        one.set_defaults(action_func=func)
    preview = actions.add_parser(
        "preview", help="the next fire times of a cron expression or interval (offline)",
        description="Compute the next fire times here, without a server. An interval counts "
                    "from --from; a saved schedule's interval counts from its creation.")
    _when_options(preview)
    preview.add_argument("--timezone", metavar="TZ", default="UTC", help="default UTC")
    preview.add_argument("--from", dest="from_", metavar="ISO",
                         help="start after this time, e.g. 2024-01-01T00:00:00Z (default now)")
    preview.add_argument("--count", type=int, default=5, metavar="N",
                         help=f"how many (1-{MAX_PREVIEW}, default 5)")
    preview.add_argument("--json", action="store_true", help='print {"fireTimes": [...]}')
    preview.set_defaults(action_func=None)


def add_parser(subparsers: Any) -> None:
    """Register ``cron`` on ``cloudqueue``'s subcommands (``set_defaults(func=run)``)."""
    cron = subparsers.add_parser(
        "cron", help="list, show, set, pause, resume, run now, delete or preview schedules",
        description="Manage a running server's schedules; preview fire times offline.")
    _add_actions(cron)
    cron.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m engine.cron_cli`` (the same as ``cloudqueue cron``)."""
    parser = argparse.ArgumentParser(
        prog="cloudqueue cron",
        description="Manage a running server's schedules; preview fire times offline.")
    _add_actions(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


# ---------------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``cron`` command; returns the exit status."""
    try:
        if args.action == "preview":
            return _preview(args)
        return asyncio.run(_remote(args))
    except UsageError as exc:
        print(f"cloudqueue cron {args.action}: {exc}", file=sys.stderr)
        return 2


Action = Callable[[Any, argparse.Namespace], Awaitable[Any]]


async def _remote(args: argparse.Namespace) -> int:
    from cloudqueue.adapters.client import QueueClient

    url, app_id, master_key = _connection(args)
    try:
        client = QueueClient(url, app_id, master_key=master_key)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    action: Action = args.action_func
    try:
        async with client as queue:
            answer = await action(queue, args)
    except EngineError as exc:
        print(f"cloudqueue cron {args.action}: {exc}", file=sys.stderr)
        return 1
    _print(args, answer)
    return 0


def _connection(args: argparse.Namespace) -> tuple[str, str, str]:
    """The URL, app id and master key: arguments, else the environment, else the dev app's."""
    found = find_connection(args, token=False)
    assert found.master_key is not None  # without the operator token: always a master key
    return found.url, found.app_id, found.master_key


# ---------------------------------------------------------------------------- the actions


async def _list(queue: Any, args: argparse.Namespace) -> Any:
    return {"results": [info.to_wire() for info in await queue.list_schedules()]}


async def _show(queue: Any, args: argparse.Namespace) -> Any:
    if not 1 <= args.count <= MAX_UPCOMING:
        raise UsageError(f"--count must be from 1 to {MAX_UPCOMING}, got {args.count}")
    return (await queue.get_schedule(args.name, args.count)).to_wire()


async def _set(queue: Any, args: argparse.Namespace) -> Any:
    options = {name: getattr(args, dest) for name, dest in _OPTIONS
               if getattr(args, dest) is not None}
    values = {"function": args.function, "params": args.params, "cron": args.cron,
              "interval": args.interval, "timezone": args.timezone, "paused": args.paused,
              **options}
    try:  # what the client checks before sending: a usage error, not the server's refusal
        parse_schedule(args.name, {k: v for k, v in values.items() if v is not None},
                       wire=False, default_timezone="UTC")
    except ValidationError as exc:
        raise UsageError(str(exc)) from None
    info = await queue.set_schedule(args.name, args.function, args.params, cron=args.cron,
                                    interval=args.interval, timezone=args.timezone,
                                    paused=args.paused, **options)
    return info.to_wire()


async def _pause(queue: Any, args: argparse.Namespace) -> Any:
    return (await queue.pause_schedule(args.name)).to_wire()


async def _resume(queue: Any, args: argparse.Namespace) -> Any:
    return (await queue.resume_schedule(args.name)).to_wire()


async def _run_now(queue: Any, args: argparse.Namespace) -> Any:
    return {"uniqueId": await queue.run_schedule_now(args.name)}


async def _delete(queue: Any, args: argparse.Namespace) -> Any:
    await queue.delete_schedule(args.name)
    return {"deleted": args.name}


def _preview(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= MAX_PREVIEW:
        raise UsageError(f"--count must be from 1 to {MAX_PREVIEW}, got {args.count}")
    start = _parse_from(args.from_) if args.from_ is not None else time.time_ns() // 1_000_000
    try:
        spec: CronExpr | int = (parse_cron(args.cron) if args.cron is not None
                                else check_interval(args.interval))
        zone = check_timezone(args.timezone)
        times = fire_times(spec, zone, start, args.count, anchor_ms=start)
    except ValidationError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps({"fireTimes": [iso_ms(ms) for ms in times]}))
    else:
        for ms in times:
            print(_when(iso_ms(ms), zone))
    return 0


def _parse_from(value: str) -> int:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--from must be an ISO-8601 time such as 2024-01-01T00:00:00Z, got "
                         f"{value!r}") from None
    if when.tzinfo is None:
        raise UsageError("--from needs a zone (e.g. a trailing Z for UTC)")
    delta = when - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


# ---------------------------------------------------------------------------- output


def _print(args: argparse.Namespace, answer: Any) -> None:
    if args.json:
        print(json.dumps(answer, ensure_ascii=False))
    elif args.action == "list":
        print(_table(answer["results"]))
    elif args.action == "delete":
        print(f"deleted schedule {answer['deleted']}")
    elif args.action == "run-now":
        print(answer["uniqueId"])
    else:
        print(_describe(answer))


def _when(iso: str, zone: str) -> str:
    """An ISO UTC time, with the zone's wall-clock reading when the zone is not UTC."""
    if zone == "UTC":
        return iso
    try:
        local = datetime.fromisoformat(iso).astimezone(ZoneInfo(zone))
    except (ValueError, KeyError, OSError):
        return iso
    return f"{iso}  ({local:%a %Y-%m-%d %H:%M:%S%z} {zone})"


def _value(key: str, value: Any) -> str:
    if key == "paused":
        return "yes" if value else "no"
    if key in _MS_FIELDS and isinstance(value, int):
        return f"{value} ms"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _describe(schedule: dict[str, Any]) -> str:
    zone = str(schedule.get("timezone", "UTC"))
    shown = [key for key in _SHOWN if key in schedule]
    shown += [key for key in schedule if key not in _SHOWN and key != "nextFireTimes"]
    width = len("nextFireTimes") + 1
    lines = [f"{key + ':':<{width}} {_value(key, schedule[key])}" for key in shown]
    upcoming = schedule.get("nextFireTimes") or []
    if not upcoming:
        lines.append(f"{'nextFireTimes:':<{width}} -" + (" (paused)" if schedule.get("paused")
                                                          else ""))
    for i, iso in enumerate(upcoming):
        label = "nextFireTimes:" if i == 0 else ""
        lines.append(f"{label:<{width}} {_when(str(iso), zone)}")
    return "\n".join(lines)


def _table(schedules: list[dict[str, Any]]) -> str:
    if not schedules:
        return "no schedules"
    header = ("NAME", "FUNCTION", "SCHEDULE", "TIMEZONE", "STATE", "NEXT FIRE (UTC)",
              "LAST FIRED (UTC)")
    rows = [header]
    for s in schedules:
        when = s.get("cron") if "cron" in s else f"every {s.get('interval')} ms"
        upcoming = s.get("nextFireTimes") or ["-"]
        rows.append((str(s.get("name")), str(s.get("function")), str(when),
                     str(s.get("timezone")), "paused" if s.get("paused") else "active",
                     str(upcoming[0]), str(s.get("lastFiredAt") or "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


if __name__ == "__main__":
    sys.exit(main())
