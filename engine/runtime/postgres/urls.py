"""Database URLs: which text is one, and how it is shown (without its password). Imports
nothing heavy, so deciding where an engine keeps its tasks does not load the driver."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

URL_SCHEMES = ("postgresql", "postgres")


def is_database_url(text: str | None) -> bool:
    return bool(text) and urlsplit(str(text)).scheme in URL_SCHEMES


def shown_url(url: str) -> str:
    """``url`` without its password, for log lines and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
