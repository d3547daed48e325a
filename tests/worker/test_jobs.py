"""A job's life in Postgres: claim once, fence by lease, give up after N attempts."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service.models import Clip, Video
from tests.service.conftest import FakeModel, SeedVideo
from worker import jobs

pytestmark = [pytest.mark.db]
CLIPS = [(0.0, 1.0, [("idle", 0.9)], None), (1.0, 2.0, [("dancing", 0.8)], None)]


def _queue(db: Session, vid: uuid.UUID, *, status: str = "queued", age: float = 0.0) -> None:
    db.execute(
        text("UPDATE videos SET status = :s, updated_at = now() - make_interval(secs => :age) "
             "WHERE id = :v"),
        {"v": vid, "s": status, "age": age},
    )  # fmt: skip
    db.commit()


def _video(db: Session, vid: uuid.UUID) -> Video:
    db.expire_all()
    video = db.get(Video, vid)
    assert video is not None
    return video


def test_claim_runs_a_job_once_and_store_finishes_it(db: Session, seed_video: SeedVideo) -> None:
    vid = seed_video([])
    _queue(db, vid)
    first = jobs.claim(db, vid, max_attempts=3, stale=60)
    assert isinstance(first, jobs.Claim) and first.attempt == 1
    assert jobs.claim(db, vid, max_attempts=3, stale=60) is None  # a duplicate delivery
    assert jobs.heartbeat(db, first, 0.5)
    assert jobs.store(db, first, FakeModel(), CLIPS)
    video = _video(db, vid)
    assert (video.status, video.progress, video.attempts) == ("done", 1.0, 1)
    assert jobs.claim(db, vid, max_attempts=3, stale=60) is None  # done stays done


def test_a_taken_over_claim_can_no_longer_write(db: Session, seed_video: SeedVideo) -> None:
    vid = seed_video([])
    _queue(db, vid)
    lost = jobs.claim(db, vid, max_attempts=3, stale=60)
    assert isinstance(lost, jobs.Claim)
    _queue(db, vid, status="processing", age=120)  # its heartbeats stopped
    second = jobs.claim(db, vid, max_attempts=3, stale=60)
    assert isinstance(second, jobs.Claim) and second.attempt == 2
    assert not jobs.heartbeat(db, lost, 0.9)
    assert not jobs.store(db, lost, FakeModel(), CLIPS)
    assert db.scalar(select(func.count()).select_from(Clip).where(Clip.video_id == vid)) == 0
    assert _video(db, vid).status == "processing"
    assert jobs.store(db, second, FakeModel(), CLIPS)
    assert db.scalar(select(func.count()).select_from(Clip).where(Clip.video_id == vid)) == 2


def test_a_claim_from_before_a_reindex_can_no_longer_write(
    client: TestClient, db: Session, seed_video: SeedVideo
) -> None:
    vid = seed_video([[("dancing", 0.9)]])  # indexed once: one clip
    _queue(db, vid)
    stale = jobs.claim(db, vid, max_attempts=3, stale=60)
    assert isinstance(stale, jobs.Claim) and stale.attempt == 1
    _queue(db, vid, status="processing", age=120)  # its worker hangs (GC pause, SIGSTOP, ...)
    assert [o.video_id for o in jobs.stale_processing(db, stale=60)] == [vid]
    assert client.post(f"/videos/{vid}/reindex", json={"top_k": 3}).status_code == 202
    fresh = jobs.claim(db, vid, max_attempts=3, stale=60)
    # the reindex counts attempts afresh, but the new claim's fence is not the stale one's
    assert isinstance(fresh, jobs.Claim) and fresh.attempt == 1
    assert not jobs.heartbeat(db, stale, 0.9)
    assert not jobs.fail(db, stale, "stale", retry=True, max_attempts=3)  # no retry either
    assert not jobs.store(db, stale, FakeModel(), CLIPS)
    video = _video(db, vid)
    assert (video.status, video.error, video.progress) == ("processing", None, 0.0)
    assert db.scalar(select(func.count()).select_from(Clip).where(Clip.video_id == vid)) == 1
    assert jobs.heartbeat(db, fresh, 0.5)
    assert jobs.store(db, fresh, FakeModel(), CLIPS)
    assert _video(db, vid).status == "done"
    assert db.scalar(select(func.count()).select_from(Clip).where(Clip.video_id == vid)) == 2


def test_fail_retries_then_gives_up_with_the_reason(db: Session, seed_video: SeedVideo) -> None:
    vid = seed_video([])
    _queue(db, vid)
    for attempt in (1, 2):
        claim = jobs.claim(db, vid, max_attempts=2, stale=60)
        assert isinstance(claim, jobs.Claim) and claim.attempt == attempt
        again = jobs.fail(db, claim, f"boom {attempt}", retry=True, max_attempts=2)
        assert again == (attempt < 2)
    video = _video(db, vid)
    assert (video.status, video.error) == ("failed", "boom 2")
    # A video whose worker dies every time (no error written) ends failed on the claim after N.
    _queue(db, vid)
    db.execute(text("UPDATE videos SET attempts = 2, error = NULL WHERE id = :v"), {"v": vid})
    db.commit()
    gave_up = jobs.claim(db, vid, max_attempts=2, stale=60)
    assert isinstance(gave_up, jobs.GaveUp) and jobs.WORKER_LOST in gave_up.error
    assert _video(db, vid).status == "failed"
