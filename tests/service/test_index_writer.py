"""The worker's write path: ensure_model, replace_video_index (one transaction, replaces)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service.index_writer import (
    ClaimLost,
    IndexDataError,
    ensure_model,
    rebuild_segments,
    replace_video_index,
)
from service.models import Action, Clip, ClipScore, Video
from tests.service.conftest import FakeModel, SeedVideo

pytestmark = [pytest.mark.db]


def test_ensure_model_registers_labels_once(db: Session) -> None:
    model = FakeModel()
    first = ensure_model(db, model.name, model.version, model.labels)
    assert ensure_model(db, model.name, model.version, model.labels) == first
    names = db.scalars(select(Action.name).where(Action.model_id == first).order_by(Action.idx))
    assert list(names) == model.labels
    with pytest.raises(IndexDataError, match="new version"):
        ensure_model(db, model.name, model.version, ["other"])
    assert ensure_model(db, model.name, "2", ["other"]) != first
    with pytest.raises(IndexDataError):
        ensure_model(db, "x", "1", ["ok", " "])


def test_replace_replaces_and_marks_done(db: Session, seed_video: SeedVideo) -> None:
    vid = seed_video([[("dancing", 0.9), ("running", 0.1)]] * 3)
    video = db.get(Video, vid)
    assert video is not None and video.status == "done" and video.progress == 1.0
    n = replace_video_index(db, vid, FakeModel(), [(0.0, 1.0, [("idle", 0.7)], None)])
    assert n == 1
    assert db.scalar(select(func.count()).select_from(Clip).where(Clip.video_id == vid)) == 1
    rows = db.execute(select(ClipScore.rank, ClipScore.score).where(ClipScore.video_id == vid))
    assert [(r.rank, round(r.score, 3)) for r in rows] == [(1, 0.7)]
    summary = db.execute(
        text("SELECT segments, max_score FROM video_actions WHERE video_id=:v"), {"v": vid}
    ).all()
    assert [(s, round(m, 3)) for s, m in summary] == [(1, 0.7)]


@pytest.mark.parametrize(
    "clips",
    [
        [(0.0, 1.0, [("not a label", 0.5)], None)],
        [(0.0, 1.0, [("idle", 1.5)], None)],
        [(2.0, 1.0, [("idle", 0.5)], None)],
    ],
)
def test_bad_results_write_nothing(db: Session, seed_video: SeedVideo, clips: list[tuple]) -> None:
    vid = seed_video([[("dancing", 0.9)]])
    with pytest.raises(IndexDataError):
        replace_video_index(db, vid, FakeModel(), clips)
    # the earlier result is intact
    assert (
        db.scalar(select(func.count()).select_from(ClipScore).where(ClipScore.video_id == vid)) == 1
    )


def test_unknown_video(db: Session) -> None:
    with pytest.raises(IndexDataError, match="no video"):
        replace_video_index(db, uuid.uuid4(), FakeModel(), [(0.0, 1.0, [], None)])


def test_lease_fences_the_write(db: Session, seed_video: SeedVideo) -> None:
    vid = seed_video([[("dancing", 0.9)]])
    # claim 2, the first attempt after a reindex
    db.execute(text("UPDATE videos SET status = 'processing', attempts = 1, claims = 2 "
                    "WHERE id = :v"), {"v": vid})  # fmt: skip
    db.commit()
    for lease in (1, 3):  # a worker whose claim was taken over writes nothing
        with pytest.raises(ClaimLost):
            replace_video_index(db, vid, FakeModel(), [(0.0, 1.0, [("idle", 0.7)], None)],
                                lease=lease)  # fmt: skip
        video = db.get(Video, vid)
        assert video is not None and video.status == "processing"
        db.expire_all()
    assert replace_video_index(db, vid, FakeModel(), [(0.0, 1.0, [("idle", 0.7)], None)] * 2,
                               lease=2) == 2  # fmt: skip
    video = db.get(Video, vid)
    assert video is not None and video.status == "done"
    assert db.scalar(select(func.count()).select_from(Clip).where(Clip.video_id == vid)) == 2
    segments = db.execute(
        text("SELECT first_clip, last_clip FROM segments WHERE video_id = :v"), {"v": vid}
    ).all()
    assert [tuple(r) for r in segments] == [(0, 1)]


def test_rebuild_segments_at_a_new_threshold(db: Session, seed_video: SeedVideo) -> None:
    seed_video([[("dancing", 0.9)], [("dancing", 0.6)], [("dancing", 0.9)]])

    def stored() -> list[tuple[int, int, float]]:
        rows = db.execute(text("SELECT first_clip, last_clip, threshold FROM segments ORDER BY 1"))
        return [(a, b, round(t, 3)) for a, b, t in rows]

    assert stored() == [(0, 2, 0.5)]
    assert rebuild_segments(db, 0.7) == 2
    assert stored() == [(0, 0, 0.7), (2, 2, 0.7)]
    counts = db.execute(text("SELECT segments FROM video_actions")).scalars().all()
    assert counts == [2]


def test_scores_name_their_actions_and_repeats_keep_the_first(
    db: Session, seed_video: SeedVideo
) -> None:
    ensure_model(db, "other", "1", ["dancing", "running"])  # registered first: other action ids
    db.commit()
    vid = seed_video([[("idle", 0.5)]])
    clips = [
        (0.0, 1.0, [("running", 0.6), ("dancing", 0.3), ("running", 0.1)], b"\xff\xd8jpeg"),
        (1.0, 2.0, [("washing hands", 0.9)], None),
    ]
    assert replace_video_index(db, vid, FakeModel(), clips) == 2
    rows = db.execute(
        text("""SELECT s.clip_idx, m.name, a.name, s.rank, s.score FROM clip_scores s
                JOIN actions a ON a.id = s.action_id JOIN models m ON m.id = a.model_id
                WHERE s.video_id = :v ORDER BY s.clip_idx, s.rank"""),
        {"v": vid},
    ).all()
    assert [(c, m, a, r, round(s, 3)) for c, m, a, r, s in rows] == [
        (0, "demo", "running", 1, 0.6),
        (0, "demo", "dancing", 2, 0.3),
        (1, "demo", "washing hands", 1, 0.9),
    ]
    stored = db.execute(
        text("""SELECT c.idx, c.start, c."end", t.jpeg FROM clips c
                LEFT JOIN thumbnails t ON t.video_id = c.video_id AND t.clip_idx = c.idx
                WHERE c.video_id = :v ORDER BY c.idx"""),
        {"v": vid},
    ).all()
    assert [tuple(r) for r in stored] == [(0, 0.0, 1.0, b"\xff\xd8jpeg"), (1, 1.0, 2.0, None)]
    with pytest.raises(IndexDataError, match="clip 0: a thumbnail is JPEG bytes"):
        replace_video_index(db, vid, FakeModel(), [(0.0, 1.0, [("idle", 0.5)], "a/path.jpg")])
    assert db.scalar(text("SELECT count(*) FROM thumbnails WHERE video_id = :v"), {"v": vid}) == 1


def test_an_empty_result_clears_the_index(db: Session, seed_video: SeedVideo) -> None:
    vid = seed_video([[("dancing", 0.9)]] * 2)
    assert replace_video_index(db, vid, FakeModel(), []) == 0
    for table in ("clips", "clip_scores", "segments", "video_actions"):
        count = db.scalar(text(f"SELECT count(*) FROM {table} WHERE video_id = :v"), {"v": vid})
        assert count == 0, table
    video = db.get(Video, vid)
    assert video is not None and video.status == "done"


def test_a_video_the_caller_loaded_shows_the_stored_state(
    db: Session, seed_video: SeedVideo
) -> None:
    vid = seed_video([[("dancing", 0.9)]])
    db.execute(text("UPDATE videos SET status = 'processing', claims = 1 WHERE id = :v"),
               {"v": vid})  # fmt: skip
    db.commit()
    video = db.get(Video, vid)
    assert video is not None and video.status == "processing"
    replace_video_index(db, vid, FakeModel(), [(0.0, 1.0, [("idle", 0.7)], None)], lease=1)
    assert video.status == "done" and video.progress == 1.0 and video.indexed_at is not None
