"""Credentials never reach a log line, an error body or a metric label. Pure."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

_HIDDEN = "***"


def redact_url(url: str) -> str:
    """``url`` with any password (and a user name given with it) replaced by ``***``:
    ``http://app:secret@host:3000/x`` -> ``http://app:***@host:3000/x``. A URL that does not
    parse is shown as ``<unparsable URL>`` rather than risk showing a secret."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if parts.username is None and parts.password is None:
        return url
    netloc = host or ""
    if ":" in netloc:  # an IPv6 literal
        netloc = f"[{netloc}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    user = parts.username or ""
    credentials = f"{user}:{_HIDDEN}" if parts.password is not None else _HIDDEN
    return urlunsplit((parts.scheme, f"{credentials}@{netloc}", parts.path, parts.query,
                       parts.fragment))
