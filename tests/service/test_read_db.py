"""The search path's async connection pool: bounded, and never reuses a busy connection."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from service.db import normalize_database_url
from service.read_db import ReadPool, connect_params

pytestmark = [pytest.mark.db]


def test_connections_are_bounded_and_reused(vcat_env: dict[str, str]) -> None:
    async def run() -> set[int]:
        pool = ReadPool(connect_params(vcat_env["VCAT_DATABASE_URL"]), size=2)
        try:
            queries = [
                pool.fetch("SELECT pg_backend_pid() AS pid, pg_sleep(0.05)") for _ in range(8)
            ]
            rows = await asyncio.wait_for(asyncio.gather(*queries), timeout=20)
            return {r[0].pid for r in rows}
        finally:
            pool.close()

    assert len(asyncio.run(run())) == 2


def test_a_query_cancelled_mid_flight_does_not_poison_the_pool(
    vcat_env: dict[str, str],
) -> None:
    async def run() -> int:
        pool = ReadPool(connect_params(vcat_env["VCAT_DATABASE_URL"]), size=1)
        try:
            slow = asyncio.create_task(pool.fetch("SELECT pg_sleep(5)"))
            await asyncio.sleep(0.3)
            slow.cancel()  # a client gone, a server shutting down
            with pytest.raises(asyncio.CancelledError):
                await slow
            # The one slot is free again (psycopg cancelled the query on the server).
            (row,) = await asyncio.wait_for(pool.fetch("SELECT 1 AS one"), timeout=3)
            return int(row.one)
        finally:
            pool.close()

    assert asyncio.run(run()) == 1


def test_a_connection_the_server_dropped_is_replaced(vcat_env: dict[str, str]) -> None:
    from sqlalchemy import create_engine, text

    async def run() -> tuple[int, int]:
        pool = ReadPool(connect_params(vcat_env["VCAT_DATABASE_URL"]), size=1)
        try:
            (before,) = await pool.fetch("SELECT pg_backend_pid() AS pid")
            engine = create_engine(normalize_database_url(vcat_env["VCAT_DATABASE_URL"]))
            with engine.begin() as conn:  # Postgres restarted, say
                conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": before.pid})
            engine.dispose()
            (after,) = await pool.fetch("SELECT pg_backend_pid() AS pid")
            return before.pid, after.pid
        finally:
            pool.close()

    before, after = asyncio.run(run())
    assert before != after


def test_fairness_first_come_first_served(vcat_env: dict[str, str]) -> None:
    async def run() -> list[str]:
        pool = ReadPool(connect_params(vcat_env["VCAT_DATABASE_URL"]), size=1)
        done: list[str] = []

        async def search(name: str) -> None:  # two queries, like a search that resolves a name
            await pool.fetch("SELECT pg_sleep(0.02)")
            await pool.fetch("SELECT pg_sleep(0.02)")
            done.append(name)

        try:
            tasks = []
            for name in "ABCDE":
                tasks.append(asyncio.create_task(search(name)))
                await asyncio.sleep(0)  # started in this order
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
            return done
        finally:
            pool.close()

    assert asyncio.run(run()) == list("ABCDE")


def test_an_unreachable_database_raises_and_frees_the_slot() -> None:
    async def run() -> None:
        pool = ReadPool({"host": "127.0.0.1", "port": 1, "connect_timeout": 2}, size=1)
        for _ in range(2):  # the second call would hang if the first had kept the only slot
            with pytest.raises(psycopg.OperationalError):
                await asyncio.wait_for(pool.fetch("SELECT 1"), timeout=10)

    asyncio.run(run())
