"""Process-level guarantees: no torch in the API, migrations round-trip, metrics, retention."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import Session

from service.retention import expire_videos
from tests.service.conftest import FakeModel, SeedVideo
from vcat import migrate
from worker import jobs

REPO = Path(__file__).resolve().parents[2]


def test_api_never_imports_torch() -> None:
    code = "import sys, service.app; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.db
def test_migrations_upgrade_downgrade_upgrade(database_url: str) -> None:
    engine = create_engine(database_url)
    catalogue = {
        "videos",
        "models",
        "actions",
        "clips",
        "clip_scores",
        "video_actions",
        "api_keys",
        "audit_log",
        "idempotency_keys",
    }
    try:
        migrate.upgrade(database_url, "head")
        assert catalogue <= set(inspect(engine).get_table_names())
        migrate.downgrade(database_url, "base")
        assert not catalogue & set(inspect(engine).get_table_names())
        migrate.upgrade(database_url, "head")
        inspector = inspect(engine)
        assert catalogue <= set(inspector.get_table_names())
        indexes = {i["name"] for i in inspector.get_indexes("clip_scores")}
        assert "clip_scores_action_video" in indexes
    finally:
        engine.dispose()


@pytest.mark.db
def test_a_video_from_before_claim_leases_is_claimed_and_fenced(
    vcat_env: dict[str, str], database_url: str
) -> None:
    engine = create_engine(database_url)
    vid = uuid.uuid4()
    try:
        migrate.downgrade(database_url, "0003")
        with engine.begin() as conn:  # requeued by the reconciler after two lost workers
            conn.execute(text("INSERT INTO videos (id, source, size, status, attempts) "
                              "VALUES (:v, 'upload', 1, 'queued', 2)"), {"v": vid})  # fmt: skip
        migrate.upgrade(database_url, "head")
        with Session(engine) as session:
            assert session.scalar(text("SELECT claims FROM videos WHERE id = :v"), {"v": vid}) == 2
            claim = jobs.claim(session, vid, max_attempts=3, stale=60)
            assert isinstance(claim, jobs.Claim) and (claim.attempt, claim.lease) == (3, 3)
            assert jobs.heartbeat(session, claim, 0.5)
            assert jobs.store(session, claim, FakeModel(), [(0.0, 1.0, [("idle", 0.9)], None)])
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM videos WHERE id = :v"), {"v": vid})
        engine.dispose()


@pytest.mark.db
@pytest.mark.broker
def test_metrics(client: TestClient, seed_video: SeedVideo) -> None:
    seed_video([[("dancing", 0.9)]])
    client.get("/videos")
    body = client.get("/metrics").text
    assert 'vcat_videos{status="done"} 1.0' in body
    assert 'vcat_http_requests_total{method="GET",route="/videos",status="200"}' in body
    assert "vcat_http_request_duration_seconds_bucket" in body
    assert "vcat_index_queue_depth" in body


@pytest.mark.db
def test_retention_expires_old_videos(db: Session, seed_video: SeedVideo, media_root: Path) -> None:
    old = seed_video([[("dancing", 0.9)]], thumbnails=True)
    new = seed_video([[("dancing", 0.9)]])
    db.execute(
        text("UPDATE videos SET created_at = now() - interval '10 days' WHERE id=:v"), {"v": old}
    )
    db.commit()
    assert expire_videos(db, days=0) == 0
    assert expire_videos(db, now=datetime.now(UTC), days=7) == 1
    assert db.scalar(text("SELECT count(*) FROM videos WHERE id=:v"), {"v": old}) == 0
    assert db.scalar(text("SELECT count(*) FROM videos WHERE id=:v"), {"v": new}) == 1
    assert not (media_root / f"{old}.mp4").exists()
    assert not (media_root / "thumbs" / str(old)).exists()
    assert expire_videos(db, now=datetime.now(UTC) + timedelta(days=30), days=7) == 1


def test_nul_character_is_a_client_error(vcat_env: dict[str, str]) -> None:
    """Found by schemathesis: Postgres text cannot hold NUL; that is a 422, never a 500."""
    from service.app import create_app

    response = TestClient(create_app()).get("/search", params={"action": "\x00"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "NUL" in response.json()["detail"]
