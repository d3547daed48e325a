"""API keys: ``vcat_<id>_<secret>``, stored as a sha256 digest, sent as Bearer or X-API-Key.

While no active key exists the API is open (the embedded default binds 127.0.0.1 only); once one
exists every endpoint except /livez and /readyz needs a key. Scopes: ``read`` (GET, search) and
``admin`` (also upload, reindex, delete).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.db import get_sessionmaker
from service.models import SCOPES, ApiKey
from service.problems import Problem
from service.ttl_cache import TtlCache

KEY_PREFIX = "vcat_"
_TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is refreshed at most this often
# Lookups are cached briefly per process (two queries less per request); keys created or revoked
# in another process (the CLI) take effect within this many seconds.
CACHE_SECONDS = 2.0
_cache: TtlCache[object] = TtlCache(CACHE_SECONDS)


def clear_cache() -> None:
    _cache.clear()


@dataclass(frozen=True)
class Principal:
    key_id: str | None  # None: the API is open (no keys exist)
    scope: str


class KeyError_(ValueError):
    """Bad arguments to key management (unknown scope, empty name)."""


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, scope: str = "read") -> tuple[ApiKey, str]:
    """A new key: (row, the plaintext key, shown once). Commits."""
    if scope not in SCOPES:
        raise KeyError_(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if not name.strip():
        raise KeyError_("a key needs a non-empty name")
    key_id = secrets.token_hex(4)
    plaintext = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
    row = ApiKey(id=key_id, name=name.strip(), scope=scope, secret_hash=_digest(plaintext))
    session.add(row)
    session.commit()
    clear_cache()
    return row, plaintext


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke a key by id; False if there is no such active key. Commits."""
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    session.commit()
    clear_cache()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key", "").strip() or None


def _keys_in_force(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(ApiKey.revoked_at.is_(None)))))


def _lookup(session: Session, key: str) -> Principal | None:
    """The active key ``key`` is, or None (unknown, revoked, wrong secret)."""
    if not key.startswith(KEY_PREFIX):
        return None
    row = session.get(ApiKey, key.removeprefix(KEY_PREFIX).split("_", 1)[0][:16])
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _digest(key)):
        return None
    now = datetime.now(UTC)
    if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
        row.last_used_at = now
        session.commit()
    return Principal(row.id, row.scope)


def _missing_key() -> Problem:
    return Problem(
        401,
        "an API key is required (Authorization: Bearer or X-API-Key)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def authenticate(session: Session, key: str | None) -> Principal:
    """The caller behind ``key``; Problem 401 when keys exist and this is not an active one."""
    if not _cache.get("in_force", lambda: _keys_in_force(session)):
        return Principal(None, "admin")  # no keys: open (any header is ignored)
    if key is None:
        raise _missing_key()
    # cached by digest, so the plaintext key is never kept in memory
    principal = _cache.get("key:" + _digest(key), lambda: _lookup(session, key))
    if not isinstance(principal, Principal):
        raise Problem(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    return principal


def _from_cache(key: str | None) -> Principal | None:
    """``authenticate`` answered from the cache alone, or None when that needs the database."""
    in_force = _cache.peek("in_force")
    if in_force is False:
        return Principal(None, "admin")
    if in_force is None:
        return None
    if key is None:
        raise _missing_key()
    principal = _cache.peek("key:" + _digest(key))
    return principal if isinstance(principal, Principal) else None


def _authenticate_fresh(key: str | None) -> Principal:
    with get_sessionmaker()() as session:
        return authenticate(session, key)


async def require_read(request: Request) -> Principal:
    """The request's principal. Async: a cached answer costs no thread hop and no session."""
    key = presented_key(request)
    principal = _from_cache(key)
    if principal is None:
        principal = await run_in_threadpool(_authenticate_fresh, key)
    return principal


async def require_admin(request: Request) -> Principal:
    principal = await require_read(request)
    if principal.scope != "admin":
        raise Problem(403, "this needs an admin key; the key given is read-only")
    return principal
