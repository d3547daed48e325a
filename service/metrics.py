"""Prometheus metrics: request counts and latencies per route, queue depth, videos by status."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, FastAPI, Request, Response
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


def install_metrics(app: FastAPI) -> None:
    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        return response


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
