"""Process-level guarantees: no torch in the API, migrations round-trip, metrics, retention."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import Session

from service import db as db_module
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
    assert db.scalar(text("SELECT count(*) FROM thumbnails WHERE video_id=:v"), {"v": old}) == 0
    assert expire_videos(db, now=datetime.now(UTC) + timedelta(days=30), days=7) == 1


def test_nul_character_is_a_client_error(vcat_env: dict[str, str]) -> None:
    """Found by schemathesis: Postgres text cannot hold NUL; that is a 422, never a 500."""
    from service.app import create_app

    response = TestClient(create_app()).get("/search", params={"action": "\x00"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "NUL" in response.json()["detail"]


@pytest.mark.db
def test_thumbnail_files_move_into_postgres_and_back(media_root: Path, database_url: str) -> None:
    """Migration 0005 reads each thumbnail file into ``thumbnails``; downgrade writes them out."""
    engine = create_engine(database_url)
    vid, model = uuid.uuid4(), f"m-{uuid.uuid4().hex[:8]}"
    folder = media_root / "thumbs" / str(vid)
    try:
        migrate.downgrade(database_url, "0004")
        folder.mkdir(parents=True)
        (folder / "c1-ab-000000.jpg").write_bytes(b"\xff\xd8 clip 0")  # clip 1's file is gone
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO videos (id, source, size, status) "
                              "VALUES (:v, 'upload', 1, 'done')"), {"v": vid})  # fmt: skip
            action = conn.scalar(
                text("WITH m AS (INSERT INTO models (name, version, num_labels) "
                     "VALUES (:m, '1', 1) RETURNING id) "
                     "INSERT INTO actions (model_id, idx, name) SELECT id, 0, 'x' FROM m "
                     "RETURNING id"),
                {"m": model},
            )  # fmt: skip
            for idx, thumb in enumerate((f"thumbs/{vid}/c1-ab-000000.jpg",
                                         f"thumbs/{vid}/c1-ab-000001.jpg", None)):  # fmt: skip
                conn.execute(
                    text('INSERT INTO clips (video_id, idx, start, "end", thumbnail) '
                         "VALUES (:v, :i, :i, :i + 1, :t)"),
                    {"v": vid, "i": idx, "t": thumb},
                )  # fmt: skip
                conn.execute(
                    text('INSERT INTO segments (video_id, action_id, first_clip, last_clip, clips, '
                         'start, "end", max_score, mean_score, threshold, thumbnail, '
                         "video_created) VALUES (:v, :a, :i, :i, 1, :i, :i + 1, 0.9, 0.9, 0.5, "
                         ":t, now())"),
                    {"v": vid, "a": action, "i": idx, "t": thumb},
                )  # fmt: skip
        migrate.upgrade(database_url, "head")

        def moved() -> list[tuple[int, bytes | None, bool]]:
            with engine.connect() as conn:
                return [(i, None if j is None else bytes(j), has) for i, j, has in conn.execute(
                    text("""SELECT c.idx, t.jpeg, s.has_thumbnail FROM clips c
                            LEFT JOIN thumbnails t ON t.video_id = c.video_id AND t.clip_idx = c.idx
                            JOIN segments s ON s.video_id = c.video_id AND s.first_clip = c.idx
                            WHERE c.video_id = :v ORDER BY c.idx"""), {"v": vid})]  # fmt: skip

        assert moved() == [(0, b"\xff\xd8 clip 0", True), (1, None, False), (2, None, False)]

        migrate.downgrade(database_url, "0004")  # written back out as files
        with engine.connect() as conn:
            paths = conn.execute(
                text("SELECT c.thumbnail, s.thumbnail FROM clips c JOIN segments s "
                     "ON s.video_id = c.video_id AND s.first_clip = c.idx "
                     "WHERE c.video_id = :v ORDER BY c.idx"), {"v": vid}
            ).all()  # fmt: skip
        written = f"thumbs/{vid}/c0-0005-000000.jpg"
        assert [tuple(p) for p in paths] == [(written, written), (None, None), (None, None)]
        assert (media_root / written).read_bytes() == b"\xff\xd8 clip 0"

        # Without the media directory the upgrade refuses, rather than drop every thumbnail.
        (media_root / "thumbs").rename(media_root / "elsewhere")
        with pytest.raises(RuntimeError, match="run `vcat migrate` where the media directory"):
            migrate.upgrade(database_url, "head")
        (media_root / "elsewhere").rename(media_root / "thumbs")
        migrate.upgrade(database_url, "head")
        assert moved() == [(0, b"\xff\xd8 clip 0", True), (1, None, False), (2, None, False)]
    finally:
        migrate.upgrade(database_url, "head")
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM videos WHERE id = :v"), {"v": vid})
            conn.execute(text("DELETE FROM models WHERE name = :m"), {"m": model})
        engine.dispose()


def test_pooled_connections_are_tested_only_after_idling(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection back from use a moment ago is handed out untested (no round trip); one idle
    for PING_AFTER_IDLE is tested first, and a dead one is replaced, unseen by its user."""
    engine = db_module.make_engine(database_url)
    pings: list[object] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    backend = "SELECT pg_backend_pid()"
    try:
        with engine.connect() as conn:
            first = conn.execute(text(backend)).scalar_one()
        with engine.connect() as conn:  # at once: not tested
            assert conn.execute(text(backend)).scalar_one() == first
        assert pings == []
        libpq_url = database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(libpq_url, autocommit=True) as admin:  # the server drops it
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        time.sleep(db_module.PING_AFTER_IDLE + 0.1)
        with engine.connect() as conn:  # idle: tested, found dead, replaced
            again = conn.execute(text(backend)).scalar_one()
        assert len(pings) == 1 and again != first
    finally:
        engine.dispose()
