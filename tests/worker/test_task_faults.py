"""The indexing task under faults: stale attempts, reindex races, failing engines and stores.

The task runs in this process on a fake engine (a real IndexEngine over a predictor that
returns zeros), against the test database and real video files."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tests import videos
from tests.service.conftest import SeedVideo
from vcat.settings import get_settings
from worker.tsm.meta import ModelMeta
from worker.video.pipeline import IndexEngine

LABELS = ["left", "middle", "right"]
META = ModelMeta(name="fake", arch="resnet18", num_segments=4, labels=LABELS, input_size=48,
                 resize_short=64, window_seconds=1.0, stride_seconds=1.0)  # fmt: skip


def make_engine(delay: float = 0.0, producers: int = 2, meta: ModelMeta = META) -> IndexEngine:
    def predict(x: torch.Tensor) -> torch.Tensor:
        time.sleep(delay)
        return torch.zeros((x.shape[0], len(META.labels)))

    return IndexEngine(predict, meta, batch_size=2, producers=producers)  # type: ignore[arg-type]


def make_row(db: Session, media_root: Path, duration: float, **row: Any) -> uuid.UUID:
    from service.models import Video

    vid = uuid.uuid4()
    videos.make_video(media_root / f"{vid}.mp4", width=96, height=64, fps=10, duration=duration)
    fields = {"status": "queued", "options": {}, "model_name": "fake", **row}
    db.add(Video(id=vid, source="upload", size=1, media_file=f"{vid}.mp4", duration=duration,
                 **fields))  # fmt: skip
    db.commit()
    return vid


def run_task(vid: uuid.UUID, **kwargs: Any) -> dict[str, Any]:
    from worker.celery_app import app
    from worker.tasks import index_video

    app.finalize(auto=True)
    try:
        return dict(index_video(str(vid), **{"model": "fake", **kwargs}))
    except Exception as exc:  # called directly, self.retry raises
        return {"raised": f"{type(exc).__name__}: {exc}"}


def row(db: Session, vid: uuid.UUID) -> Any:
    db.expire_all()
    return db.execute(
        text("SELECT status, attempts, error, model_name FROM videos WHERE id = :v"), {"v": vid}
    ).one()


def stored_thumbs(db: Session, vid: uuid.UUID) -> list[bytes]:
    """The stored index's thumbnails, one JPEG per clip (a clip without one fails here)."""
    db.expire_all()
    rows = db.execute(
        text("""SELECT t.jpeg FROM clips c
                LEFT JOIN thumbnails t ON t.video_id = c.video_id AND t.clip_idx = c.idx
                WHERE c.video_id = :v ORDER BY c.idx"""),
        {"v": vid},
    ).scalars()
    jpegs = [bytes(j) for j in rows]
    assert all(j.startswith(b"\xff\xd8") for j in jpegs)
    return jpegs


def no_thumbnail_files(media_root: Path) -> bool:
    return not (media_root / "thumbs").exists()


@pytest.fixture
def engines(db: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, IndexEngine]]:
    """Model name -> engine for the task; a name not in it fails like a missing model."""
    import worker.tasks as tasks

    table: dict[str, IndexEngine] = {}

    @contextmanager
    def engine_for(name: str) -> Iterator[IndexEngine]:
        if name not in table:
            raise tasks.ModelUnavailable(f"no model {name!r}")
        yield table[name]

    monkeypatch.setattr(tasks, "engine_for", engine_for)
    monkeypatch.setattr(tasks, "HEARTBEAT_SECONDS", 0.3)
    yield table
    for engine in table.values():
        engine.close()


def test_reindex_counts_attempts_afresh(client: TestClient, db: Session, media_root: Path) -> None:
    vid = make_row(db, media_root, 2, status="failed", attempts=3, claims=3, error="gave up")
    assert client.post(f"/videos/{vid}/reindex").status_code == 202
    assert tuple(row(db, vid)[:2]) == ("queued", 0)  # a dead-lettered video can be revived
    # but its claims count on: they are the workers' fencing tokens (worker/jobs.py)
    assert db.scalar(text("SELECT claims FROM videos WHERE id = :v"), {"v": vid}) == 3


def test_the_row_not_the_message_says_how_to_index(
    db: Session, media_root: Path, engines: dict[str, IndexEngine]
) -> None:
    bigger = ModelMeta(**{**META.__dict__, "name": "bigger"})
    engines["fake"], engines["bigger"] = make_engine(), make_engine(meta=bigger)
    # A reindex to another model and stride while the first message still waited
    vid = make_row(db, media_root, 6, model_name="bigger", options={"stride": 3.0})
    assert run_task(vid, model="fake", stride=1.0)["outcome"] == "done"
    assert row(db, vid).model_name == "bigger"
    assert len(stored_thumbs(db, vid)) == 3  # 6 s at stride 3 (and the tail); stride 1: 6


def test_a_model_imported_again_serves_the_next_job(
    db: Session, media_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warm engine is kept while the model's files stay the same; `vcat models import`
    under the same name (a new directory renamed into place) loads the new copy for the next
    job, and the old engine closes once the last job using it ends."""
    import worker.tasks as tasks
    from worker.models import resolve_model
    from worker.tsm.store import META_FILE, StoreError

    store = tmp_path / "models"
    monkeypatch.setenv("VCAT_MODEL_DIR", str(store))
    get_settings.cache_clear()
    monkeypatch.setattr(tasks, "_engines", {})
    loaded: list[IndexEngine] = []

    def load(name: str) -> IndexEngine:  # the real loader's checks, a fake model
        try:
            resolve_model(name)
        except StoreError as exc:
            raise tasks.ModelUnavailable(str(exc)) from None
        meta = ModelMeta(**{**META.__dict__, "version": str(len(loaded) + 1)})
        loaded.append(make_engine(meta=meta))
        return loaded[-1]

    def import_model() -> None:  # as worker.tsm.store.save_model replaces a model
        incoming = store / ".fake.new"
        incoming.mkdir(parents=True)
        (incoming / META_FILE).write_text("{}")
        if (store / "fake").exists():
            shutil.rmtree(store / "fake")
        incoming.rename(store / "fake")

    def stored_version(vid: uuid.UUID) -> str:
        return str(db.scalar(
            text("SELECT m.version FROM videos v JOIN models m ON m.id = v.model_id "
                 "WHERE v.id = :v"), {"v": vid},
        ))  # fmt: skip

    monkeypatch.setattr(tasks, "_load_engine", load)
    try:
        import_model()
        first, second = (make_row(db, media_root, 2) for _ in range(2))
        assert run_task(first)["outcome"] == run_task(second)["outcome"] == "done"
        assert len(loaded) == 1  # kept warm between jobs
        with tasks.engine_for("fake") as running:  # a job still running on the first copy
            import_model()
            third = make_row(db, media_root, 2)
            assert run_task(third)["outcome"] == "done"
            assert len(loaded) == 2 and running is loaded[0]
            assert running._thread.is_alive()  # not closed under the running job
        assert not loaded[0]._thread.is_alive()  # closed when that job ended
        assert tasks.engines() == [loaded[1]]
        assert [stored_version(v) for v in (first, second, third)] == ["1", "1", "2"]
        shutil.rmtree(store / "fake")  # removed: the next job fails, saying so
        gone = make_row(db, media_root, 2)
        assert run_task(gone)["outcome"] == "failed"
        assert "no model named 'fake'" in row(db, gone).error
        assert tasks.engines() == [] and not loaded[1]._thread.is_alive()  # and its engine went
    finally:
        for engine in loaded:
            engine.close()


def test_an_engine_that_cannot_start_fails_the_job(
    db: Session, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.tasks as tasks

    monkeypatch.setenv("VCAT_DEVICE", "cuda:7")  # no such device here
    get_settings.cache_clear()
    monkeypatch.setattr(tasks, "_engines", {})
    vid = make_row(db, media_root, 2, model_name="demo")
    out = run_task(vid, model="demo")
    status, attempts, error, _ = row(db, vid)
    assert out["outcome"] == "failed" and (status, attempts) == ("failed", 1)
    assert "could not be started" in error  # not left queued for the reconciler for ever


def test_a_database_error_while_waiting_stops_the_decoding(
    db: Session, media_root: Path, engines: dict[str, IndexEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import jobs

    engine = engines["fake"] = make_engine(delay=0.2, producers=1)
    real = jobs.heartbeat
    calls = iter(range(100))

    def flaky(session: Session, claim: jobs.Claim, progress: float) -> bool:
        if next(calls) == 2:
            raise OperationalError("UPDATE", {}, Exception("server closed the connection"))
        return real(session, claim, progress)

    monkeypatch.setattr(jobs, "heartbeat", flaky)
    assert "raised" in run_task(make_row(db, media_root, 30))  # retried later
    time.sleep(1.5)
    assert not engine._requests  # the abandoned request stopped instead of decoding on


def test_a_stale_attempt_never_touches_the_stored_thumbnails(
    db: Session, media_root: Path, engines: dict[str, IndexEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import jobs

    engines["fake"] = make_engine(delay=0.1)
    vid = make_row(db, media_root, 8)
    stalled, release = threading.Event(), threading.Event()
    real = jobs.heartbeat

    def heartbeat(session: Session, claim: jobs.Claim, progress: float) -> bool:
        if claim.attempt == 1 and progress > 0:  # attempt 1 hangs (GC pause, SIGSTOP, ...)
            stalled.set()
            release.wait()
        return real(session, claim, progress)

    monkeypatch.setattr(jobs, "heartbeat", heartbeat)
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(run_task(vid)))
    thread.start()
    assert stalled.wait(30)
    db.execute(text("UPDATE videos SET updated_at = now() - interval '1 hour' WHERE id = :v"),
               {"v": vid})  # fmt: skip
    db.commit()
    assert run_task(vid)["outcome"] == "done"  # attempt 2 takes over and stores
    release.set()
    thread.join()
    assert first["outcome"] == "cancelled"
    assert len(stored_thumbs(db, vid)) == 8  # attempt 2's: 8 s at a 1 s stride
    assert db.scalar(text("SELECT count(*) FROM thumbnails WHERE video_id = :v"), {"v": vid}) == 8
    assert no_thumbnail_files(media_root)


def test_reindex_to_fewer_clips_leaves_no_old_thumbnails(
    db: Session, media_root: Path, engines: dict[str, IndexEngine]
) -> None:
    engines["fake"] = make_engine()
    vid = make_row(db, media_root, 6)
    run_task(vid, stride=0.5)
    assert len(stored_thumbs(db, vid)) == 11  # 6 s, 1 s windows at a 0.5 s stride
    db.execute(text("UPDATE videos SET status = 'queued' WHERE id = :v"), {"v": vid})
    db.commit()
    assert run_task(vid, stride=3.0)["outcome"] == "done"
    assert len(stored_thumbs(db, vid)) == 3
    assert db.scalar(text("SELECT count(*) FROM thumbnails WHERE video_id = :v"), {"v": vid}) == 3
    assert no_thumbnail_files(media_root)


def test_a_store_that_cannot_succeed_fails_at_once_and_cleans_up(
    db: Session, media_root: Path, engines: dict[str, IndexEngine]
) -> None:
    from service.index_writer import ensure_model

    ensure_model(db, "fake", "1", ["a", "b", "c"])  # same name and version, other labels
    db.commit()
    engines["fake"] = make_engine()
    vid = make_row(db, media_root, 3)
    assert run_task(vid)["outcome"] == "failed"
    status, attempts, error, _ = row(db, vid)
    assert (status, attempts) == ("failed", 1) and "other labels" in error
    assert db.scalar(text("SELECT count(*) FROM thumbnails WHERE video_id = :v"), {"v": vid}) == 0
    assert no_thumbnail_files(media_root)


def test_two_jobs_registering_a_new_model_both_store(db: Session, seed_video: SeedVideo) -> None:
    from service.db import get_sessionmaker
    from service.index_writer import ensure_model, replace_video_index

    meta = ModelMeta(**{**META.__dict__, "name": "brand-new", "labels": ["x", "y"]})
    other = seed_video([])
    first, second = get_sessionmaker()(), get_sessionmaker()()
    ensure_model(first, "brand-new", "1", ["x", "y"])  # job 1 is mid-store, not committed
    errors: list[Exception] = []

    def store() -> None:
        try:
            replace_video_index(second, other, meta, [(0.0, 1.0, [("x", 0.5)], None)])
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=store)
    thread.start()
    time.sleep(0.5)
    first.commit()
    thread.join()
    first.close()
    second.close()
    assert errors == []


def test_staleness_below_two_heartbeats_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from vcat.settings import Settings

    monkeypatch.setenv("VCAT_JOB_STALE_SECONDS", "1.5")
    with pytest.raises(ValidationError):
        Settings()


def test_a_cleanup_error_after_the_store_keeps_the_stored_thumbnails(
    db: Session, media_root: Path, engines: dict[str, IndexEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import jobs

    engines["fake"] = make_engine()
    monkeypatch.setenv("VCAT_DELETE_SOURCE_AFTER_INDEX", "true")
    get_settings.cache_clear()

    def broken(session: Session, claim: jobs.Claim) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(jobs, "drop_source", broken)
    vid = make_row(db, media_root, 3)
    assert run_task(vid)["outcome"] == "done"
    assert row(db, vid).status == "done" and len(stored_thumbs(db, vid)) == 3


def test_a_reindex_that_fails_keeps_the_stored_thumbnails_and_one_that_succeeds_replaces_them(
    db: Session, media_root: Path, engines: dict[str, IndexEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.index_writer import IndexDataError
    from worker import jobs

    engines["fake"] = make_engine()
    vid = make_row(db, media_root, 6)
    assert run_task(vid, stride=0.5)["outcome"] == "done"
    first = stored_thumbs(db, vid)

    def reindex() -> None:  # what POST /videos/{id}/reindex does: attempts count from zero
        db.execute(text("UPDATE videos SET status = 'queued', attempts = 0 WHERE id = :v"),
                   {"v": vid})  # fmt: skip
        db.commit()

    reindex()
    with monkeypatch.context() as patch:
        patch.setattr(jobs, "store", lambda *a: (_ for _ in ()).throw(IndexDataError("boom")))
        assert run_task(vid, stride=3.0)["outcome"] == "failed"
    assert len(first) == 11 and stored_thumbs(db, vid) == first  # the failed run wrote nothing
    reindex()
    assert run_task(vid, stride=3.0)["outcome"] == "done"
    assert len(stored_thumbs(db, vid)) == 3  # the first index's 11 are gone
    assert no_thumbnail_files(media_root)


def test_a_shutdown_hands_the_video_back_without_counting_an_attempt(
    db: Session, media_root: Path, engines: dict[str, IndexEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGTERM (a deploy) mid-job: the job stops at once, its video goes back to the queue with
    # the attempt uncounted and a new message (Retry); decoding stops. The next run indexes it.
    import worker.tasks as tasks

    monkeypatch.setattr(tasks, "_shutdown", threading.Event())
    engine = engines["fake"] = make_engine(delay=0.2, producers=1)
    vid = make_row(db, media_root, 60)  # about 6 s of batches: far from done when it stops
    threading.Timer(1.0, tasks.hand_back_jobs).start()
    began = time.monotonic()
    out = run_task(vid)
    assert out["raised"].startswith("Retry"), out
    assert time.monotonic() - began < 3
    assert tuple(row(db, vid)[:3]) == ("queued", 0, None)
    time.sleep(1)
    assert not engine._requests  # its decoding stopped
    tasks._shutdown.clear()
    assert run_task(vid)["outcome"] == "done"
    assert tuple(row(db, vid)[:2]) == ("done", 1)
