"""Shared fixtures: a real Postgres (fresh database per session, schema from Alembic) and Redis.

With ``VCAT_DATABASE_URL`` / ``VCAT_BROKER_URL`` set, tests use those servers (CI runs them
against the machine's Postgres and Redis); otherwise they start embedded ones, as `vcat up` does.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.db import normalize_database_url
from vcat import migrate
from vcat.embedded import EmbeddedPostgres, EmbeddedRedis

REPO = Path(__file__).resolve().parents[1]
SHARED_LABELS = REPO.parent / "shared" / "labels"

# Captured before any fixture rewrites the environment for the code under test.
EXTERNAL_DATABASE_URL = os.environ.get("VCAT_DATABASE_URL")
EXTERNAL_BROKER_URL = os.environ.get("VCAT_BROKER_URL")


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL to a Postgres server's maintenance database (external or embedded)."""
    if EXTERNAL_DATABASE_URL:
        yield normalize_database_url(EXTERNAL_DATABASE_URL)
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.start()
    finally:
        server.stop()


def _admin(url: str, sql: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database for this test session whose schema comes from `alembic upgrade head`."""
    name = f"vcat_test_{uuid.uuid4().hex[:10]}"
    _admin(postgres_server_url, f'CREATE DATABASE "{name}"')
    url = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        _admin(postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if EXTERNAL_BROKER_URL:
        yield EXTERNAL_BROKER_URL
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def redis_client(broker_url: str) -> Iterator[redis.Redis]:
    """A clean Redis database: flushed before and after the test."""
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    path = tmp_path / "media"
    path.mkdir()
    return path


@pytest.fixture
def vcat_env(
    database_url: str, broker_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Point vcat's Settings at the test servers and a private data directory."""
    from service import db
    from vcat.settings import get_settings

    env = {
        "VCAT_DATABASE_URL": database_url,
        "VCAT_BROKER_URL": broker_url,
        "VCAT_DATA_DIR": str(tmp_path / "var"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    db.reset()
    yield env
    db.reset()
    get_settings.cache_clear()


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_video(name="v.mp4", **options)`` writes a small real video (see tests/videos.py)."""
    from tests import videos

    counter = iter(range(1_000_000))

    def _make(name: str | None = None, **options: Any) -> Path:
        path = tmp_path / (name or f"video{next(counter)}.mp4")
        return videos.make_video(path, **options)

    return _make
