"""The foundation: settings, health endpoints, migrations, embedded servers, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from tests.support import free_port
from vcat import __version__, migrate
from vcat.cli import app as cli_app

pytestmark = [pytest.mark.db, pytest.mark.broker]


def test_version_command() -> None:
    result = CliRunner().invoke(cli_app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == __version__


def test_livez_and_readyz_ok(vcat_env: dict[str, str]) -> None:
    from service.app import create_app

    client = TestClient(create_app())
    assert client.get("/livez").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"


def test_readyz_503_names_the_failing_dependency(
    vcat_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import db
    from service.app import create_app
    from vcat.settings import get_settings

    monkeypatch.setenv("VCAT_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("VCAT_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    db.reset()
    client = TestClient(create_app())
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert "database unreachable" in body["detail"]
    assert "broker unreachable" in body["detail"]
    # any endpoint that needs the database says so: a 503 to retry, not a 500
    for path in ("/search?action=dancing", "/videos"):
        response = client.get(path)
        assert response.status_code == 503, (path, response.text)
        assert response.headers["retry-after"] == "5"
        assert response.json()["detail"] == "the database is unavailable; try again shortly"


def test_unknown_route_is_problem_json(vcat_env: dict[str, str]) -> None:
    from service.app import create_app

    response = TestClient(create_app()).get("/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404


def test_migrations_down_and_up(postgres_server_url: str, database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        migrate.downgrade(database_url, "base")
        with engine.connect() as conn:
            assert (
                conn.execute(
                    text("SELECT count(*) FROM pg_extension WHERE extname='pg_trgm'")
                ).scalar()
                == 0
            )
        migrate.upgrade(database_url, "head")
        with engine.connect() as conn:
            assert (
                conn.execute(text("SELECT similarity('washing hands', 'washing hand')")).scalar()
                > 0.5
            )
        assert "alembic_version" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_redis_fixture_is_clean(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("k", "v")
    assert redis_client.get("k") == b"v"


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    return [int(p) for p, pp in rows if int(pp) == pid]


def _processes_using(path: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(path) in line]


@pytest.mark.slow
def test_vcat_up_embedded_ready_then_clean_stop(tmp_path: Path) -> None:
    """`vcat up` on the embedded default: ready, then SIGTERM leaves no server behind; a second
    start reuses the stored data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCAT_")}
    data = tmp_path / "var"
    env.update(VCAT_DATA_DIR=str(data), VCAT_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    url = f"http://127.0.0.1:{env['VCAT_PORT']}"
    for attempt in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-m", "vcat.cli", "up"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    status = httpx.get(f"{url}/readyz", timeout=2).status_code
                except httpx.HTTPError:
                    status = None
                if status == 200:
                    break
                time.sleep(0.3)
            assert status == 200, proc.stdout.read().decode() if proc.poll() is not None else ""
            if attempt == 0:
                marker = httpx.get(f"{url}/livez").json()
                assert marker == {"status": "ok"}
        finally:
            proc.send_signal(signal.SIGTERM)
            output = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == 0, output
        assert _processes_using(data) == [], output
        assert (data / "postgres" / "data" / "PG_VERSION").exists()
