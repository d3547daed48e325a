"""``GET /search``: segments where an action is seen, across the catalogue."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from service import audit
from service.auth import Principal, require_read
from service.problems import Problem
from service.read_db import Reader, get_pool
from service.routes.videos import segment_out
from service.schemas import MatchOut, SearchOut
from service.search import SearchError, find_segments, resolve_action
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
async def search(
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
) -> Response:
    # The hot path: its queries run on the event loop (service.read_db), names come from a
    # cache, audit entries are batched, and the JSON is written straight from the response
    # model (FastAPI would validate it a second time).
    names = [a.strip() for a in action]
    if any(not n or len(n) > 200 for n in names):
        raise Problem(422, "action: names must be 1 to 200 characters")
    if t_from is not None and t_to is not None and t_from > t_to:
        raise Problem(422, f"from ({t_from:g} s) is after to ({t_to:g} s)")
    query = SearchQuery(names, match, model, min_score, video, t_from, t_to, sort, limit, cursor)
    out = await _search(get_pool(), query)
    audit.record(
        None,
        principal,
        "search",
        request=request,
        durable=False,
        detail={
            "action": names,
            "match": match,
            "min_score": out.min_score,
            "results": len(out.items),
        },
    )
    return Response(out.model_dump_json(), media_type="application/json")


@dataclass(frozen=True)
class SearchQuery:
    names: list[str]
    match: Literal["any", "all"]
    model: str | None
    min_score: float | None
    video: uuid.UUID | None
    t_from: float | None
    t_to: float | None
    sort: Literal["score", "time"]
    limit: int
    cursor: str | None


async def _search(db: Reader, q: SearchQuery) -> SearchOut:
    stored_threshold = get_settings().default_min_score
    threshold = stored_threshold if q.min_score is None else q.min_score
    matches = [await resolve_action(db, n, q.model) for n in q.names]
    try:  # a name that matched no action finds nothing (find_segments)
        segments, next_cursor = await find_segments(
            db,
            [m.action_ids for m in matches],
            min_score=threshold,
            mode=q.match,
            video_id=q.video,
            t_from=q.t_from,
            t_to=q.t_to,
            sort=q.sort,
            limit=q.limit,
            cursor=q.cursor,
            stored_threshold=stored_threshold,
        )
    except SearchError as exc:
        raise Problem(422, str(exc)) from None
    for s in segments:
        if s.action_id is None:
            s.actions = [n for m in matches for n in m.names]
    items = [segment_out(s) for s in segments]
    matched = [
        MatchOut(query=m.query, actions=m.names, fuzzy=m.fuzzy, similarity=m.similarity)
        for m in matches
    ]
    return SearchOut(
        matched=matched, mode=q.match, min_score=threshold, items=items, next_cursor=next_cursor
    )
