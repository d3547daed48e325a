"""RFC 9457 problem details: every error the API returns is ``application/problem+json``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)


class Problem(Exception):
    """Raise from any endpoint to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.headers = headers
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def validation_detail(errors: Sequence[Any]) -> str:
    """One line for the first of pydantic's errors: ``field.path: message``."""
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", "invalid value"))
    return f"{where}: {msg}" if where else msg


def first_line(exc: Exception) -> str:
    """The driver's message (SQLAlchemy wraps it in ``orig``), first line; may be empty."""
    return (str(getattr(exc, "orig", None) or exc).splitlines() or [""])[0]


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.detail, title=exc.title, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return problem_response(422, validation_detail(errors), errors=errors)

    # The search path raises psycopg's errors as they are (service.read_db), the rest
    # SQLAlchemy's wrapping of the same.
    @app.exception_handler(DataError)
    @app.exception_handler(psycopg.DataError)
    async def _data(_: Request, exc: Exception) -> JSONResponse:
        # Input Postgres cannot hold (a NUL character, an out-of-range number) is the client's
        # error; nothing was written (the session rolls back).
        reason = first_line(exc) or "invalid value"
        return problem_response(422, f"the request holds a value that cannot be stored: {reason}")

    @app.exception_handler(OperationalError)
    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        # Postgres restarting or unreachable: the client should retry, not report a bug.
        log.warning("database error: %s", first_line(exc))
        return problem_response(
            503, "the database is unavailable; try again shortly", headers={"Retry-After": "5"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(500, "internal error; see the server log")
