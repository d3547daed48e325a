"""The FastAPI application: ``uvicorn service.app:app``. Never imports torch."""

from __future__ import annotations

from fastapi import FastAPI

from service import health
from service.problems import install_problem_handlers
from vcat import __version__


def create_app() -> FastAPI:
    app = FastAPI(
        title="vcat",
        version=__version__,
        description="Self-hosted video catalogue: upload videos, search them by action.",
    )
    install_problem_handlers(app)
    app.include_router(health.router)
    return app


app = create_app()
