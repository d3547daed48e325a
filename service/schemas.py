"""Request and response bodies (pydantic). Examples here show up in the OpenAPI docs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from vcat.tasks import CLIP_SECONDS_MAX, CLIP_SECONDS_MIN

VideoStatus = Literal["queued", "processing", "done", "failed", "deleted"]


class IndexOptions(BaseModel):
    """How to index a video; unset fields use the model's defaults."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, max_length=200, examples=["kinetics400-tsm-r50"])
    window: float | None = Field(
        default=None, ge=CLIP_SECONDS_MIN, le=CLIP_SECONDS_MAX, description="Clip length, seconds"
    )
    stride: float | None = Field(
        default=None, ge=CLIP_SECONDS_MIN, le=CLIP_SECONDS_MAX, description="Clip step, seconds"
    )
    top_k: int | None = Field(default=None, ge=1, le=50, description="Scores kept per clip")


class UrlIngest(IndexOptions):
    url: HttpUrl = Field(examples=["https://example.com/videos/cooking.mp4"])


class Reindex(IndexOptions):
    pass


class VideoOut(BaseModel):
    id: uuid.UUID
    status: VideoStatus
    progress: float = Field(ge=0, le=1)
    error: str | None
    source: Literal["upload", "url"]
    source_url: str | None
    original_name: str | None
    sha256: str | None
    size: int
    container: str | None
    codec: str | None
    duration: float | None
    fps: float | None
    width: int | None
    height: int | None
    rotation: int
    attempts: int
    model: str | None = Field(description="Model that indexed it (or was requested)")
    options: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    indexed_at: datetime | None
    media_url: str | None
    links: dict[str, str]


class VideoPage(BaseModel):
    items: list[VideoOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class ScoreOut(BaseModel):
    action: str
    score: float


class ClipOut(BaseModel):
    idx: int
    start: float
    end: float
    thumbnail_url: str | None
    scores: list[ScoreOut]


class ClipPage(BaseModel):
    items: list[ClipOut]
    next_cursor: str | None


class SegmentOut(BaseModel):
    video_id: uuid.UUID
    action: str | None = Field(description="None in `match=all` results (see `actions`)")
    actions: list[str]
    model: str | None
    start: float
    end: float
    first_clip: int
    last_clip: int
    clips: int
    max_score: float
    mean_score: float
    media_url: str = Field(examples=["/videos/0b1c.../media#t=12.0,18.0"])
    thumbnail_url: str | None


class MatchOut(BaseModel):
    query: str
    actions: list[str]
    fuzzy: bool
    similarity: float | None = None


class SearchOut(BaseModel):
    matched: list[MatchOut]
    mode: Literal["any", "all"]
    min_score: float
    items: list[SegmentOut]
    next_cursor: str | None

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "matched": [
                        {
                            "query": "Juggling",
                            "actions": ["juggling balls"],
                            "fuzzy": True,
                            "similarity": 0.61,
                        }
                    ],
                    "mode": "any",
                    "min_score": 0.5,
                    "items": [],
                    "next_cursor": None,
                }
            ]
        }
    )


class TimelineOut(BaseModel):
    video_id: uuid.UUID
    min_score: float
    items: list[SegmentOut]


class ActionOut(BaseModel):
    name: str
    model: str
    version: str
    segments: int = Field(description="Indexed segments at the default threshold")
    videos: int


class ModelOut(BaseModel):
    name: str
    version: str
    labels: int
    videos: int
    created_at: datetime
