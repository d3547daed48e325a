"""The catalogue schema (SQLAlchemy 2). Alembic migrations own the DDL; these mirror them.

Data model, for the API and the worker that fills it:

- ``videos``: one uploaded or fetched file. ``status`` is ``queued -> processing -> done|failed``
  (``deleted`` while its files are being removed); ``progress`` 0..1 is set by the worker.
  ``media_file`` is the file name under ``settings.media_path`` (None once the source is removed).
  ``attempts`` counts the worker claims since the last (re)index request (dead letter);
  ``claims`` counts every claim and is never reset: the worker's fencing token (lease).
- ``models``: a recognizer by (name, version); ``actions``: its label vocabulary, ``idx`` being the
  class index in the model's output.
- ``clips``: the windows a video was cut into, keyed (video_id, idx) with idx 0, 1, 2, ... in time
  order.
- ``thumbnails``: a JPEG of each clip's middle sampled frame, written in the index's
  transaction (migration 0005 says why they are not files).
- ``clip_scores``: the top-k (action, score) per clip, score a probability in [0, 1]. ``video_id``
  and ``clip_idx`` are stored (not a surrogate clip id) so search reads one index only.
- ``segments``: runs of consecutive clips scoring >= the default threshold, per (video, action),
  computed in SQL (window functions) when a result is written; default searches read these.
- ``video_actions``: per (video, action) the number of segments at the default threshold and the
  best score, computed in SQL when a result is written (``service.index_writer``); it backs the
  counts in ``GET /actions``.
- ``api_keys``, ``audit_log``, ``idempotency_keys``: access control and privacy bookkeeping.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

VIDEO_STATUSES = ("queued", "processing", "done", "failed", "deleted")
SCOPES = ("read", "admin")


class Base(DeclarativeBase):
    pass


class Video(Base):
    __tablename__ = "videos"
    # The INSERT returns the server defaults (timestamps), so the new row needs no reload.
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued','processing','done','failed','deleted')", name="videos_status"
        ),
        CheckConstraint("source IN ('upload','url')", name="videos_source"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="videos_progress"),
        Index("videos_created", "created_at", "id"),
        Index("videos_status_created", "status", "created_at", "id"),
        Index("videos_sha256", "sha256", unique=True, postgresql_where="sha256 IS NOT NULL"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    source: Mapped[str] = mapped_column(String(8))
    source_url: Mapped[str | None] = mapped_column(Text)
    original_name: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    media_file: Mapped[str | None] = mapped_column(Text)
    container: Mapped[str | None] = mapped_column(Text)
    codec: Mapped[str | None] = mapped_column(Text)
    duration: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    rotation: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    progress: Mapped[float] = mapped_column(Float, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    claims: Mapped[int] = mapped_column(BigInteger, server_default="0")
    model_name: Mapped[str | None] = mapped_column(Text)  # requested (None: default model)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"))
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version", name="models_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(Text)
    num_labels: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Action(Base):
    __tablename__ = "actions"
    __table_args__ = (
        UniqueConstraint("model_id", "idx", name="actions_model_idx"),
        Index("actions_lower_name", text("lower(name)")),  # exact, case-insensitive
        Index("actions_name_trgm", text("lower(name) gin_trgm_ops"), postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)


class Clip(Base):
    __tablename__ = "clips"

    video_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)


class Thumbnail(Base):
    __tablename__ = "thumbnails"
    __table_args__ = (
        ForeignKeyConstraint(
            ["video_id", "clip_idx"], ["clips.video_id", "clips.idx"], ondelete="CASCADE"
        ),
    )

    video_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    clip_idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)


class ClipScore(Base):
    __tablename__ = "clip_scores"
    __table_args__ = (
        ForeignKeyConstraint(
            ["video_id", "clip_idx"], ["clips.video_id", "clips.idx"], ondelete="CASCADE"
        ),
        # search: all clips of an action (and a video) in clip order, score read from the index
        Index(
            "clip_scores_action_video",
            "action_id",
            "video_id",
            "clip_idx",
            postgresql_include=["score"],
        ),
        CheckConstraint("score >= 0 AND score <= 1", name="clip_scores_score"),
    )

    video_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    clip_idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[int] = mapped_column(
        ForeignKey("actions.id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(SmallInteger)  # 1 = the clip's best action
    score: Mapped[float] = mapped_column(REAL)


class Segment(Base):
    """Runs of consecutive clips scoring >= ``threshold`` (the default search threshold when the
    video was indexed), stored at write time so default searches read one index range."""

    __tablename__ = "segments"
    __table_args__ = (
        Index(
            "segments_by_score",
            "action_id",
            "threshold",
            text("max_score DESC"),
            "video_id",
            "first_clip",
        ),
        Index(
            "segments_by_time",
            "action_id",
            "threshold",
            text("video_created DESC"),
            "video_id",
            "first_clip",
        ),
    )

    video_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True
    )
    action_id: Mapped[int] = mapped_column(
        ForeignKey("actions.id", ondelete="CASCADE"), primary_key=True
    )
    first_clip: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_clip: Mapped[int] = mapped_column(Integer)
    clips: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    max_score: Mapped[float] = mapped_column(REAL)
    mean_score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(REAL)
    has_thumbnail: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    video_created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VideoAction(Base):
    __tablename__ = "video_actions"
    __table_args__ = (Index("video_actions_action", "action_id", "video_id"),)

    video_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("videos.id", ondelete="CASCADE"), primary_key=True
    )
    action_id: Mapped[int] = mapped_column(
        ForeignKey("actions.id", ondelete="CASCADE"), primary_key=True
    )
    segments: Mapped[int] = mapped_column(Integer)
    max_score: Mapped[float] = mapped_column(REAL)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("scope IN ('read','admin')", name="api_keys_scope"),)

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public part of the key
    name: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(8))
    secret_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the whole key
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    key_id: Mapped[str | None] = mapped_column(String(16))  # None: no keys configured
    action: Mapped[str] = mapped_column(Text)  # upload | search | view_media | delete | ...
    video_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))  # kept after delete
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    client: Mapped[str | None] = mapped_column(Text)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)  # "" without auth
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    video_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
