"""Videos: streamed upload, dedupe, idempotency, limits, bad input, listing, delete, reindex,
media with Range."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service.models import Clip, ClipScore, Thumbnail, Video
from tests import videos as test_videos
from tests.service.conftest import SeedVideo, queued, upload

pytestmark = [pytest.mark.db, pytest.mark.broker]


def test_upload_probes_stores_and_enqueues(
    client: TestClient,
    make_video: Callable[..., Path],
    redis_client: redis.Redis,
    media_root: Path,
    db: Session,
) -> None:
    path = make_video("clip.mp4", duration=1.0)
    r = upload(client, path, model="other", top_k="3")
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == f"/videos/{body['id']}"
    assert body["status"] == "queued" and body["codec"] == "h264"
    assert body["width"] == 160 and body["height"] == 120
    assert body["duration"] == pytest.approx(1.0, abs=0.1)
    assert body["original_name"] == "clip.mp4" and body["size"] == path.stat().st_size
    assert body["options"]["top_k"] == 3 and body["model"] == "other"
    import hashlib

    assert body["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (media_root / f"{body['id']}.mp4").read_bytes() == path.read_bytes()
    assert list((media_root / ".incoming").iterdir()) == []
    [task] = queued(redis_client)
    assert task["task"] == "vcat.index_video"
    assert task["argsrepr"] == repr([body["id"]])
    # the 202 body is built without reading the row back: it must be what the row says
    assert client.get(f"/videos/{body['id']}").json() == body
    from service import audit
    from service.models import AuditEntry

    audit.flush()
    [entry] = db.scalars(select(AuditEntry)).all()
    assert (entry.action, str(entry.video_id)) == ("upload", body["id"])
    assert entry.detail == {"source": "upload", "url": None, "size": path.stat().st_size}
    # identical bytes again: the same video, nothing new queued
    again = upload(client, path)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert len(queued(redis_client)) == 1
    assert db.scalar(select(func.count()).select_from(Video)) == 1


def test_identical_upload_racing_an_uncommitted_one_gets_that_video(
    client: TestClient, make_video: Callable[..., Path], db: Session, media_root: Path
) -> None:
    import hashlib
    import threading

    path = make_video(duration=0.5)
    other = Video(id=uuid.uuid4(), source="upload", size=1, status="queued", options={},
                  sha256=hashlib.sha256(path.read_bytes()).hexdigest())  # fmt: skip
    db.add(other)
    db.flush()  # inserted, not committed: the upload's own insert waits on the unique index
    result: list[httpx.Response] = []
    uploader = threading.Thread(target=lambda: result.append(upload(client, path)))
    uploader.start()
    uploader.join(timeout=1.5)
    assert uploader.is_alive()  # blocked behind the open transaction
    db.commit()
    uploader.join(timeout=30)
    assert result and result[0].status_code == 200, result[0].text if result else "no response"
    assert result[0].json()["id"] == str(other.id)
    assert db.scalar(select(func.count()).select_from(Video)) == 1
    assert not [p for p in media_root.glob("*.mp4")]  # the loser's file is gone
    assert list((media_root / ".incoming").iterdir()) == []


def test_idempotency_key(
    client: TestClient, make_video: Callable[..., Path], redis_client: redis.Redis
) -> None:
    a = make_video(duration=0.5)
    b = make_video(duration=0.6)
    key = {"Idempotency-Key": "abc-123"}
    first = upload(client, a, headers=key)
    assert first.status_code == 202
    replay = upload(client, a, headers=key)
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    conflict = upload(client, b, headers=key)
    assert conflict.status_code == 409
    assert "Idempotency-Key" in conflict.json()["detail"]
    assert upload(client, a, headers=key, top_k="2").status_code == 409  # other options
    assert len(queued(redis_client)) == 1


def test_size_limit_counts_bytes_read(
    client: TestClient,
    make_video: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    media_root: Path,
) -> None:
    from vcat.settings import get_settings

    path = make_video(duration=1.0)
    monkeypatch.setenv("VCAT_MAX_UPLOAD_BYTES", str(path.stat().st_size - 1))
    get_settings.cache_clear()
    r = upload(client, path)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert list((media_root / ".incoming").iterdir()) == []


def test_non_videos_are_rejected(
    client: TestClient, tmp_path: Path, media_root: Path, redis_client: redis.Redis
) -> None:
    cases = {
        "random.mp4": test_videos.make_random_bytes(tmp_path / "random.mp4"),
        "image.png": test_videos.make_image(tmp_path / "image.png"),
        "audio.m4a": test_videos.make_audio_only(tmp_path / "audio.m4a"),
        "empty.mp4": test_videos.make_zero_byte(tmp_path / "empty.mp4"),
    }
    for name, path in cases.items():
        r = upload(client, path)
        assert r.status_code in (415, 422), (name, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "not a decodable video" in r.json()["detail"], name
    assert list((media_root / ".incoming").iterdir()) == []
    assert queued(redis_client) == []


def test_malformed_requests_are_4xx(client: TestClient, make_video: Callable[..., Path]) -> None:
    assert (
        client.post("/videos", content=b"x", headers={"content-type": "text/plain"}).status_code
        == 415
    )
    r = client.post("/videos", data={"model": "x"}, files={"other": ("a", b"b")})
    assert r.status_code == 422 and "file" in r.json()["detail"]
    r = client.post(
        "/videos",
        content=b"--zz\r\nbroken",
        headers={"content-type": "multipart/form-data; boundary=zz"},
    )
    assert r.status_code in (400, 422)
    assert (
        client.post(
            "/videos", content=b"x", headers={"content-type": "multipart/form-data"}
        ).status_code
        == 400
    )
    path = make_video(duration=0.5)
    assert upload(client, path, top_k="0").status_code == 422
    assert upload(client, path, bogus="1").status_code == 422
    assert client.post("/videos", json={"url": "ftp://example.com/a.mp4"}).status_code == 422
    assert client.post("/videos", json={"nothing": 1}).status_code == 422
    assert (
        client.post(
            "/videos", content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_list_pagination_and_status_filter(
    client: TestClient, seed_video: SeedVideo, db: Session
) -> None:
    ids = [seed_video([[("dancing", 0.9)]]) for _ in range(5)]
    db.execute(text("UPDATE videos SET status='failed', error='boom' WHERE id=:v"), {"v": ids[0]})
    db.commit()
    seen, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/videos", params=params).json()
        seen += [v["id"] for v in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [str(v) for v in reversed(ids)]  # newest first
    failed = client.get("/videos", params={"status": "failed"}).json()["items"]
    assert [(v["id"], v["error"]) for v in failed] == [(str(ids[0]), "boom")]
    assert client.get("/videos", params={"cursor": "nope"}).status_code == 422
    assert client.get(f"/videos/{uuid.uuid4()}").status_code == 404
    assert client.get("/videos/not-a-uuid").status_code == 422


def test_delete_cascades_and_is_idempotent(
    client: TestClient, seed_video: SeedVideo, db: Session, media_root: Path
) -> None:
    vid = seed_video([[("dancing", 0.9)], [("dancing", 0.8)]], thumbnails=True)
    keep = seed_video([[("dancing", 0.9)]])
    legacy = media_root / "thumbs" / str(vid)  # thumbnail files from before migration 0005
    legacy.mkdir(parents=True)
    (legacy / "c1-abcd-000000.jpg").write_bytes(b"\xff\xd8\xff")
    assert client.get(f"/videos/{vid}/clips/1/thumbnail").status_code == 200
    assert client.delete(f"/videos/{vid}").status_code == 204
    for model in (Clip, ClipScore, Thumbnail):
        assert db.scalar(select(func.count()).select_from(model).where(model.video_id == vid)) == 0
    assert db.scalar(text("SELECT count(*) FROM video_actions WHERE video_id=:v"), {"v": vid}) == 0
    assert not (media_root / f"{vid}.mp4").exists()
    assert not (media_root / "thumbs" / str(vid)).exists()
    assert client.get(f"/videos/{vid}").status_code == 404
    assert client.delete(f"/videos/{vid}").status_code == 204  # idempotent
    assert [
        s["video_id"] for s in client.get("/search", params={"action": "dancing"}).json()["items"]
    ] == [str(keep)]


def test_reindex(
    client: TestClient,
    seed_video: SeedVideo,
    redis_client: redis.Redis,
    db: Session,
    media_root: Path,
) -> None:
    vid = seed_video([[("dancing", 0.9)]])
    r = client.post(f"/videos/{vid}/reindex", json={"model": "bigger", "top_k": 7})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.json()["model"] == "bigger"
    [task] = queued(redis_client)
    assert "'model': 'bigger'" in task["kwargsrepr"] and "'top_k': 7" in task["kwargsrepr"]
    db.execute(text("UPDATE videos SET status='processing' WHERE id=:v"), {"v": vid})
    db.commit()
    assert client.post(f"/videos/{vid}/reindex").status_code == 409
    db.execute(text("UPDATE videos SET status='done' WHERE id=:v"), {"v": vid})
    db.commit()
    (media_root / f"{vid}.mp4").unlink()
    assert client.post(f"/videos/{vid}/reindex").status_code == 409
    assert client.post(f"/videos/{uuid.uuid4()}/reindex").status_code == 404
    assert client.post(f"/videos/{vid}/reindex", json={"top_k": 0}).status_code == 422


def test_media_supports_range(
    client: TestClient, make_video: Callable[..., Path], redis_client: redis.Redis
) -> None:
    path = make_video(duration=1.0)
    vid = upload(client, path).json()["id"]
    data = path.read_bytes()
    full = client.get(f"/videos/{vid}/media")
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "video/mp4"
    assert full.headers["accept-ranges"] == "bytes"
    part = client.get(f"/videos/{vid}/media", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(f"/videos/{vid}/media", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    bad = client.get(f"/videos/{vid}/media", headers={"Range": f"bytes={len(data) + 5}-"})
    assert bad.status_code == 416


def test_upload_holds_no_database_connection_while_streaming(
    db: Session, make_video: Callable[..., Path], redis_client: redis.Redis
) -> None:
    """A slow client must not pin a pooled connection (idle in transaction) for its upload
    (here auth runs a query: are any keys in force?).

    Driven through ASGI directly: TestClient reads the whole body before calling the app."""
    from service.app import create_app

    data = make_video(duration=0.5).read_bytes()
    boundary = "b0undary"
    chunks = [
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="v.mp4"\r\n\r\n' + data[:1000],
        data[1000:] + f"\r\n--{boundary}--\r\n".encode(),
    ]
    seen: list[int] = []
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if len(chunks) == 1:  # mid-upload: the app has authenticated and is streaming
            seen.append(
                db.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE state = 'idle in transaction' AND pid <> pg_backend_pid()"
                    )
                )
            )
            db.rollback()
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/videos",
        "raw_path": b"/videos",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "headers": [
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
        ],
    }
    asyncio.run(create_app()(scope, receive, send))
    assert sent[0]["status"] == 202, sent
    assert seen == [0]
