"""The audit log: who (API key id) did what (upload, search, view_media, delete, ...) and when."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import Request
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from service.auth import Principal
from service.models import AuditEntry
from vcat.settings import get_settings


def record(
    session: Session,
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

    ``durable=False`` (searches, media views: frequent reads) commits without waiting for the
    WAL flush; a crash may lose the last fraction of a second of such entries, never others.
    """
    if not get_settings().audit_enabled:
        return
    client = request.client.host if request is not None and request.client else None
    session.add(
        AuditEntry(
            key_id=principal.key_id,
            action=action,
            video_id=video_id,
            detail=detail or {},
            client=client,
        )
    )
    if commit:
        if not durable:
            session.execute(text("SET LOCAL synchronous_commit TO OFF"))
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
