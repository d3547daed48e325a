"""One engine per process and a session per request (FastAPI dependency)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, cast

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from vcat.settings import get_settings

CONNECT_TIMEOUT = 5  # seconds
# A pooled connection is tested (a round trip) before use only when it has been idle this long:
# one that came back from a request a moment ago was working then, and testing every checkout
# (SQLAlchemy's pool_pre_ping) cost each upload, poll and job a round trip of CPU on both sides.
PING_AFTER_IDLE = 1.0  # seconds


def normalize_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``postgres://`` URLs and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    engine = create_engine(
        normalize_database_url(url),
        pool_size=10,
        pool_use_lifo=True,  # the last one back goes out first: the others idle, and get tested
        max_overflow=20,
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )
    ping_when_idle(engine, PING_AFTER_IDLE)
    return engine


def ping_when_idle(engine: Engine, after: float) -> None:
    """Test a pooled connection at checkout if it has been idle ``after`` seconds or more; a
    dead one (the server restarted, a proxy cut it) is replaced before anyone uses it.

    A connection that fails in use needs no ping: SQLAlchemy then retires it and every
    connection opened before it, so none of them is handed out again."""

    @event.listens_for(engine, "checkin")
    def returned(_: Any, record: Any) -> None:
        record.info["returned"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _: Any) -> None:
        since = record.info.pop("returned", None)
        if since is None or time.monotonic() - since < after:
            return  # just connected, or working a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # the pool discards this connection and checks out (or opens) another
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


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
