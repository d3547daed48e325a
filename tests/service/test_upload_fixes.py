"""Uploads and media: truncated bodies, idempotency on dedupe, restoring a dropped source,
Range validation, reindex options, broker outage, content-type case, HEAD, odd form parts."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service.models import Video
from tests.service.conftest import SeedVideo, queued, upload

pytestmark = [pytest.mark.db, pytest.mark.broker]

PROBLEM = "application/problem+json"


def _stored_files(media_root: Path) -> list[Path]:
    return [p for p in media_root.rglob("*") if p.is_file()]


def test_truncated_multipart_body_is_rejected_and_leaves_nothing(
    client: TestClient, make_video: Callable[..., Path], db: Session, media_root: Path
) -> None:
    data = make_video(duration=0.5).read_bytes()
    body = (
        b"--zz\r\n"
        b'Content-Disposition: form-data; name="file"; filename="v.mp4"\r\n'
        b"Content-Type: video/mp4\r\n\r\n" + data[: len(data) * 6 // 10]
    )
    r = client.post(
        "/videos", content=body, headers={"content-type": "multipart/form-data; boundary=zz"}
    )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "closing boundary" in r.json()["detail"]
    assert db.scalar(select(func.count()).select_from(Video)) == 0
    assert _stored_files(media_root) == []


def test_idempotency_key_on_a_deduplicated_upload_is_kept(
    client: TestClient, make_video: Callable[..., Path], redis_client: redis.Redis
) -> None:
    a = make_video(duration=0.5)
    b = make_video(duration=0.6)
    first = upload(client, a)
    assert first.status_code == 202
    key = {"Idempotency-Key": "dedupe-key"}
    again = upload(client, a, headers=key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    conflict = upload(client, b, headers=key)
    assert conflict.status_code == 409, conflict.text
    assert "Idempotency-Key" in conflict.json()["detail"]
    replay = upload(client, a, headers=key)
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]


def test_uploading_the_same_bytes_restores_a_dropped_source(
    client: TestClient,
    make_video: Callable[..., Path],
    redis_client: redis.Redis,
    db: Session,
    media_root: Path,
) -> None:
    path = make_video(duration=0.5)
    vid = upload(client, path).json()["id"]
    # what worker.jobs.drop_source does under VCAT_DELETE_SOURCE_AFTER_INDEX
    db.execute(
        text("UPDATE videos SET media_file = NULL, status = 'done' WHERE id = :v"), {"v": vid}
    )
    db.commit()
    (media_root / f"{vid}.mp4").unlink()
    gone = client.post(f"/videos/{vid}/reindex")
    assert gone.status_code == 409
    assert "VCAT_DELETE_SOURCE_AFTER_INDEX" in gone.json()["detail"]
    assert "upload the same file again" in gone.json()["detail"]
    assert client.get(f"/videos/{vid}").json()["media_url"] is None

    again = upload(client, path)
    assert again.status_code == 200 and again.json()["id"] == vid
    assert again.json()["media_url"] == f"/videos/{vid}/media"
    assert (media_root / f"{vid}.mp4").read_bytes() == path.read_bytes()
    assert list((media_root / ".incoming").iterdir()) == []
    assert client.get(f"/videos/{vid}/media").content == path.read_bytes()
    assert client.post(f"/videos/{vid}/reindex").status_code == 202

    # a file lost on disk while the row still names it is restored the same way
    (media_root / f"{vid}.mp4").unlink()
    db.execute(text("UPDATE videos SET status = 'done' WHERE id = :v"), {"v": vid})
    db.commit()
    assert upload(client, path).status_code == 200
    assert (media_root / f"{vid}.mp4").read_bytes() == path.read_bytes()
    assert db.scalar(select(func.count()).select_from(Video)) == 1


def test_media_range_validation(
    client: TestClient, seed_video: SeedVideo, media_root: Path
) -> None:
    vid = seed_video([[("dancing", 0.9)]])
    data = bytes(range(256)) * 4  # 1 KiB
    (media_root / f"{vid}.mp4").write_bytes(data)
    url = f"/videos/{vid}/media"
    for ignored in ("bytes=abc", "bytes=5-2", "items=0-1", "bytes", "bytes=,", "bytes=1-x"):
        r = client.get(url, headers={"Range": ignored})
        assert r.status_code == 200, (ignored, r.status_code, r.text[:200])
        assert r.content == data, ignored
    for unsatisfiable in ("bytes=2000-", "bytes=-0", "bytes=1024-1100", "bytes=2000-,-0"):
        r = client.get(url, headers={"Range": unsatisfiable})
        assert r.status_code == 416, (unsatisfiable, r.status_code)
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.headers["content-range"] == "bytes */1024"
        assert r.json()["status"] == 416
    single = client.get(url, headers={"Range": "bytes=100-199"})
    assert single.status_code == 206 and single.content == data[100:200]
    assert single.headers["content-range"] == "bytes 100-199/1024"
    assert client.get(url, headers={"Range": "Bytes=-10"}).content == data[-10:]
    assert client.get(url, headers={"Range": "bytes=1000-5000"}).content == data[1000:]
    # a set with an unsatisfiable member is served from the satisfiable ones
    some = client.get(url, headers={"Range": "bytes=2000-2100, 10-19"})
    assert some.status_code == 206 and some.content == data[10:20]
    multi = client.get(url, headers={"Range": "bytes=0-9,20-29"})
    assert multi.status_code == 206
    assert multi.headers["content-type"].startswith("multipart/byteranges")
    assert data[:10] in multi.content and data[20:30] in multi.content
    # If-Range naming another version of the file: the Range is ignored, whatever it says
    for other in ('"not-this-etag"', "W/" + multi.headers["etag"]):
        r = client.get(url, headers={"Range": "bytes=2000-", "If-Range": other})
        assert r.status_code == 200 and r.content == data
    same = client.get(url, headers={"Range": "bytes=0-9", "If-Range": multi.headers["etag"]})
    assert same.status_code == 206 and same.content == data[:10]


def test_reindex_without_a_body_keeps_the_stored_options(
    client: TestClient,
    make_video: Callable[..., Path],
    redis_client: redis.Redis,
    db: Session,
) -> None:
    path = make_video(duration=0.5)
    vid = upload(client, path, top_k="3", window="1.5").json()["id"]
    db.execute(text("UPDATE videos SET status = 'done' WHERE id = :v"), {"v": vid})
    db.commit()
    r = client.post(f"/videos/{vid}/reindex")
    assert r.status_code == 202, r.text
    assert r.json()["options"]["top_k"] == 3 and r.json()["options"]["window"] == 1.5
    assert "'top_k': 3" in queued(redis_client)[-1]["kwargsrepr"]
    r = client.post(f"/videos/{vid}/reindex", json={"stride": 0.5})
    assert r.json()["options"] == {"window": 1.5, "stride": 0.5, "top_k": 3}


def test_broker_outage_leaves_the_video_queued_for_the_reconciler(
    client: TestClient,
    make_video: Callable[..., Path],
    redis_client: redis.Redis,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service import queue
    from worker.reconcile import reconcile_once

    def down(*_: object, **__: object) -> str:
        raise queue.QueueUnavailable("could not enqueue indexing: connection refused")

    path = make_video(duration=0.5)
    with monkeypatch.context() as m:
        m.setattr(queue, "enqueue_index", down)
        r = upload(client, path)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith(PROBLEM)
        assert int(r.headers["retry-after"]) > 0
        vid = r.json()["video_id"]
        again = upload(client, path)
        assert again.status_code == 200 and again.json()["id"] == vid
        assert again.json()["status"] == "queued" and again.json()["error"] is None
    assert queued(redis_client) == []
    # the broker is back; once the video is older than VCAT_REQUEUE_QUEUED_AFTER_SECONDS the
    # reconciler sends it
    db.execute(
        text("UPDATE videos SET updated_at = now() - interval '1 day' WHERE id = :v"), {"v": vid}
    )
    db.commit()
    assert reconcile_once()["orphaned"] == 1
    [task] = queued(redis_client)
    assert task["argsrepr"] == repr([vid])


def test_content_type_is_case_insensitive(
    client: TestClient, make_video: Callable[..., Path], redis_client: redis.Redis
) -> None:
    path = make_video(duration=0.5)
    data = path.read_bytes()
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\n\r\n'
        + data
        + b"\r\n--x--\r\n"
    )
    r = client.post(
        "/videos", content=body, headers={"content-type": "Multipart/Form-Data; boundary=x"}
    )
    assert r.status_code == 202, r.text
    r = client.post(
        "/videos", content=b'{"url": "ftp://x/a.mp4"}', headers={"content-type": "application/JSON"}
    )
    assert r.status_code == 422, r.text  # reached the JSON branch: validated, not 415


def test_head_on_media_and_thumbnail(
    client: TestClient, seed_video: SeedVideo, media_root: Path
) -> None:
    vid = seed_video([[("dancing", 0.9)]], thumbnails=True)
    size = (media_root / f"{vid}.mp4").stat().st_size
    r = client.head(f"/videos/{vid}/media")
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == size and r.content == b""
    assert r.headers["accept-ranges"] == "bytes"
    thumb = client.head(f"/videos/{vid}/clips/0/thumbnail")
    assert thumb.status_code == 200 and thumb.content == b""
    assert int(thumb.headers["content-length"]) == 4
    assert client.head(f"/videos/{uuid.uuid4()}/media").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/videos/{video_id}/media"]) == {"get"}


def test_unexpected_or_unnamed_parts_are_named_in_a_422(
    client: TestClient, media_root: Path
) -> None:
    big = b"x" * 10_000
    r = client.post("/videos", files={"other": ("a.mp4", big, "video/mp4")})
    assert r.status_code == 422, r.text
    assert "'other'" in r.json()["detail"] and "`file`" in r.json()["detail"]
    body = b'--zz\r\nContent-Disposition: form-data; filename="a.mp4"\r\n\r\n' + big
    body += b"\r\n--zz--\r\n"
    r = client.post(
        "/videos", content=body, headers={"content-type": "multipart/form-data; boundary=zz"}
    )
    assert r.status_code == 422, r.text
    assert "no name" in r.json()["detail"]
    assert _stored_files(media_root) == []


def test_a_backlog_is_not_requeued_again_and_again(
    client: TestClient, make_video: Callable[..., Path], redis_client: redis.Redis, db: Session
) -> None:
    from service.queue import index_queue
    from worker.reconcile import reconcile_once

    ids = [upload(client, make_video(duration=0.5, variant=i)).json()["id"] for i in range(3)]
    assert len(queued(redis_client)) == 3

    def age() -> None:  # waiting longer than VCAT_REQUEUE_QUEUED_AFTER_SECONDS
        db.execute(text("UPDATE videos SET updated_at = now() - interval '1 day'"))
        db.commit()

    for _ in range(3):  # no worker yet: their messages wait in the queue, nothing is lost
        age()
        assert reconcile_once()["orphaned"] == 0
    assert len(queued(redis_client)) == 3
    redis_client.delete(index_queue())  # the broker lost them (a flush, a restore)
    age()
    assert reconcile_once()["orphaned"] == 3
    assert sorted(t["argsrepr"] for t in queued(redis_client)) == sorted(repr([v]) for v in ids)
