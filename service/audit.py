"""The audit log: who (API key id) did what (upload, search, view_media, delete, ...) and when."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from fastapi import Request
from psycopg.types.json import Jsonb
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.auth import Principal
from service.db import driver_cursor, get_engine
from service.models import AuditEntry
from service.problems import first_line
from vcat.settings import get_settings

FLUSH_SECONDS = 0.25
# The batch is written with psycopg's COPY; a value it cannot encode raises TypeError/ValueError
# (SQLAlchemy's INSERT wrapped those in its own errors).
WRITE_ERRORS = (SQLAlchemyError, psycopg.Error, TypeError, ValueError)
MAX_PENDING = 50_000  # entries kept while the database is unreachable; the oldest go first
log = logging.getLogger(__name__)


class _Pending:
    """Entries for frequent reads (searches, media views), written in batches by one thread.

    A search then costs no database write of its own; the entries reach the table within
    FLUSH_SECONDS, each stamped with the time of the request.
    """

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # flush() returns only once an ongoing write is done
        self._thread: threading.Thread | None = None

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(row)
            if len(self._rows) > MAX_PENDING:
                del self._rows[: len(self._rows) - MAX_PENDING]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except WRITE_ERRORS as exc:  # kept for the next try; never fails a request
                log.warning("audit entries not written yet: %s", first_line(exc))

    def flush(self) -> int:
        with self._writing:
            return self._write()

    def _write(self) -> int:
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        try:
            _copy(rows)
        except WRITE_ERRORS:
            with self._lock:
                self._rows[:0] = rows[-MAX_PENDING:]
            raise
        return len(rows)


def _copy(rows: list[dict[str, Any]]) -> None:
    # COPY rather than INSERT: a fraction of the CPU, both here (this thread shares the GIL
    # with the searches it records) and in Postgres.
    with get_engine().begin() as conn, driver_cursor(conn) as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        with cursor.copy(_COPY) as copy:
            for r in rows:
                copy.write_row(_values(r))


def _values(row: dict[str, Any]) -> list[Any]:
    """An entry as psycopg writes it: in _COLUMNS order, ``detail`` as JSONB."""
    return [Jsonb(row[c]) if c == "detail" else row[c] for c in _COLUMNS]


_COLUMNS = ("at", "key_id", "action", "video_id", "detail", "client")
_COPY = f"COPY audit_log ({', '.join(_COLUMNS)}) FROM STDIN"
_INSERT = (
    f"INSERT INTO audit_log ({', '.join(_COLUMNS)}) VALUES ({', '.join('%s' for _ in _COLUMNS)})"
)
_pending = _Pending()


def flush() -> int:
    """Write the buffered entries now (shutdown, tests); returns how many."""
    return _pending.flush()


def record(
    session: Session | None,
    principal: Principal,
    action: str,
    *,
    video_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
    request: Request | None = None,
    commit: bool = True,
    durable: bool = True,
) -> None:
    """Append one entry (no-op with VCAT_AUDIT_ENABLED=false).

    ``durable=False`` (searches, media views: frequent reads) queues the entry for the batch
    writer instead of writing it in ``session``; a crash may lose the last fraction of a second
    of such entries, never others.
    """
    if not get_settings().audit_enabled:
        return
    row = {
        "at": datetime.now(UTC),
        "key_id": principal.key_id,
        "action": action,
        "video_id": video_id,
        "detail": detail or {},
        "client": request.client.host if request is not None and request.client else None,
    }
    if not durable or session is None:
        _pending.add(row)
        return
    # psycopg's own INSERT, in the session's transaction: an ORM add costs several times as much
    # CPU, and every upload writes one of these.
    with driver_cursor(session) as cursor:
        cursor.execute(_INSERT, _values(row))
    if commit:
        session.commit()


def entries(
    session: Session,
    *,
    since: datetime | None = None,
    action: str | None = None,
    key_id: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Newest first."""
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if action:
        query = query.where(AuditEntry.action == action)
    if key_id:
        query = query.where(AuditEntry.key_id == key_id)
    return list(session.scalars(query))


def prune(session: Session, before: datetime) -> int:
    """Drop entries older than ``before``; returns how many. Commits."""
    result = session.execute(delete(AuditEntry).where(AuditEntry.at < before))
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]
