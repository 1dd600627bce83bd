"""Where the commands that talk to a running server (``cloudqueue cron``, ``tasks``, ``apps``) find
it and their credentials.

The URL: ``--url``, else ``$CLOUDQUEUE_URL``, else http://127.0.0.1:3100. The app id:
``--app-id``, else ``$LEANCLOUD_APP_ID``. The credential, first found: ``--master-key``,
``--admin-token`` (the server's operator token, where the command takes one),
``$LEANCLOUD_APP_MASTER_KEY``, ``$CLOUDQUEUE_ADMIN_TOKEN``. What is still missing comes from the
development app's ``DATA_DIR/dev-credentials.json`` that ``cloudqueue serve`` writes
(``--data-dir``, default ./data): its ``app_id``, and its ``admin_token`` where the command takes
the operator token (else its ``master_key``); but only for that app: another app id never
borrows the development app's credentials.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:3100"


class UsageError(Exception):
    """The command cannot run as given (exit status 2)."""


@dataclass(frozen=True)
class Connection:
    """A server and the credentials to use there: the master key, else the operator token."""

    url: str
    app_id: str
    master_key: str | None = None
    admin_token: str | None = None

    def __repr__(self) -> str:  # credentials stay out of logs and tracebacks
        return f"Connection(url={self.url!r}, app_id={self.app_id!r})"


def add_connection_options(parser: argparse.ArgumentParser, *, token: bool) -> None:
    """``--url``, ``--app-id``, ``--master-key`` (``--admin-token`` with ``token``) and
    ``--data-dir``, in a group of their own."""
    group = parser.add_argument_group("connection")
    group.add_argument("--url", help=f"the server's base URL (default $CLOUDQUEUE_URL, else "
                                     f"{DEFAULT_URL})")
    group.add_argument("--app-id", help="the app id (default $LEANCLOUD_APP_ID, else the "
                                        "development app's)")
    group.add_argument("--master-key", help="the app's master key (default "
                                            "$LEANCLOUD_APP_MASTER_KEY, else the development "
                                            "app's; prefer the variable: arguments show in ps)")
    if token:
        group.add_argument("--admin-token", help="the server's operator token, in place of the "
                                                 "master key (default $CLOUDQUEUE_ADMIN_TOKEN)")
    group.add_argument("--data-dir", type=Path, default=Path("data"),
                       help="where `cloudqueue serve` keeps dev-credentials.json (default ./data)")


def find_connection(args: argparse.Namespace, *, token: bool) -> Connection:
    """The URL, app id and credential (see the module's docstring). Raises ``UsageError``:
    none found, or a development file that cannot be read."""
    env = os.environ
    url = args.url or env.get("CLOUDQUEUE_URL") or DEFAULT_URL
    app_id = args.app_id or env.get("LEANCLOUD_APP_ID") or None
    given = [("master_key", args.master_key), ("admin_token", getattr(args, "admin_token", None)),
             ("master_key", env.get("LEANCLOUD_APP_MASTER_KEY")),
             ("admin_token", env.get("CLOUDQUEUE_ADMIN_TOKEN"))]
    found = next(((kind, value) for kind, value in given
                  if value and (token or kind == "master_key")), None)
    if app_id is None or found is None:
        dev = dev_credentials(args.data_dir)
        if dev is not None and app_id in (None, dev["app_id"]):
            app_id = dev["app_id"]
            if found is None:  # the operator token, where the command takes one
                found = (("admin_token", dev["admin_token"]) if token and dev["admin_token"]
                         else ("master_key", dev["master_key"]))
    if app_id is None or found is None:
        raise UsageError(
            "no credentials: give --app-id and --master-key (or set LEANCLOUD_APP_ID and "
            "LEANCLOUD_APP_MASTER_KEY)"
            + (", or --admin-token (CLOUDQUEUE_ADMIN_TOKEN)" if token else "")
            + ", or --data-dir where `cloudqueue serve` wrote dev-credentials.json")
    kind, value = found
    return Connection(url, app_id, **{kind: value})


def dev_credentials(data_dir: Path) -> dict[str, Any] | None:
    """The development app's ``app_id``, ``master_key`` (and ``admin_token``, where the file has
    one), or None when there is no file. Raises ``UsageError`` for a file that cannot be read."""
    path = data_dir / "dev-credentials.json"
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {type(exc).__name__}") from None
    app_id = stored.get("app_id") if isinstance(stored, dict) else None
    master_key = stored.get("master_key") if isinstance(stored, dict) else None
    if not isinstance(app_id, str) or not isinstance(master_key, str):
        raise UsageError(f"{path} has no app_id and master_key")
    token = stored.get("admin_token")
    return {"app_id": app_id, "master_key": master_key,
            "admin_token": token if isinstance(token, str) else None}
