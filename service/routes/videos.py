"""Videos: upload (streamed) or fetch by URL, list, inspect, delete, reindex, clips, media."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, cast

import psycopg
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from psycopg.types.json import Jsonb
from pydantic import ValidationError
from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import audit, queue, storage
from service.auth import Principal, require_admin, require_read
from service.db import driver_cursor, get_session, get_sessionmaker
from service.ingest import UploadError, receive_multipart
from service.models import IdempotencyKey, Model, Video
from service.problems import Problem, validation_detail
from service.read_db import SessionReader
from service.schemas import (
    ClipOut,
    ClipPage,
    IndexOptions,
    Reindex,
    ScoreOut,
    SegmentOut,
    TimelineOut,
    UrlIngest,
    VideoOut,
    VideoPage,
    VideoStatus,
)
from service.search import SearchError, decode_cursor, encode_cursor, find_segments
from service.url_fetch import Fetched, UrlRejected, fetch_to_file
from vcat.settings import get_settings
from worker.video.errors import VideoError
from worker.video.probe import probe_video

router = APIRouter(tags=["videos"])

MAX_JSON_BODY = 64 * 1024
_NEW_VIDEO_COLUMNS = (
    "id", "source", "source_url", "original_name", "sha256", "size", "media_file", "container",
    "codec", "duration", "fps", "width", "height", "rotation", "status", "progress", "attempts",
    "model_name", "options",
)  # fmt: skip
OPTION_FIELDS = frozenset({"model", "window", "stride", "top_k"})  # multipart parts besides `file`
NOT_A_VIDEO = {"unreadable", "no_video", "image", "not_allowed"}  # 415; other reasons: 422

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "model": {"type": "string"},
                        "window": {"type": "number"},
                        "stride": {"type": "number"},
                        "top_k": {"type": "integer"},
                    },
                }
            },
            "application/json": {
                "schema": UrlIngest.model_json_schema(ref_template="#/components/schemas/{model}"),
                "example": {"url": "https://example.com/cooking.mp4", "top_k": 5},
            },
        },
    }
}


def video_out(video: Video, model_name: str | None = None) -> VideoOut:
    base = f"/videos/{video.id}"
    return VideoOut(
        id=video.id,
        status=cast(VideoStatus, video.status),
        progress=video.progress,
        error=video.error,
        source=cast(Literal["upload", "url"], video.source),
        source_url=video.source_url,
        original_name=video.original_name,
        sha256=video.sha256,
        size=video.size,
        container=video.container,
        codec=video.codec,
        duration=video.duration,
        fps=video.fps,
        width=video.width,
        height=video.height,
        rotation=video.rotation,
        attempts=video.attempts,
        model=model_name or video.model_name,
        options=video.options,
        created_at=video.created_at,
        updated_at=video.updated_at,
        indexed_at=video.indexed_at,
        media_url=f"{base}/media" if video.media_file else None,
        links={"self": base, "clips": f"{base}/clips", "segments": f"{base}/segments"},
    )


def _get_video(session: Session, video_id: uuid.UUID) -> Video:
    video = session.get(Video, video_id)
    if video is None or video.status == "deleted":
        raise Problem(404, f"no video {video_id}")
    return video


def _request_hash(kind: str, payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([kind, payload], sort_keys=True).encode()).hexdigest()


def _idempotent(
    session: Session, principal: Principal, key: str | None, request_hash: str
) -> Video | None:
    """The video an earlier request with this key made; Problem 409 if that body differed."""
    if not key:
        return None
    row = session.get(IdempotencyKey, (principal.key_id or "", key))
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise Problem(409, "Idempotency-Key was already used with a different request body")
    return session.get(Video, row.video_id)


def _index_options(options: IndexOptions) -> dict[str, Any]:
    return {
        "window": options.window,
        "stride": options.stride,
        "top_k": options.top_k or get_settings().default_top_k,
    }


def _enqueue(video: Video) -> None:
    settings = get_settings()
    opts = video.options
    try:
        queue.enqueue_index(
            video.id,
            model=video.model_name,
            window=opts.get("window"),
            stride=opts.get("stride"),
            top_k=int(opts.get("top_k") or settings.default_top_k),
        )
    except queue.QueueUnavailable as exc:
        # The row stays `queued` (committed before this call): the workers' reconciler re-sends
        # queued videos older than VCAT_REQUEUE_QUEUED_AFTER_SECONDS once the broker is back.
        # Marking it failed stranded it: nothing requeues failed videos, and uploading the same
        # bytes again only returns the existing row.
        retry = max(1, int(settings.requeue_queued_after_seconds))
        raise Problem(
            503,
            f"video stored but not queued yet ({exc}); it stays queued and is sent to the "
            "workers when the broker is back",
            headers={"Retry-After": str(retry)},
            video_id=str(video.id),
        ) from None


@dataclass(frozen=True, kw_only=True)
class _Received:
    """A file received (uploaded or fetched) at ``tmp``, and the request that brought it."""

    principal: Principal
    tmp: FilePath
    source: Literal["upload", "url"]
    sha256: str
    size: int
    filename: str | None
    source_url: str | None
    options: IndexOptions
    idem_key: str | None
    request_hash: str
    request: Request


def _register(got: _Received) -> tuple[VideoOut, bool]:
    """Probe the received file and create the video (or find the existing one). Runs in a worker
    thread with its own session: all of an upload's database work costs one thread hop."""
    try:
        with get_sessionmaker()() as session:
            video, created = _register_in(session, got)
            return video_out(video), created
    finally:
        got.tmp.unlink(missing_ok=True)


# The new row in one statement, psycopg's own: the ORM's unit of work around it cost more of the
# API's CPU than the rest of an upload's database work (bench/bench_service.py, (b)).
_INSERT_VIDEO = f"""
    INSERT INTO videos ({", ".join(_NEW_VIDEO_COLUMNS)})
    VALUES ({", ".join(f"%({c})s" for c in _NEW_VIDEO_COLUMNS)})
    RETURNING created_at, updated_at
"""


def _register_in(session: Session, got: _Received) -> tuple[Video, bool]:
    principal, idem_key, request_hash = got.principal, got.idem_key, got.request_hash
    replay = _idempotent(session, principal, idem_key, request_hash)
    if replay is not None:
        return replay, False
    existing = _by_sha256(session, got.sha256)
    if existing is not None and existing.status != "deleted":
        return _reuse(session, principal, existing, got.tmp, idem_key, request_hash), False
    try:
        info = probe_video(got.tmp)
    except VideoError as exc:
        status = 415 if exc.reason in NOT_A_VIDEO else 422
        detail = str(exc).split(": ", 1)[-1]
        raise Problem(status, f"not a decodable video: {detail}", reason=exc.reason) from None
    video_id = uuid.uuid4()
    name = storage.media_name(video_id, info.container)
    row: dict[str, Any] = {
        "id": video_id, "source": got.source, "source_url": got.source_url,
        "original_name": got.filename, "sha256": got.sha256, "size": got.size,
        "media_file": name, "container": info.container, "codec": info.codec,
        "duration": info.duration, "fps": info.fps, "width": info.width, "height": info.height,
        "rotation": info.rotation, "status": "queued", "progress": 0.0, "attempts": 0,
        "model_name": got.options.model, "options": Jsonb(_index_options(got.options)),
    }  # fmt: skip
    try:
        with driver_cursor(session) as cursor:
            stamps = cast(tuple[datetime, datetime], cursor.execute(_INSERT_VIDEO, row).fetchone())
        _remember(session, principal, idem_key, request_hash, video_id)
        got.tmp.rename(storage.media_root() / name)
        audit.record(
            session,
            principal,
            "upload",
            video_id=video_id,
            commit=False,
            detail={"source": got.source, "url": got.source_url, "size": got.size},
            request=got.request,
        )
        session.commit()
    except (IntegrityError, psycopg.IntegrityError):  # a concurrent identical upload or key won
        session.rollback()
        (storage.media_root() / name).unlink(missing_ok=True)
        again = _idempotent(session, principal, idem_key, request_hash) or _by_sha256(
            session, got.sha256
        )
        if again is None:
            raise
        return again, False
    # transient (never added to the session): what video_out and _enqueue read
    video = Video(**{**row, "options": row["options"].obj})
    video.created_at, video.updated_at = stamps
    _enqueue(video)
    return video, True


def _by_sha256(session: Session, sha256: str) -> Video | None:
    with driver_cursor(session) as cursor:
        row = cursor.execute("SELECT id FROM videos WHERE sha256 = %s", (sha256,)).fetchone()
    return None if row is None else session.get(Video, row[0])


def _reuse(
    session: Session,
    principal: Principal,
    existing: Video,
    tmp: FilePath,
    idem_key: str | None,
    request_hash: str,
) -> Video:
    """Identical bytes: the existing video, its source file restored if it was dropped."""
    if storage.inside_media(existing.media_file) is None:
        # Dropped after indexing (VCAT_DELETE_SOURCE_AFTER_INDEX) or lost: these bytes are that
        # file (same sha256), so keep them, or the video could never be reindexed or played.
        name = storage.media_name(existing.id, existing.container)
        tmp.rename(storage.media_root() / name)
        existing.media_file = name
        session.commit()
    if idem_key:
        try:
            _remember(session, principal, idem_key, request_hash, existing.id)
            session.commit()  # else the key is forgotten and a later other body gets no 409
        except IntegrityError:  # a concurrent request with the same key won
            session.rollback()
            again = _idempotent(session, principal, idem_key, request_hash)
            if again is None:
                raise
            return again
    return existing


def _remember(
    session: Session, principal: Principal, key: str | None, request_hash: str, vid: uuid.UUID
) -> None:
    if key:
        session.merge(
            IdempotencyKey(
                key_id=principal.key_id or "", key=key, request_hash=request_hash, video_id=vid
            )
        )
        session.flush()


def _parse_options(fields: dict[str, str]) -> IndexOptions:
    """``fields`` holds only OPTION_FIELDS: receive_multipart refused any other part."""
    try:
        return IndexOptions.model_validate({k: v for k, v in fields.items() if v != ""})
    except ValidationError as exc:
        raise Problem(422, validation_detail(exc.errors())) from None


@router.post(
    "/videos",
    status_code=202,
    summary="Upload a video (multipart `file`) or fetch one (JSON `url`) and queue indexing",
    openapi_extra=UPLOAD_BODY,
    response_model=VideoOut,
    responses={
        200: {
            "description": "Identical bytes or an Idempotency-Key replay: the existing video",
            "model": VideoOut,
        },
        403: {"description": "URL ingest is off, or the host is not allowed"},
        409: {"description": "Idempotency-Key reused with another body"},
        413: {"description": "Larger than the configured limit"},
        415: {"description": "Not a video (or an unsupported content type)"},
    },
)
async def create_video(
    request: Request,
    principal: Principal = Depends(require_admin),
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    # No session dependency: no pooled connection is held while the body streams in, and the
    # database work is one thread hop (``_register``), not three.
    settings = get_settings()
    content_type = request.headers.get("content-type", "")
    tmp = storage.incoming_path(uuid.uuid4().hex)
    media_type = content_type.split(";")[0].strip().lower()  # media types are case-insensitive
    if media_type == "multipart/form-data":
        try:
            upload = await receive_multipart(
                content_type,
                request.stream(),
                tmp,
                settings.max_upload_bytes,
                allowed_fields=OPTION_FIELDS,
            )
        except UploadError as exc:
            raise Problem(exc.status, str(exc)) from None
        try:
            options = _parse_options(upload.fields)
        except Problem:
            tmp.unlink(missing_ok=True)
            raise
        request_hash = _request_hash(
            "upload", {"sha256": upload.sha256, **options.model_dump(mode="json")}
        )
        source: Literal["upload", "url"] = "upload"
        sha256, size, filename, url = upload.sha256, upload.size, upload.filename, None
    elif media_type == "application/json":
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_JSON_BODY:
                raise Problem(413, f"JSON body larger than {MAX_JSON_BODY} bytes")
        try:
            ingest = UrlIngest.model_validate_json(bytes(body))
        except ValidationError as exc:
            raise Problem(422, validation_detail(exc.errors())) from None
        if not settings.url_ingest_enabled:
            raise Problem(403, "URL ingest is switched off on this server")
        options = IndexOptions.model_validate(ingest.model_dump(exclude={"url"}))
        source, url = "url", str(ingest.url)
        request_hash = _request_hash("url", ingest.model_dump(mode="json"))
        replay = await run_in_threadpool(_replay, principal, idempotency_key, request_hash)
        if replay is not None:
            return _video_response(replay, created=False)
        fetcher = request.app.state.url_fetcher
        try:
            fetched = await run_in_threadpool(
                fetcher,
                url,
                tmp,
                max_bytes=settings.max_upload_bytes,
                timeout=settings.url_timeout_seconds,
                allow_hosts=settings.url_allow_hosts,
            )
        except UrlRejected as exc:
            raise Problem(exc.status, f"url: {exc}") from None
        sha256, size, filename = fetched.sha256, fetched.size, fetched.filename
    else:
        raise Problem(415, "send multipart/form-data with a `file` part, or JSON with a `url`")
    got = _Received(
        principal=principal, tmp=tmp, source=source, sha256=sha256, size=size,
        filename=filename, source_url=url, options=options, idem_key=idempotency_key,
        request_hash=request_hash, request=request,
    )  # fmt: skip
    video, created = await run_in_threadpool(_register, got)
    return _video_response(video, created=created)


def _replay(principal: Principal, key: str | None, request_hash: str) -> VideoOut | None:
    if not key:
        return None
    with get_sessionmaker()() as session:
        video = _idempotent(session, principal, key, request_hash)
        return None if video is None else video_out(video)


def _video_response(video: VideoOut, *, created: bool) -> JSONResponse:
    body = video.model_dump(mode="json")
    return JSONResponse(
        body, status_code=202 if created else 200, headers={"Location": f"/videos/{video.id}"}
    )


def default_fetcher(url: str, dest: FilePath, **limits: Any) -> Fetched:
    return fetch_to_file(url, dest, **limits)


@router.get("/videos", response_model=VideoPage, summary="Videos, newest first")
async def list_videos(
    status: Literal["queued", "processing", "done", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    _: Principal = Depends(require_read),
) -> Response:
    # Clients poll this and the video itself: their database work is one thread hop (a sync
    # endpoint with a session dependency costs three), and the JSON is written straight from
    # the response model (FastAPI would validate it a second time).
    after = None
    if cursor:
        try:
            at, vid = decode_cursor(cursor, (str, str))
            after = (datetime.fromisoformat(at), uuid.UUID(vid))
        except (SearchError, ValueError):
            raise Problem(422, "cursor: not a cursor this API issued") from None
    page = await run_in_threadpool(_video_page, status, limit, after)
    return Response(page.model_dump_json(), media_type="application/json")


def _video_page(
    status: str | None, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> VideoPage:
    query = select(Video).where(Video.status != "deleted")
    if status:
        query = query.where(Video.status == status)
    if after is not None:
        query = query.where(
            (Video.created_at < after[0]) | ((Video.created_at == after[0]) & (Video.id < after[1]))
        )
    with get_sessionmaker()() as session:
        rows = list(
            session.scalars(
                query.order_by(Video.created_at.desc(), Video.id.desc()).limit(limit + 1)
            )
        )
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = encode_cursor([last.created_at.isoformat(), str(last.id)])
    return VideoPage(items=[video_out(v) for v in rows[:limit]], next_cursor=nxt)


@router.get(
    "/videos/{video_id}", response_model=VideoOut, summary="Status, progress, metadata, error"
)
async def get_video(video_id: uuid.UUID, _: Principal = Depends(require_read)) -> Response:
    video = await run_in_threadpool(_video_by_id, video_id)
    return Response(video.model_dump_json(), media_type="application/json")


def _video_by_id(video_id: uuid.UUID) -> VideoOut:
    with get_sessionmaker()() as session:
        video = _get_video(session, video_id)
        model = session.get(Model, video.model_id) if video.model_id else None
        return video_out(video, model.name if model else None)


@router.delete(
    "/videos/{video_id}", status_code=204, summary="Delete a video, its index and its files"
)
def delete_video(
    video_id: uuid.UUID,
    request: Request,
    principal: Principal = Depends(require_admin),
    session: Session = Depends(get_session),
) -> Response:
    video = session.get(Video, video_id)
    if video is not None:
        media_file = video.media_file
        session.execute(delete(Video).where(Video.id == video_id))  # cascades to the index
        audit.record(session, principal, "delete", video_id=video_id, request=request, commit=False)
        session.commit()
        storage.remove_video_files(video_id, media_file)
    return Response(status_code=204)


@router.post(
    "/videos/{video_id}/reindex",
    status_code=202,
    response_model=VideoOut,
    summary="Index again, optionally with another model or options",
    responses={409: {"description": "Being indexed now, or its source file was removed"}},
)
def reindex_video(
    video_id: uuid.UUID,
    request: Request,
    options: Annotated[Reindex | None, Body()] = None,
    principal: Principal = Depends(require_admin),
    session: Session = Depends(get_session),
) -> VideoOut:
    video = _get_video(session, video_id)
    if video.status == "processing":
        raise Problem(409, "the video is being indexed now; retry when it is done")
    if not video.media_file or storage.inside_media(video.media_file) is None:
        raise Problem(
            409,
            "the source file was removed after indexing (VCAT_DELETE_SOURCE_AFTER_INDEX); "
            "upload the same file again to restore it",
        )
    opts = options or Reindex()
    merged = dict(video.options)
    # only the options given: an empty body keeps the stored ones (top_k included)
    given = {"window": opts.window, "stride": opts.stride, "top_k": opts.top_k}
    merged.update({k: v for k, v in given.items() if v is not None})
    video.options = merged
    if opts.model:
        video.model_name = opts.model
    # A reindex is a new request: its attempts count from zero (a video reindexed a few times,
    # or one that was dead-lettered, must not be refused as having used them all).
    video.status, video.progress, video.error, video.attempts = "queued", 0.0, None, 0
    video.updated_at = datetime.now().astimezone()
    audit.record(
        session,
        principal,
        "reindex",
        video_id=video_id,
        request=request,
        commit=False,
        detail={"model": video.model_name},
    )
    session.commit()
    _enqueue(video)
    return video_out(video)


@router.get("/videos/{video_id}/clips", response_model=ClipPage, summary="Clips with top-k")
def list_clips(
    video_id: uuid.UUID,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    _: Principal = Depends(require_read),
    session: Session = Depends(get_session),
) -> ClipPage:
    _get_video(session, video_id)
    after = -1
    if cursor:
        try:
            (after,) = decode_cursor(cursor, (int,))
        except SearchError as exc:
            raise Problem(422, str(exc)) from None
    rows = session.execute(
        text("""SELECT c.idx, c.start, c."end", t.clip_idx IS NOT NULL AS has_thumbnail,
                       coalesce(json_agg(json_build_array(a.name, s.score) ORDER BY s.rank)
                                FILTER (WHERE a.id IS NOT NULL), '[]') AS scores
                FROM clips c
                LEFT JOIN thumbnails t ON t.video_id = c.video_id AND t.clip_idx = c.idx
                LEFT JOIN clip_scores s ON s.video_id = c.video_id AND s.clip_idx = c.idx
                LEFT JOIN actions a ON a.id = s.action_id
                WHERE c.video_id = :v AND c.idx > :after
                GROUP BY c.video_id, c.idx, t.clip_idx ORDER BY c.idx LIMIT :limit"""),
        {"v": video_id, "after": after, "limit": limit + 1},
    ).all()
    items = [
        ClipOut(
            idx=r.idx,
            start=r.start,
            end=r.end,
            thumbnail_url=(
                f"/videos/{video_id}/clips/{r.idx}/thumbnail" if r.has_thumbnail else None
            ),
            scores=[ScoreOut(action=n, score=s) for n, s in r.scores],
        )
        for r in rows[:limit]
    ]
    nxt = encode_cursor([rows[limit - 1].idx]) if len(rows) > limit else None
    return ClipPage(items=items, next_cursor=nxt)


@router.get(
    "/videos/{video_id}/segments",
    response_model=TimelineOut,
    summary="The timeline: runs of clips per action scoring >= min_score, in time order",
)
def video_segments(
    video_id: uuid.UUID,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    _: Principal = Depends(require_read),
    session: Session = Depends(get_session),
) -> TimelineOut:
    _get_video(session, video_id)
    threshold = get_settings().default_min_score if min_score is None else min_score
    # A whole timeline (every action, any threshold, up to 100,000 rows) is too big for the
    # event loop and the searches' few connections: it runs in this request's thread.
    segments, _next = asyncio.run(
        find_segments(
            SessionReader(session),
            None,
            min_score=threshold,
            video_id=video_id,
            sort="time",
            limit=100_000,
        )
    )
    segments.sort(key=lambda s: (s.start, -s.max_score))
    return TimelineOut(
        video_id=video_id, min_score=threshold, items=[segment_out(s) for s in segments]
    )


def segment_out(s: Any) -> SegmentOut:
    base = f"/videos/{s.video_id}"
    return SegmentOut(
        video_id=s.video_id,
        action=s.action,
        actions=s.actions,
        model=s.model,
        start=s.start,
        end=s.end,
        first_clip=s.first_clip,
        last_clip=s.last_clip,
        clips=s.clips,
        max_score=round(s.max_score, 6),
        mean_score=round(s.mean_score, 6),
        media_url=f"{base}/media#t={s.start:g},{s.end:g}",
        thumbnail_url=f"{base}/clips/{s.first_clip}/thumbnail" if s.has_thumbnail else None,
    )


def _byte_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ``(first, last)`` ranges of a Range header; ``None`` when it is to be
    ignored (not ``bytes``, or malformed: RFC 9110 14.2), ``[]`` when none is satisfiable."""
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[tuple[int, int]] = []
    seen = 0
    for item in spec.split(","):
        item = item.strip()
        if not item:  # empty list elements are allowed
            continue
        first, dash, last = item.partition("-")
        first, last = first.strip(), last.strip()
        if not dash or not (first or last):
            return None
        if any(v and not (v.isascii() and v.isdigit()) for v in (first, last)):
            return None
        seen += 1
        if first:
            start = int(first)
            if last and int(last) < start:
                return None  # bytes=5-2 is invalid, not unsatisfiable
            if start < size:
                ranges.append((start, min(int(last), size - 1) if last else size - 1))
        elif int(last) > 0 and size > 0:  # suffix: the last N bytes; bytes=-0 selects nothing
            ranges.append((max(size - int(last), 0), size - 1))
    return ranges if seen else None


def _check_range(request: Request, size: int, response: FileResponse) -> None:
    """Starlette's FileResponse answers bad ranges itself, in text/plain, and 400s the ones
    RFC 9110 says to ignore: drop those, 416 (problem+json) the unsatisfiable ones, and hand it
    only the satisfiable ranges (a set with some unsatisfiable ones is still served). A Range
    whose If-Range names another version of the file is dropped first: the answer is the file."""
    header = request.headers.get("range")
    if header is None:
        return
    if_range = request.headers.get("if-range")
    if if_range is not None and (
        if_range.startswith("W/")
        or if_range not in (response.headers["etag"], response.headers["last-modified"])
    ):
        ranges = None
    else:
        ranges = _byte_ranges(header, size)
    if ranges == []:
        raise Problem(
            416,
            f"Range {header!r} selects no byte of this {size}-byte file",
            headers={"Content-Range": f"bytes */{size}"},
        )
    raw = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"range"]
    if ranges is not None:
        value = "bytes=" + ",".join(f"{a}-{b}" for a, b in ranges)
        raw.append((b"range", value.encode("latin-1")))
    request.scope["headers"] = raw


@router.head("/videos/{video_id}/media", include_in_schema=False)
@router.get(
    "/videos/{video_id}/media",
    summary="The video file; supports HTTP Range so players can seek (HEAD gives the size)",
    response_class=FileResponse,
    responses={206: {"description": "Partial content"}, 416: {"description": "Bad range"}},
)
def video_media(
    video_id: uuid.UUID,
    request: Request,
    principal: Principal = Depends(require_read),
    session: Session = Depends(get_session),
) -> FileResponse:
    video = _get_video(session, video_id)
    path = storage.inside_media(video.media_file)
    if path is None:
        raise Problem(404, "the source file of this video was removed")
    stat = path.stat()
    response = FileResponse(
        path, media_type=storage.media_type(video.container), stat_result=stat
    )  # its ETag and Last-Modified, for If-Range
    _check_range(request, stat.st_size, response)
    audit.record(
        session,
        principal,
        "view_media",
        video_id=video_id,
        request=request,
        detail={"range": request.headers.get("range")},
        durable=False,
    )
    return response


@router.head("/videos/{video_id}/clips/{n}/thumbnail", include_in_schema=False)
@router.get(
    "/videos/{video_id}/clips/{n}/thumbnail",
    summary="A clip's thumbnail image (JPEG)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def clip_thumbnail(
    video_id: uuid.UUID,
    n: Annotated[int, Path(ge=0, le=10_000_000)],
    request: Request,
    _: Principal = Depends(require_read),
    session: Session = Depends(get_session),
) -> Response:
    row = session.execute(
        text("""SELECT t.jpeg FROM clips c
                LEFT JOIN thumbnails t ON t.video_id = c.video_id AND t.clip_idx = c.idx
                WHERE c.video_id = :v AND c.idx = :n"""),
        {"v": video_id, "n": n},
    ).one_or_none()
    if row is None:
        raise Problem(404, f"video {video_id} has no clip {n}")
    if row.jpeg is None:
        raise Problem(404, f"clip {n} has no thumbnail")
    # A reindex replaces the image under the same URL: the ETag, not a max-age, lets clients
    # cache it.
    etag = f'"{hashlib.blake2b(row.jpeg, digest_size=12).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    wanted = request.headers.get("if-none-match") or ""
    if etag in wanted or wanted.strip() == "*":
        return Response(status_code=304, headers=headers)
    return Response(row.jpeg, media_type="image/jpeg", headers=headers)
