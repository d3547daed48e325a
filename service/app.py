"""The FastAPI application: ``uvicorn service.app:app``. Never imports torch."""

from __future__ import annotations

from fastapi import FastAPI

from service import health, metrics
from service.problems import install_problem_handlers
from service.routes import catalog, search, videos
from vcat import __version__


def create_app() -> FastAPI:
    app = FastAPI(
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
