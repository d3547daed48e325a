"""``GET /search``: segments where an action is seen, across the catalogue."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from service import audit
from service.auth import Principal, require_read
from service.db import get_session
from service.problems import Problem
from service.routes.videos import segment_out
from service.schemas import MatchOut, SearchOut
from service.search import SearchError, find_segments, match_action
from vcat.settings import get_settings

router = APIRouter(tags=["search"])


@router.get(
    "/search",
    response_model=SearchOut,
    summary="Find segments showing an action",
    description=(
        "Segments are maximal runs of consecutive clips whose score for the action is "
        ">= `min_score`. Names match case-insensitively; with no exact match the closest name "
        "(trigram similarity) is used and `matched[].fuzzy` says so. Several `action` "
        "parameters: `match=any` (default) lists segments of each; `match=all` lists the "
        "stretches where all of them are seen at once."
    ),
)
def search(
    request: Request,
    action: Annotated[list[str], Query(min_length=1, max_length=8, examples=["juggling balls"])],
    match: Literal["any", "all"] = "any",
    model: Annotated[str | None, Query(max_length=200)] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    video: uuid.UUID | None = None,
    t_from: Annotated[float | None, Query(alias="from", ge=0, le=1e7)] = None,
    t_to: Annotated[float | None, Query(alias="to", ge=0, le=1e7)] = None,
    sort: Literal["score", "time"] = "score",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    principal: Principal = Depends(require_read),
    session: Session = Depends(get_session),
) -> SearchOut:
    names = [a.strip() for a in action]
    if any(not n or len(n) > 200 for n in names):
        raise Problem(422, "action: names must be 1 to 200 characters")
    threshold = get_settings().default_min_score if min_score is None else min_score
    matches = [match_action(session, n, model) for n in names]
    groups = [m.action_ids for m in matches]
    matched = [
        MatchOut(query=m.query, actions=m.names, fuzzy=m.fuzzy, similarity=m.similarity)
        for m in matches
    ]
    items = []
    next_cursor = None
    usable = (match == "any" and any(groups)) or (match == "all" and all(groups))
    if usable:
        try:
            segments, next_cursor = find_segments(
                session,
                [g for g in groups if g],
                min_score=threshold,
                mode=match,
                video_id=video,
                t_from=t_from,
                t_to=t_to,
                sort=sort,
                limit=limit,
                cursor=cursor,
                stored_threshold=get_settings().default_min_score,
            )
        except SearchError as exc:
            raise Problem(422, str(exc)) from None
        for s in segments:
            if s.action_id is None:
                s.actions = [n for m in matches for n in m.names]
        items = [segment_out(s) for s in segments]
    audit.record(
        session,
        principal,
        "search",
        request=request,
        durable=False,
        detail={"action": names, "match": match, "min_score": threshold, "results": len(items)},
    )
    return SearchOut(
        matched=matched, mode=match, min_score=threshold, items=items, next_cursor=next_cursor
    )
