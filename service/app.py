"""The FastAPI application: ``uvicorn service.app:app``. Never imports torch."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import audit, health, metrics, read_db
from service.problems import first_line, install_problem_handlers
from service.routes import catalog, search, videos
from vcat import __version__

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    read_db.close_pool()
    try:
        audit.flush()  # batched read entries (searches, media views) are not lost on shutdown
    except audit.WRITE_ERRORS as exc:
        log.error("audit entries lost at shutdown: %s", first_line(exc))


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="vcat",
        version=__version__,
        description="Self-hosted video catalogue: upload videos, search them by action.",
    )
    install_problem_handlers(app)
    metrics.install_metrics(app)
    # URL ingest goes through this callable; tests swap in one with a fake resolver/transport.
    app.state.url_fetcher = videos.default_fetcher
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(videos.router)
    app.include_router(search.router)
    app.include_router(catalog.router)
    return app


app = create_app()
