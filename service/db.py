"""One engine per process and a session per request (FastAPI dependency)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from vcat.settings import get_settings

T = TypeVar("T")


def normalize_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``postgres://`` URLs and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """``read_only``: autocommit, so no BEGIN/ROLLBACK round trips, and no pre-ping (one more
    round trip per checkout); a connection the server dropped is retried once by ``read``."""
    options = {"isolation_level": "AUTOCOMMIT"} if read_only else {"pool_pre_ping": True}
    return create_engine(
        normalize_database_url(url),
        pool_size=10,
        max_overflow=20,
        connect_args={"connect_timeout": 5},
        **options,
    )


def _database_url() -> str:
    url = get_settings().database_url
    if not url:
        raise RuntimeError("VCAT_DATABASE_URL is not set (vcat up sets it for its children)")
    return url


@lru_cache
def get_engine() -> Engine:
    return make_engine(_database_url())


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


@lru_cache
def get_read_engine() -> Engine:
    """The engine for read-only hot paths (search)."""
    return make_engine(_database_url(), read_only=True)


def read(work: Callable[[Session], T]) -> T:
    """``work(session)`` on the read engine; run again once if the connection had been dropped
    (Postgres restarted: SQLAlchemy then discards every older pooled connection)."""
    for attempt in range(2):
        try:
            with Session(get_read_engine()) as session:
                return work(session)
        except DBAPIError as exc:
            if attempt or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")


def get_session() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


def reset() -> None:
    """Forget the engine and session factories (tests switch databases between them)."""
    for engine in (get_engine, get_read_engine):
        if engine.cache_info().currsize:
            engine().dispose()
    for cached in (get_engine, get_read_engine, get_sessionmaker):
        cached.cache_clear()
