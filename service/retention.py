"""Retention: expire videos older than ``VCAT_RETENTION_DAYS`` (run periodically, CLEANUP task)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service import storage
from service.models import Video
from vcat.settings import get_settings


def expire_videos(session: Session, now: datetime | None = None, days: int | None = None) -> int:
    """Delete videos (rows, thumbnails, media) created more than ``days`` ago; returns how many.

    ``days`` defaults to the setting; 0 keeps everything. Videos being indexed are left alone.
    """
    days = get_settings().retention_days if days is None else days
    if days <= 0:
        return 0
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    old = session.execute(
        select(Video.id, Video.media_file).where(
            Video.created_at < cutoff, Video.status != "processing"
        )
    ).all()
    for video_id, media_file in old:
        session.execute(delete(Video).where(Video.id == video_id))  # thumbnails go with it
        session.commit()
        storage.remove_video_files(video_id, media_file)
    return len(old)
