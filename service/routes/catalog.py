"""``GET /actions`` (the vocabulary with segment counts) and ``GET /models``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.auth import Principal, require_read
from service.db import get_session
from service.schemas import ActionOut, ModelOut

router = APIRouter(tags=["catalogue"])


def _like_prefix(prefix: str) -> str:
    escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


@router.get("/actions", response_model=list[ActionOut], summary="Action vocabulary with counts")
def list_actions(
    prefix: Annotated[str | None, Query(max_length=200, examples=["jug"])] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    indexed_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    _: Principal = Depends(require_read),
    session: Session = Depends(get_session),
) -> list[ActionOut]:
    rows = session.execute(
        text(
            """SELECT a.name, m.name AS model, m.version,
                      coalesce(sum(va.segments), 0) AS segments,
                      count(va.video_id) FILTER (WHERE va.segments > 0) AS videos
               FROM actions a JOIN models m ON m.id = a.model_id
               LEFT JOIN video_actions va ON va.action_id = a.id
               WHERE (CAST(:prefix AS text) IS NULL OR lower(a.name) LIKE :prefix)
                 AND (CAST(:model AS text) IS NULL OR m.name = :model)
               GROUP BY a.id, m.id
               HAVING NOT :indexed_only OR coalesce(sum(va.segments), 0) > 0
               ORDER BY segments DESC, a.name, m.name, m.version
               LIMIT :limit"""
        ),
        {
            "prefix": _like_prefix(prefix) if prefix else None,
            "model": model,
            "indexed_only": indexed_only,
            "limit": limit,
        },
    ).all()
    return [
        ActionOut(
            name=r.name, model=r.model, version=r.version, segments=r.segments, videos=r.videos
        )
        for r in rows
    ]


@router.get("/models", response_model=list[ModelOut], summary="Models that indexed videos")
def list_models(
    _: Principal = Depends(require_read), session: Session = Depends(get_session)
) -> list[ModelOut]:
    rows = session.execute(
        text(
            """SELECT m.name, m.version, m.num_labels, m.created_at,
                      (SELECT count(*) FROM videos v WHERE v.model_id = m.id) AS videos
               FROM models m ORDER BY m.name, m.version"""
        )
    ).all()
    return [
        ModelOut(
            name=r.name,
            version=r.version,
            labels=r.num_labels,
            videos=r.videos,
            created_at=r.created_at,
        )
        for r in rows
    ]
