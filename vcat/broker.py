"""Broker URLs: vcat accepts redis-py forms (``redis://``, ``rediss://``, ``unix://``)."""

from __future__ import annotations

from urllib.parse import urlsplit


def to_kombu_url(url: str) -> str:
    """Celery/kombu spell a unix-socket Redis ``redis+socket://``; redis-py spells it ``unix://``."""
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://") :]
    return url


def describe(url: str) -> str:
    """The URL without credentials, for logs and error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
