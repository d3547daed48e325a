"""Fixtures for the catalogue API: an app on a clean database, and seeding helpers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from service import audit, auth, search
from service.db import make_engine

TABLES = "videos, models, actions, api_keys, audit_log, idempotency_keys"


@pytest.fixture
def db(vcat_env: dict[str, str]) -> Iterator[Session]:
    """A session on the test database, emptied before the test."""
    engine = make_engine(vcat_env["VCAT_DATABASE_URL"])
    audit.flush()  # nothing of an earlier test's is written into this one's tables
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    auth.clear_cache()
    search.clear_cache()
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


@pytest.fixture
def client(db: Session) -> Iterator[TestClient]:
    from service.app import create_app

    with TestClient(create_app()) as c:
        yield c


@pytest.fixture
def media_root(vcat_env: dict[str, str]) -> Path:
    from vcat.settings import get_settings

    root = get_settings().media_path
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class FakeModel:
    name: str = "demo"
    version: str = "1"
    labels: list[str] = field(
        default_factory=lambda: ["juggling balls", "washing hands", "dancing", "running", "idle"]
    )


SeedVideo = Callable[..., uuid.UUID]


@pytest.fixture
def seed_video(db: Session, media_root: Path) -> SeedVideo:
    """``seed_video(scores, model=FakeModel(), clip_seconds=2.0)``: a done video whose clip i has
    the (label, score) pairs ``scores[i]``; returns its id."""
    from service.index_writer import replace_video_index
    from service.models import Video

    def _seed(
        scores: Sequence[Sequence[tuple[str, float]]],
        model: FakeModel | None = None,
        clip_seconds: float = 2.0,
        thumbnails: bool = False,
    ) -> uuid.UUID:
        vid = uuid.uuid4()
        media = f"{vid}.mp4"
        (media_root / media).write_bytes(b"not really a video")
        db.add(
            Video(
                id=vid,
                source="upload",
                size=18,
                media_file=media,
                status="processing",
                container="mov,mp4,m4a,3gp,3g2,mj2",
                options={},
            )
        )
        db.commit()
        clips = []
        for i, pairs in enumerate(scores):
            thumb = b"\xff\xd8\xff" + bytes([i % 256]) if thumbnails else None
            clips.append((i * clip_seconds, (i + 1) * clip_seconds, list(pairs), thumb))
        replace_video_index(db, vid, model or FakeModel(), clips)
        return vid

    return _seed


def upload(
    client: TestClient, path: Path, headers: dict[str, str] | None = None, **fields: str
) -> httpx.Response:
    """POST ``path`` to /videos as the multipart ``file`` part, with option ``fields``."""
    with open(path, "rb") as fh:
        return client.post(
            "/videos",
            files={"file": (path.name, fh, "video/mp4")},
            data=fields,
            headers=headers or {},
        )


def queued(redis_client: redis.Redis) -> list[dict]:
    """The headers of the Celery messages waiting in the index queue."""
    from service.queue import index_queue

    messages = [json.loads(m) for m in redis_client.lrange(index_queue(), 0, -1)]
    return [m["headers"] for m in messages]
