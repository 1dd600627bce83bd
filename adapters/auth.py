"""Who is calling: LeanCloud's credential headers, checked in constant time (docs/protocol.md §1.3).

Pure: headers in, ``(app, role)`` out. Accepted forms, in the order they are tried:

* ``X-LC-Sign: md5(ts + key),ts[,master]`` (what the SDK sends; legacy ``X-AVOSCloud-Request-Sign``)
* ``X-LC-Key: appKey`` or ``X-LC-Key: masterKey,master`` (legacy ``X-AVOSCloud-Application-Key``)
* ``X-AVOSCloud-Master-Key: masterKey``

The app is named by ``X-LC-Id`` (legacy ``X-AVOSCloud-Application-Id``, ``X-Uluru-Application-Id``).
The timestamp in a signature is not checked for freshness, as leanengine does not check it.
``X-LC-Hook-Key`` grants nothing here. Keys never appear in an error message.

Every function here is total over what a client can send: a header that is not UTF-8 text (aiohttp
hands such bytes over as surrogate escapes), a token with non-ASCII digits or thousands of them,
all mean "not authenticated"; ``malformed_credentials`` then says which header was unreadable.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from cloudqueue.engine.core.errors import ValidationError


class Role(IntEnum):
    NONE = 0
    APP = 1
    VIEWER = 2  # the server's viewer token: read everything a master key may read, change nothing
    MASTER = 3
    OPERATOR = 4  # the server's operator token: what the master key may do, on every app


@dataclass(frozen=True)
class AppKeys:
    app_id: str
    app_key: str
    master_key: str
    hook_key: str | None = None

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"AppKeys(app_id={self.app_id!r})"


_ID_HEADERS = ("X-LC-Id", "X-AVOSCloud-Application-Id", "X-Uluru-Application-Id")
_SIGN_HEADERS = ("X-LC-Sign", "X-AVOSCloud-Request-Sign")
_KEY_HEADERS = ("X-LC-Key", "X-AVOSCloud-Application-Key")
RUN_TOKEN_HEADER = "X-CloudQueue-Run-Token"
CREDENTIAL_HEADERS = (*_ID_HEADERS, *_SIGN_HEADERS, *_KEY_HEADERS, "X-AVOSCloud-Master-Key",
                      "X-LC-Hook-Key", RUN_TOKEN_HEADER, "Authorization")
MIN_OPERATOR_TOKEN_CHARS = 16
_MAX_RUN_DIGITS = 19  # a run number is a 64-bit count
_MAX_EXPIRY_DIGITS = 15  # epoch milliseconds until the year 33658


def _first(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None


def _same(given: str, expected: str) -> bool:
    # surrogateescape: the raw bytes of a header that was not UTF-8 (never equal to a key)
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def _digits(text: str, most: int) -> int | None:
    """``text`` as a whole number if it is 1 to ``most`` ASCII digits (``str.isdigit`` takes
    "²" and "١", and ``int`` raises past 4,300 digits)."""
    if 0 < len(text) <= most and text.isascii() and text.isdigit():
        return int(text)
    return None


def malformed_credentials(headers: Mapping[str, str]) -> ValidationError | None:
    """A 400 naming the first credential header that is not UTF-8 text, if any: a better answer
    than 401 for a client whose header bytes were mangled on the way."""
    for name in CREDENTIAL_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return ValidationError(f"header {name} is not UTF-8 text; credentials are ASCII",
                                   name)
    return None


def _role_from_sign(sign: str, app: AppKeys) -> Role:
    parts = sign.split(",")
    if len(parts) == 3 and parts[2] == "master":
        key, role = app.master_key, Role.MASTER
    elif len(parts) == 2:
        key, role = app.app_key, Role.APP
    else:
        return Role.NONE
    signature, timestamp = parts[0].lower(), parts[1]
    expected = hashlib.md5((timestamp + key).encode("utf-8", "surrogateescape"),
                           usedforsecurity=False).hexdigest()
    return role if _same(signature, expected) else Role.NONE


def _role_from_key(value: str, app: AppKeys) -> Role:
    if value.endswith(",master"):
        return Role.MASTER if _same(value[: -len(",master")], app.master_key) else Role.NONE
    if _same(value, app.app_key):
        return Role.APP
    # leanengine accepts the bare master key too, without treating it as master
    return Role.APP if _same(value, app.master_key) else Role.NONE


def authenticate(headers: Mapping[str, str], apps: Mapping[str, AppKeys],
                 operator_token: str | None = None,
                 viewer_token: str | None = None) -> tuple[AppKeys | None, Role]:
    """The app the request names and the role its credentials prove (``Role.NONE`` if none).
    ``Authorization: Bearer <operator_token>`` proves ``OPERATOR`` on whichever app it names,
    ``Bearer <viewer_token>`` ``VIEWER``."""
    app_id = _first(headers, _ID_HEADERS)
    app = apps.get(app_id) if app_id else None
    if app is None:
        return None, Role.NONE
    server_role = bearer_role(headers, operator_token, viewer_token)
    if server_role is not Role.NONE:
        return app, server_role
    sign = _first(headers, _SIGN_HEADERS)
    if sign is not None:
        return app, _role_from_sign(sign, app)
    key = _first(headers, _KEY_HEADERS)
    if key is not None:
        return app, _role_from_key(key, app)
    master = headers.get("X-AVOSCloud-Master-Key")
    if master:
        return app, Role.MASTER if _same(master, app.master_key) else Role.NONE
    return app, Role.NONE


def bearer_role(headers: Mapping[str, str], operator_token: str | None,
                viewer_token: str | None) -> Role:
    """``OPERATOR`` or ``VIEWER`` if the request carries ``Authorization: Bearer`` with the
    server's operator or viewer token (either may be unset), else ``NONE``."""
    if is_operator(headers, operator_token):
        return Role.OPERATOR
    return Role.VIEWER if is_operator(headers, viewer_token) else Role.NONE


def is_operator(headers: Mapping[str, str], operator_token: str | None) -> bool:
    """The request carries ``Authorization: Bearer <operator_token>`` (a server that has none
    set admits nobody this way)."""
    if not operator_token:
        return False
    scheme, _, given = (headers.get("Authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and _same(given.strip(), operator_token)


def sign(key: str, timestamp_ms: int, master: bool = False) -> str:
    """An ``X-LC-Sign`` value, as the SDK makes it."""
    digest = hashlib.md5(f"{timestamp_ms}{key}".encode(), usedforsecurity=False).hexdigest()
    return f"{digest},{timestamp_ms}" + (",master" if master else "")


@functools.lru_cache(maxsize=64)
def _run_token_key(master_key: str) -> bytes:
    # BLAKE2b takes a key of up to 64 bytes; a longer master key is hashed down to one
    key = master_key.encode()
    return key if len(key) <= 64 else hashlib.blake2b(key, person=b"cq-run-key").digest()


def run_token(keys: AppKeys, unique_id: str, run_seq: int) -> str:
    """The token a function host uses to report progress for one run: ``<run>.<mac>``, a keyed
    BLAKE2b (128-bit) MAC by the app's master key, so only the queue can make one and it names
    exactly one run. One per run the queue starts: BLAKE2b's keyed mode costs a third of an
    HMAC-SHA256 here."""
    digest = hashlib.blake2b(f"{keys.app_id}\n{unique_id}\n{run_seq}".encode(),
                             key=_run_token_key(keys.master_key), digest_size=16,
                             person=b"cq-run-token").hexdigest()
    return f"{run_seq}.{digest}"


def check_run_token(keys: AppKeys, unique_id: str, token: str) -> int | None:
    """The run a token was made for, or None if it was not made by this queue for this task."""
    run, _, _digest = token.partition(".")
    run_seq = _digits(run, _MAX_RUN_DIGITS)
    if run_seq is None:
        return None
    return run_seq if _same(token, run_token(keys, unique_id, run_seq)) else None


def read_token(keys: AppKeys, unique_id: str, expires_ms: int) -> str:
    """A token that lets its holder read one task (its info and live events) until
    ``expires_ms``: for a browser's EventSource, which cannot send credential headers."""
    message = f"read\n{keys.app_id}\n{unique_id}\n{expires_ms}".encode()
    return f"{expires_ms}.{hmac.new(keys.master_key.encode(), message, hashlib.sha256).hexdigest()}"


def check_read_token(keys: AppKeys, unique_id: str, token: str, now_ms: int) -> bool:
    expires, _, _digest = token.partition(".")
    expires_ms = _digits(expires, _MAX_EXPIRY_DIGITS)
    if expires_ms is None or expires_ms < now_ms:
        return False
    return _same(token, read_token(keys, unique_id, expires_ms))
