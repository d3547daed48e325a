"""Prometheus metrics: request counts and latencies per route, queue depth, videos by status."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import Principal, require_read
from service.db import get_session
from service.models import VIDEO_STATUSES
from service.queue import queue_depth

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "vcat_http_requests", "HTTP requests", ["method", "route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "vcat_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("vcat_index_queue_depth", "Indexing tasks waiting", registry=REGISTRY)
VIDEOS = Gauge("vcat_videos", "Videos by status", ["status"], registry=REGISTRY)

router = APIRouter(tags=["health"])


class _Measure:
    """Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a task group per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # the router wrote the matched route into this same scope dict
            path = getattr(scope.get("route"), "path", "unmatched")
            LATENCY.labels(scope["method"], path).observe(time.perf_counter() - started)
            REQUESTS.labels(scope["method"], path, str(status)).inc()


def install_metrics(app: FastAPI) -> None:
    app.add_middleware(_Measure)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(
    _: Principal = Depends(require_read), session: Session = Depends(get_session)
) -> Response:
    depth = queue_depth()
    if depth is not None:
        QUEUE_DEPTH.set(depth)
    try:
        counts: dict[str, int] = dict(
            session.execute(text("SELECT status, count(*) FROM videos GROUP BY status")).all()
        )
        for status in VIDEO_STATUSES:
            VIDEOS.labels(status).set(counts.get(status, 0))
    except SQLAlchemyError:
        pass  # metrics must answer even when the database does not
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
