"""One engine per process and a session per request (FastAPI dependency)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any, cast

import psycopg
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from vcat.settings import get_settings

CONNECT_TIMEOUT = 5  # seconds


def normalize_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``postgres://`` URLs and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    return create_engine(
        normalize_database_url(url),
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )


def database_url() -> str:
    url = get_settings().database_url
    if not url:
        raise RuntimeError("VCAT_DATABASE_URL is not set (vcat up sets it for its children)")
    return url


@lru_cache
def get_engine() -> Engine:
    return make_engine(database_url())


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def get_session() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


def driver_cursor(db: Session | Connection) -> psycopg.Cursor[Any]:
    """A psycopg cursor on the session's (or connection's) connection, inside its transaction.
    For the hot paths (a job's claim and store, an upload's insert, audit batches): there
    SQLAlchemy's statement and result layers cost more CPU than the statements themselves."""
    conn = db.connection() if isinstance(db, Session) else db
    return cast(psycopg.Connection[Any], conn.connection.dbapi_connection).cursor()


def reset() -> None:
    """Forget the engine, session factory and search connections (tests switch databases)."""
    from service import read_db  # it builds on this module

    if get_engine.cache_info().currsize:
        get_engine().dispose()
    for cached in (get_engine, get_sessionmaker):
        cached.cache_clear()
    read_db.reset()
