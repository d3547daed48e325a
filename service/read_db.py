"""The search path's Postgres connections: psycopg async, on the event loop, autocommit.

Everything else uses the SQLAlchemy engine in ``service.db``. Searches do not: there each
query was a hop to a thread and back, and the threads fought the event loop for the GIL. The
slow searches were the ones queued for a thread (p99 wait 100 ms against a 3 ms query). On the
loop, with no ORM between the SQL and the driver, ``bench/bench_search.py`` (32 clients,
2 processes, 2 cores) went from 980 to about 1,400 req/s and p99 from 118 to about 70 ms
before the query plan, audit and fairness changes that brought it to about 2,100 req/s, p99 34 ms.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Protocol

import psycopg
from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.rows import namedtuple_row
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service.db import CONNECT_TIMEOUT, database_url, driver_cursor, normalize_database_url
from vcat.settings import get_settings


class Reader(Protocol):
    """What the search SQL runs on: ``ReadPool``, or ``SessionReader`` in a sync endpoint."""

    async def fetch(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]: ...


class ReadPool:
    """Up to ``size`` connections; callers wait their turn first come, first served."""

    def __init__(self, params: dict[str, Any], size: int) -> None:
        self._params = params
        # asyncio's Semaphore wakes its waiters in order and, unlike a Queue of connections,
        # does not let a caller that comes later take a slot freed for an earlier one.
        self._slots = asyncio.Semaphore(size)
        self._idle: list[AsyncConnection[Any]] = []
        self._closed = False

    async def fetch(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """The rows of one query (named tuples). A pooled connection that the server dropped
        (Postgres restarted) is replaced and the query run once more; a database that cannot
        be reached raises ``psycopg.OperationalError`` (the API answers 503)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                for attempt in range(2):
                    fresh = conn is None or conn.closed
                    if fresh:
                        conn = await AsyncConnection.connect(
                            **self._params, autocommit=True, row_factory=namedtuple_row
                        )
                    assert conn is not None
                    try:
                        cursor = await conn.execute(sql, params)
                        return await cursor.fetchall()
                    except psycopg.OperationalError:
                        if fresh or attempt or not conn.closed:
                            raise
                raise AssertionError("unreachable")
            finally:
                # psycopg cancels an interrupted query and recovers the connection; one it
                # could not recover (still busy, or in a transaction) is not handed out again.
                if conn is not None:
                    idle = conn.info.transaction_status == TransactionStatus.IDLE
                    if idle and not self._closed:
                        self._idle.append(conn)
                    else:
                        _close_now(conn)

    def close(self) -> None:
        """Close the idle connections; busy ones close when their query ends."""
        self._closed = True
        while self._idle:
            _close_now(self._idle.pop())


class SessionReader:
    """``ReadPool``'s interface over a request's SQLAlchemy session, for sync endpoints that
    run the search SQL in their worker thread (``asyncio.run``) instead of on the loop."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def fetch(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        with driver_cursor(self._session) as cursor:
            cursor.row_factory = namedtuple_row
            cursor.execute(sql, params)
            return cursor.fetchall()


def _close_now(conn: AsyncConnection[Any]) -> None:
    # libpq's own close: synchronous, so it also works outside the connection's event loop.
    if not conn.closed:
        conn.pgconn.finish()


# One pool per event loop: asyncio connections cannot move between loops (the API has one loop
# per process; tests start several).
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadPool] = weakref.WeakKeyDictionary()


def get_pool() -> ReadPool:
    loop = asyncio.get_running_loop()
    for ended in [other for other in _pools if other.is_closed()]:
        _pools.pop(ended).close()  # a pool holds its loop alive: tests run many loops
    pool = _pools.get(loop)
    if pool is None:
        params = connect_params(database_url())
        pool = _pools[loop] = ReadPool(params, get_settings().search_connections)
    return pool


def connect_params(url: str) -> dict[str, Any]:
    """psycopg's connection arguments for ``url``, read as the engine reads it (any form it
    accepts), minus SQLAlchemy's own type adapters: psycopg's defaults serve here."""
    _, params = PGDialect_psycopg().create_connect_args(make_url(normalize_database_url(url)))
    params.pop("context", None)
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    return dict(params)


def close_pool() -> None:
    """Close this event loop's pool (the API's shutdown)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        pool.close()


def reset() -> None:
    """Close every pool (tests switch databases)."""
    for pool in list(_pools.values()):
        pool.close()
    _pools.clear()
