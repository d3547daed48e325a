"""A database session for CLI commands, with connection failures as one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import unquote, urlsplit

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from vcat.cli.common import fail


def _passwords(url: str) -> set[str]:
    """The URL's password as written and decoded, as far as the URL parses."""
    found: set[str] = set()
    with suppress(ArgumentError, ValueError):
        found.add(str(make_url(url).password or ""))
    try:
        raw = urlsplit(url).password or ""
    except ValueError:
        raw = ""
    found |= {raw, unquote(raw)}
    return found - {""}


def _redacted(message: str, url: str) -> str:
    """``message`` without the URL's password, in whatever form it might appear."""
    for secret in sorted(_passwords(url), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def database_unreachable(exc: OperationalError, url: str) -> str:
    return _redacted(f"database unreachable: {str(exc.orig).splitlines()[0]}", url)


def checked_engine(url: str) -> Engine:
    """An engine for ``url`` (nothing connects yet), or a one-line error for a URL vcat cannot
    use: unparsable, not PostgreSQL, or naming a driver that is not installed."""
    from service.db import make_engine, normalize_database_url

    try:
        backend = make_url(normalize_database_url(url)).get_backend_name()
        if backend != "postgresql":
            fail(f"invalid VCAT_DATABASE_URL: vcat needs PostgreSQL, not {backend!r}")
        return make_engine(url)
    except (ArgumentError, ValueError) as exc:  # unparsable, or e.g. a port that is not a number
        fail(_redacted(f"invalid VCAT_DATABASE_URL: {exc}", url))
    except ImportError as exc:
        fail(_redacted(f"invalid VCAT_DATABASE_URL: its driver is not installed ({exc})", url))


@contextmanager
def cli_session() -> Iterator[Session]:
    from vcat.embedded import EmbeddedError
    from vcat.runtime import database_url

    try:
        with database_url() as url:
            engine = checked_engine(url)
            try:
                with Session(engine, expire_on_commit=False) as session:
                    yield session
            except OperationalError as exc:
                fail(database_unreachable(exc, url))
            except ProgrammingError as exc:
                fail(f"database not migrated? {str(exc.orig).splitlines()[0]} (run `vcat migrate`)")
            finally:
                engine.dispose()
    except EmbeddedError as exc:
        fail(str(exc))
