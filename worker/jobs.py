"""A video's indexing job as Postgres sees it: claim, heartbeat, store, fail, hand back.
Torch-free.

The row is the source of truth, not the broker. A job is claimed with a conditional update that
also counts the attempt, so a message delivered twice (redelivery after a lost worker, or the
reconciler) runs once. The claim's lease (``videos.claims``, counted by every claim and never
reset) is a fencing token: a worker that lost its claim can no longer write. The attempt number
is not one: a reindex counts attempts from zero again. ``updated_at`` is the heartbeat: a
``processing`` row that stops moving has lost its worker, and the reconciler puts it back in
the queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.db import driver_cursor
from service.index_writer import ClaimLost, ClipResult, ModelLike, replace_video_index
from vcat.settings import get_settings

WORKER_LOST = "the worker was lost while indexing (crash, kill or out of memory)"


@dataclass(frozen=True)
class Claim:
    video_id: uuid.UUID
    attempt: int  # counted afresh by a reindex: for the dead letter and the retry's backoff
    lease: int  # the fencing token: counts every claim of the video, so it never repeats
    media_file: str | None
    duration: float | None
    options: dict[str, Any]
    model_name: str | None  # the row's: a reindex may have changed it after the message

    def media_path(self) -> Path | None:
        if self.media_file is None:
            return None
        return get_settings().media_path / self.media_file


@dataclass(frozen=True)
class GaveUp:
    """The claim was the (max_attempts + 1)-th: the video is now ``failed`` (dead letter)."""

    video_id: uuid.UUID
    error: str


# One statement: the claim also clears the error (an attempt that ends without writing one was
# lost with its worker) and returns the previous error for the dead-letter message.
# psycopg's own placeholders: the claim runs on the driver's cursor (``driver_cursor``).
_CLAIM = """
    UPDATE videos v SET status = 'processing', attempts = v.attempts + 1, claims = v.claims + 1,
                        progress = 0, error = NULL, updated_at = now()
    FROM (SELECT id, error FROM videos WHERE id = %(id)s FOR UPDATE) AS before
    WHERE v.id = before.id AND (
        v.status = 'queued'
        OR (v.status = 'processing' AND v.updated_at < now() - make_interval(secs => %(stale)s))
    )
    RETURNING v.attempts, v.claims, v.media_file, v.duration, v.options, before.error, v.model_name
"""


def claim(
    session: Session, video_id: str | uuid.UUID, max_attempts: int, stale: float
) -> Claim | GaveUp | None:
    """Take the video for this worker; None when it is not ours to run (done, deleted, running)."""
    vid = uuid.UUID(str(video_id))
    with driver_cursor(session) as cursor:
        row = cursor.execute(_CLAIM, {"id": vid, "stale": float(stale)}).fetchone()
    if row is None:
        session.commit()
        return None
    attempts, lease, media_file, duration, options, last_error, model_name = row
    if attempts > max_attempts:
        error = f"gave up after {max_attempts} attempts; last error: {last_error or WORKER_LOST}"
        session.execute(
            text("UPDATE videos SET status = 'failed', error = :e, updated_at = now() "
                 "WHERE id = :id"),
            {"id": vid, "e": error},
        )  # fmt: skip
        session.commit()
        return GaveUp(vid, error)
    session.commit()
    return Claim(vid, attempts, lease, media_file, duration, dict(options or {}), model_name)


def heartbeat(session: Session, job: Claim, progress: float) -> bool:
    """Record progress; False when the claim is gone (video deleted, or taken by another worker)."""
    return _update_claimed(
        session, job, "progress = :p, updated_at = now()", p=max(0.0, min(progress, 0.999))
    )


def _update_claimed(session: Session, job: Claim, assignments: str, **params: Any) -> bool:
    """``UPDATE videos SET <assignments>`` and commit, if ``job`` still holds the video (it is
    ``processing`` under the job's lease, the fencing token); whether it did."""
    row = session.execute(
        text(
            f"UPDATE videos SET {assignments} "
            "WHERE id = :id AND status = 'processing' AND claims = :lease RETURNING 1"
        ),
        {"id": job.video_id, "lease": job.lease, **params},
    ).one_or_none()
    session.commit()
    return row is not None


def store(session: Session, job: Claim, model: ModelLike, clips: Sequence[ClipResult]) -> bool:
    """Replace the video's index in one transaction, if the claim still holds (False if not)."""
    try:
        replace_video_index(session, job.video_id, model, clips, lease=job.lease)
    except ClaimLost:
        return False
    return True


def fail(session: Session, job: Claim, error: str, *, retry: bool, max_attempts: int) -> bool:
    """End this attempt with ``error``. Requeue (True) when ``retry``, attempts remain and the
    claim still held (a lost claim's retry would only find the video taken)."""
    requeue = retry and job.attempt < max_attempts
    held = _update_claimed(
        session, job, "status = :s, error = :e, updated_at = now()",
        s="queued" if requeue else "failed", e=error[:2000],
    )  # fmt: skip
    return requeue and held


def hand_back(session: Session, job: Claim) -> bool:
    """The worker is shutting down (a deploy, a restart): back to ``queued``, this attempt not
    counted, since the video did nothing wrong. False when the claim is gone."""
    return _update_claimed(
        session, job, "status = 'queued', attempts = attempts - 1, progress = 0, updated_at = now()"
    )


def drop_source(session: Session, job: Claim) -> None:
    """Privacy setting: forget the source file once the index is stored."""
    path = job.media_path()
    session.execute(
        text("UPDATE videos SET media_file = NULL WHERE id = :id"), {"id": job.video_id}
    )
    session.commit()
    if path is not None:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Orphan:
    video_id: uuid.UUID
    model_name: str | None
    options: dict[str, Any]


def orphaned_queued(session: Session, older_than: float, limit: int = 500) -> list[Orphan]:
    """Videos queued for longer than ``older_than`` seconds (their message may be lost); their
    clock restarts so they are not picked again before the next message had its chance."""
    rows = session.execute(
        text(
            "UPDATE videos SET updated_at = now() WHERE id IN ("
            " SELECT id FROM videos WHERE status = 'queued'"
            " AND updated_at < now() - make_interval(secs => :age)"
            " ORDER BY created_at LIMIT :limit FOR UPDATE SKIP LOCKED) "
            "RETURNING id, model_name, options"
        ),
        {"age": older_than, "limit": limit},
    ).all()
    session.commit()
    return [Orphan(r[0], r[1], dict(r[2] or {})) for r in rows]


def stale_processing(session: Session, stale: float) -> list[Orphan]:
    """Videos whose worker stopped beating: back to ``queued`` (attempts kept) for re-enqueueing."""
    rows = session.execute(
        text(
            "UPDATE videos SET status = 'queued', updated_at = now() "
            "WHERE status = 'processing' AND updated_at < now() - make_interval(secs => :stale) "
            "RETURNING id, model_name, options"
        ),
        {"stale": stale},
    ).all()
    session.commit()
    return [Orphan(r[0], r[1], dict(r[2] or {})) for r in rows]
