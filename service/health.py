"""Liveness (the process answers) and readiness (its database and broker answer)."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.db import get_engine
from service.problems import problem_response
from vcat.broker import describe
from vcat.settings import get_settings

router = APIRouter(tags=["health"])


@router.get("/livez", summary="The process is alive")
def livez() -> dict[str, str]:
    return {"status": "ok"}


def check_database() -> str | None:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, RuntimeError) as exc:
        return f"database unreachable: {str(exc).splitlines()[0]}"
    return None


def check_broker() -> str | None:
    url = get_settings().broker_url
    if not url:
        return "broker unreachable: VCAT_BROKER_URL is not set"
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.close()
    except (redis.RedisError, ValueError, OSError) as exc:
        return f"broker unreachable ({describe(url)}): {exc}"
    return None


@router.get(
    "/readyz",
    summary="Database and broker are reachable",
    responses={503: {"description": "Not ready; `detail` says why"}},
)
def readyz() -> JSONResponse:
    reasons = [r for r in (check_database(), check_broker()) if r]
    if reasons:
        return problem_response(503, "; ".join(reasons), title="Not Ready", checks=reasons)
    return JSONResponse({"status": "ready", "database": "ok", "broker": "ok"})
